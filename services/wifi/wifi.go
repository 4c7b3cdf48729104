package wifi

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pc2/pc2/services/backoff"
)

// Defaults of Options.
const (
	DefaultPollInterval   = 5 * time.Second
	DefaultConnectTimeout = 20 * time.Second
	DefaultHardwareWait   = 30 * time.Second
	defaultBackoffInitial = time.Second
	defaultBackoffMax     = time.Minute
)

const (
	// connectPoll is how often Run looks at the association while joining.
	connectPoll = time.Second
	// scanTimeout bounds the scan after a failed attempt.
	scanTimeout = 15 * time.Second
	// stableAfter: an association that lasted this long resets the
	// backoff; a shorter one counts as a failed attempt, so a flapping
	// link is not rejoined in a tight loop.
	stableAfter = time.Minute
	// maxLinkErrors: this many failed reads of the association in a row
	// count as a lost connection (the interface may have gone away).
	maxLinkErrors = 3
)

// RaspberryPiModules are the kernel modules of the Raspberry Pi's Wi-Fi
// driver in gokrazy's kernel.rpi (brcmfmac, its helper and its vendor
// modules), in dependency order, relative to /lib/modules/<release>/.
var RaspberryPiModules = []string{
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmutil/brcmutil.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/wcc/brcmfmac-wcc.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/cyw/brcmfmac-cyw.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/bca/brcmfmac-bca.ko",
}

// Options are what the caller injects besides the Config. The zero value
// uses the kernel and the defaults above.
type Options struct {
	// Logger receives state changes and errors; nil discards them.
	Logger *slog.Logger
	// State, if set, is kept up to date for a status page.
	State *State
	// Interface is the interface to use; empty means wlan0, else the
	// station interface with the lowest index.
	Interface string
	// Backoff spaces out failed attempts. Zero Initial and Max mean 1 s
	// and 1 min here; Jitter and Rand as in package backoff.
	Backoff backoff.Policy
	// PollInterval is how often the association is checked while
	// connected (default DefaultPollInterval).
	PollInterval time.Duration
	// ConnectTimeout is how long one attempt may take to associate
	// (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// HardwareWait is how long Run waits at start for a wireless
	// interface to appear, e.g. while the driver loads its firmware
	// (default DefaultHardwareWait).
	HardwareWait time.Duration
	// Modules are kernel modules the default Open loads before it looks
	// for hardware, relative to /lib/modules/<release>/; those missing
	// from the image are skipped. nil means RaspberryPiModules; an empty
	// slice loads none.
	Modules []string
	// Open returns the Radio; nil opens the kernel's nl80211. It returns
	// an error wrapping ErrNoNL80211 when there is no Wi-Fi support.
	Open func() (Radio, error)
	// Others are more networks, tried in this order after Run's when an
	// attempt to join one fails (a second access point, the phone's
	// hotspot). After a whole round has failed Run waits out the backoff
	// and starts again with its own network, the preferred one.
	Others []Config
}

// Phase is where Run is.
type Phase string

const (
	PhaseStarting   Phase = "starting"    // looking for hardware
	PhaseConnecting Phase = "connecting"  // an attempt is under way
	PhaseConnected  Phase = "connected"   // associated (and, for WPA2, keys installed)
	PhaseRetrying   Phase = "retrying"    // waiting for the next attempt; see LastError
	PhaseNoHardware Phase = "no-hardware" // Run returned: nothing to join with
	PhaseStopped    Phase = "stopped"     // Run returned because its context ended
)

// Status is a snapshot of a Run, for a status page.
type Status struct {
	Phase        Phase     `json:"phase"`
	Detail       string    `json:"detail,omitempty"` // e.g. why there is no hardware
	Interface    string    `json:"interface,omitempty"`
	SSID         string    `json:"ssid,omitempty"`  // configured network
	BSSID        string    `json:"bssid,omitempty"` // access point, while connected
	FrequencyMHz int       `json:"frequency_mhz,omitempty"`
	SignalDBm    int       `json:"signal_dbm,omitempty"`
	Since        time.Time `json:"since,omitzero"`     // when Phase last changed
	Failures     int       `json:"failures,omitempty"` // failed attempts in a row
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"` // while retrying
}

// State holds the Status of a Run. The zero value is ready to use; Run
// writes it, Status may be called from any goroutine.
type State struct {
	mu sync.Mutex
	st Status
}

// Status returns the current status.
func (s *State) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	if st.Phase == "" {
		st.Phase = PhaseStarting
	}
	return st
}

func (s *State) update(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
}

// setPhase changes the phase and clears what belongs to the connection.
func (s *State) setPhase(p Phase, f func(*Status)) {
	s.update(func(st *Status) {
		if st.Phase != p {
			st.Since = time.Now()
		}
		st.Phase = p
		st.BSSID, st.FrequencyMHz, st.SignalDBm, st.NextAttempt = "", 0, 0, time.Time{}
		if f != nil {
			f(st)
		}
	})
}

// Run joins the network of cfg (or one of opts.Others) and keeps it
// joined until ctx ends, then returns nil. Without Wi-Fi hardware it logs why and returns nil at once
// (State: PhaseNoHardware). It returns an error only for an invalid cfg or
// when the kernel's nl80211 cannot be opened for another reason.
func Run(ctx context.Context, cfg Config, opts Options) error {
	r := &runner{
		log:            opts.Logger,
		state:          opts.State,
		ifname:         opts.Interface,
		policy:         opts.Backoff,
		poll:           cmp.Or(opts.PollInterval, DefaultPollInterval),
		connectTimeout: cmp.Or(opts.ConnectTimeout, DefaultConnectTimeout),
		hardwareWait:   cmp.Or(opts.HardwareWait, DefaultHardwareWait),
	}
	for _, c := range append([]Config{cfg}, opts.Others...) {
		if err := c.Validate(); err != nil {
			return err
		}
		if slices.ContainsFunc(r.nets, func(n network) bool { return n.SSID == c.SSID }) {
			return fmt.Errorf("wifi: network %q listed twice", c.SSID)
		}
		pmk, err := c.PMK()
		if err != nil {
			return fmt.Errorf("wifi: derive the key of %q: %w", c.SSID, err)
		}
		r.nets = append(r.nets, network{Config: c, pmk: pmk})
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.state == nil {
		r.state = new(State)
	}
	r.policy.Initial = cmp.Or(r.policy.Initial, defaultBackoffInitial)
	r.policy.Max = cmp.Or(r.policy.Max, defaultBackoffMax)
	open := opts.Open
	if open == nil {
		mods := opts.Modules
		if mods == nil {
			mods = RaspberryPiModules
		}
		open = func() (Radio, error) { return openKernel(mods, r.log) }
	}

	r.state.setPhase(PhaseStarting, func(st *Status) { *st = Status{Phase: PhaseStarting, SSID: cfg.SSID, Since: st.Since} })
	radio, err := open()
	if errors.Is(err, ErrNoNL80211) {
		r.noHardware("the kernel has no nl80211 (no Wi-Fi support)")
		return nil
	}
	if err != nil {
		return err
	}
	defer radio.Close()

	ifc, err := r.waitForInterface(ctx, radio)
	switch {
	case ctx.Err() != nil:
		r.state.setPhase(PhaseStopped, nil)
		return nil
	case errors.Is(err, errNoInterface):
		r.noHardware(fmt.Sprintf("no wireless interface appeared within %v (no Wi-Fi chip, or its driver or firmware is missing)", r.hardwareWait))
		return nil
	case err != nil:
		return err
	}
	r.log.Info("wifi: using interface", "interface", ifc.Name, "network", cfg, "others", len(opts.Others))
	r.loop(ctx, radio)
	r.state.setPhase(PhaseStopped, nil)
	return nil
}

type runner struct {
	// nets are the networks in order of preference, cur the one being
	// joined or joined.
	nets           []network
	cur            int
	log            *slog.Logger
	state          *State
	ifname         string
	policy         backoff.Policy
	poll           time.Duration
	connectTimeout time.Duration
	hardwareWait   time.Duration
}

// network is a Config with its key.
type network struct {
	Config
	pmk []byte
}

// net is the network being joined or joined.
func (r *runner) net() network { return r.nets[r.cur] }

var errNoInterface = errors.New("wifi: no wireless station interface")

func (r *runner) noHardware(why string) {
	r.log.Warn("wifi: no Wi-Fi hardware, Wi-Fi stays off", "reason", why, "ssid", r.net().SSID)
	r.state.setPhase(PhaseNoHardware, func(st *Status) { st.Detail = why })
}

// waitForInterface polls for a usable interface for up to r.hardwareWait.
func (r *runner) waitForInterface(ctx context.Context, radio Radio) (Interface, error) {
	deadline := time.NewTimer(r.hardwareWait)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		ifaces, err := radio.Interfaces()
		if err != nil {
			return Interface{}, fmt.Errorf("wifi: list interfaces: %w", err)
		}
		if ifc, err := pickInterface(ifaces, r.ifname); err == nil {
			return ifc, nil
		}
		select {
		case <-ctx.Done():
			return Interface{}, ctx.Err()
		case <-deadline.C:
			return Interface{}, errNoInterface
		case <-tick.C:
		}
	}
}

// pickInterface chooses among the station interfaces: the one named name,
// else wlan0, else the one with the lowest index.
func pickInterface(ifaces []Interface, name string) (Interface, error) {
	var st []Interface
	for _, i := range ifaces {
		if i.Station && i.Index > 0 && i.Name != "" {
			st = append(st, i)
		}
	}
	if name != "" {
		for _, i := range st {
			if i.Name == name {
				return i, nil
			}
		}
		return Interface{}, fmt.Errorf("%w named %s", errNoInterface, name)
	}
	if len(st) == 0 {
		return Interface{}, errNoInterface
	}
	for _, i := range st {
		if i.Name == "wlan0" {
			return i, nil
		}
	}
	return slices.MinFunc(st, func(a, b Interface) int { return cmp.Compare(a.Index, b.Index) }), nil
}

// loop joins, watches and rejoins until ctx ends.
func (r *runner) loop(ctx context.Context, radio Radio) {
	failures := 0
	for {
		ifc, l, err := r.join(ctx, radio, failures+1)
		if ctx.Err() != nil {
			return
		}
		msg := "wifi: could not join network"
		if err == nil {
			start := time.Now()
			r.connected(ifc, l, failures)
			err = r.watch(ctx, radio, ifc, l)
			if ctx.Err() != nil {
				return
			}
			held := time.Since(start).Round(time.Second)
			err = fmt.Errorf("connection to %s lost after %v: %w", l.BSSID, held, err)
			if held >= stableAfter {
				r.log.Warn("wifi: connection lost, rejoining", "interface", ifc.Name, "ssid", r.net().SSID, "err", err)
				r.state.update(func(st *Status) { st.LastError, st.LastErrorAt = err.Error(), time.Now() })
				failures, r.cur = 0, 0
				continue
			}
			// Short-lived: count it as a failed attempt, so that a
			// flapping link backs off.
			msg = "wifi: connection lost soon after joining"
		}
		if r.cur+1 < len(r.nets) {
			// The next network at once; the backoff is for whole rounds.
			r.log.Warn(msg+"; trying the next one", "interface", ifc.Name, "ssid", r.net().SSID, "next", r.nets[r.cur+1].SSID, "err", err)
			r.state.update(func(st *Status) { st.LastError, st.LastErrorAt = err.Error(), time.Now() })
			r.cur++
			continue
		}
		failed := r.net().SSID
		r.cur = 0
		failures++
		wait := r.policy.Wait(failures)
		r.log.Error(msg, "interface", ifc.Name, "ssid", failed, "attempt", failures, "retry_in", wait.Round(100*time.Millisecond), "err", err)
		now := time.Now()
		r.state.setPhase(PhaseRetrying, func(st *Status) {
			st.Failures, st.LastError, st.LastErrorAt, st.NextAttempt = failures, err.Error(), now, now.Add(wait)
		})
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

func (r *runner) connected(ifc Interface, l Link, failures int) {
	r.log.Info("wifi: connected", "interface", ifc.Name, "ssid", r.net().SSID, "bssid", l.BSSID.String(), "frequency_mhz", l.FrequencyMHz, "signal_dbm", l.SignalDBm)
	r.state.setPhase(PhaseConnected, func(st *Status) {
		st.SSID, st.Interface, st.Failures, st.LastError, st.LastErrorAt = r.net().SSID, ifc.Name, failures, "", time.Time{}
		st.BSSID, st.FrequencyMHz, st.SignalDBm = l.BSSID.String(), l.FrequencyMHz, l.SignalDBm
	})
}

// ours reports whether l is an association with the network being
// joined. An SSID the driver did not report counts as ours.
func (r *runner) ours(l Link) bool {
	return l.Connected && (l.SSID == "" || l.SSID == r.net().SSID)
}

// join makes one attempt: it returns once the interface is associated
// with the network, or with the reason it is not.
func (r *runner) join(ctx context.Context, radio Radio, attempt int) (Interface, Link, error) {
	ifaces, err := radio.Interfaces()
	if err != nil {
		return Interface{}, Link{}, fmt.Errorf("list interfaces: %w", err)
	}
	// Looked up on every attempt: a driver restart replaces the interface.
	ifc, err := pickInterface(ifaces, r.ifname)
	if err != nil {
		return Interface{}, Link{}, err
	}
	r.state.setPhase(PhaseConnecting, func(st *Status) { st.Interface, st.SSID = ifc.Name, r.net().SSID })
	if err := radio.SetUp(ifc); err != nil {
		return ifc, Link{}, fmt.Errorf("set %s up: %w", ifc.Name, err)
	}
	if l, err := radio.Link(ifc); err == nil && l.Connected {
		if i := slices.IndexFunc(r.nets, func(n network) bool { return n.SSID == l.SSID }); i >= 0 || l.SSID == "" {
			if i >= 0 { // one of ours: e.g. left up by a Run before a restart
				r.cur = i
			}
			return ifc, l, nil
		}
		r.log.Info("wifi: leaving another network", "interface", ifc.Name, "ssid", l.SSID)
		if err := radio.Disconnect(ifc); err != nil && !errors.Is(err, syscall.ENOTCONN) {
			return ifc, Link{}, fmt.Errorf("leave %q on %s: %w", l.SSID, ifc.Name, err)
		}
	}

	level := slog.LevelInfo
	if attempt > 1 {
		level = slog.LevelDebug // the failure before was logged already
	}
	n := r.net()
	r.log.Log(ctx, level, "wifi: connecting", "interface", ifc.Name, "network", n.Config, "attempt", attempt)
	err = radio.Connect(ifc, n.SSID, n.pmk)
	if errors.Is(err, syscall.EALREADY) {
		// An earlier attempt is still running (ours, or one from before a
		// restart): abandon it and start over.
		r.disconnect(radio, ifc)
		err = radio.Connect(ifc, n.SSID, n.pmk)
	}
	if err != nil {
		return ifc, Link{}, fmt.Errorf("connect %s to %q: %w", ifc.Name, n.SSID, err)
	}
	l, err := r.awaitAssociation(ctx, radio, ifc)
	if err == nil || ctx.Err() != nil {
		return ifc, l, err
	}
	// Abandon the attempt, so that the driver is idle for the scan and the
	// next Connect does not meet EALREADY.
	r.disconnect(radio, ifc)
	return ifc, Link{}, r.diagnose(ctx, radio, ifc)
}

func (r *runner) disconnect(radio Radio, ifc Interface) {
	if err := radio.Disconnect(ifc); err != nil && !errors.Is(err, syscall.ENOTCONN) {
		r.log.Debug("wifi: disconnect", "interface", ifc.Name, "err", err)
	}
}

var errTimeout = errors.New("not associated in time")

// awaitAssociation polls until the interface is associated with the
// network or r.connectTimeout passed.
func (r *runner) awaitAssociation(ctx context.Context, radio Radio, ifc Interface) (Link, error) {
	timeout := time.NewTimer(r.connectTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(connectPoll)
	defer tick.Stop()
	for {
		last := false
		select {
		case <-ctx.Done():
			return Link{}, ctx.Err()
		case <-timeout.C:
			last = true
		case <-tick.C:
		}
		l, err := radio.Link(ifc)
		switch {
		case err != nil:
			r.log.Debug("wifi: read association", "interface", ifc.Name, "err", err)
		case r.ours(l):
			return l, nil
		}
		if last {
			return Link{}, errTimeout
		}
	}
}

// diagnose scans after a failed attempt to say why it failed.
func (r *runner) diagnose(ctx context.Context, radio Radio, ifc Interface) error {
	sctx, cancel := context.WithTimeout(ctx, scanTimeout)
	nets, err := radio.Scan(sctx, ifc)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	ssid, pmk, within := r.net().SSID, r.net().pmk, r.connectTimeout
	if err != nil {
		return fmt.Errorf("not connected to %q within %v, and a scan to find out why failed: %w", ssid, within, err)
	}
	var (
		best  Network
		found bool
	)
	for _, n := range nets {
		if n.SSID == ssid && (!found || n.SignalDBm > best.SignalDBm) {
			best, found = n, true
		}
	}
	if !found {
		return fmt.Errorf("%w: %q is not among the %d networks a scan found (out of range, switched off or hidden)", ErrNotFound, ssid, len(nets))
	}
	seen := fmt.Sprintf("%q (%s, %d dBm)", ssid, best.Security, best.SignalDBm)
	switch {
	case best.Security == SecuritySAE:
		return fmt.Errorf("%w: %s is WPA3-only; this device joins WPA2-Personal and open networks (WPA2/WPA3 transition mode works)", ErrUnsupported, seen)
	case best.Security == SecurityEnterprise:
		return fmt.Errorf("%w: %s uses 802.1X (enterprise) authentication", ErrUnsupported, seen)
	case best.Security == SecurityTKIP:
		return fmt.Errorf("%w: %s offers only the TKIP cipher; set the access point to WPA2 with AES (CCMP)", ErrUnsupported, seen)
	case best.Security == SecurityOther:
		return fmt.Errorf("%w: %s uses a security mode this device does not know", ErrUnsupported, seen)
	case pmk == nil && best.Security != SecurityOpen:
		return fmt.Errorf("%w: %s needs a passphrase", ErrRejected, seen)
	case pmk != nil && best.Security == SecurityOpen:
		return fmt.Errorf("%w: %s is open or uses WEP or WPA1; for an open network leave the passphrase empty", ErrRejected, seen)
	case pmk != nil:
		return fmt.Errorf("%w: %s is in range but the handshake did not complete within %v: wrong passphrase?", ErrRejected, seen, within)
	}
	return fmt.Errorf("%w: %s is in range but did not let us join within %v", ErrRejected, seen, within)
}

// watch polls the association until it is lost or ctx ends.
func (r *runner) watch(ctx context.Context, radio Radio, ifc Interface, cur Link) error {
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	errs := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		l, err := radio.Link(ifc)
		if err != nil {
			if errs++; errs < maxLinkErrors {
				r.log.Debug("wifi: read association", "interface", ifc.Name, "err", err)
				continue
			}
			return fmt.Errorf("read the association of %s: %w", ifc.Name, err)
		}
		errs = 0
		switch {
		case !l.Connected:
			return errors.New("no longer associated")
		case !r.ours(l):
			return fmt.Errorf("now associated with %q instead", l.SSID)
		}
		if !bytes.Equal(l.BSSID, cur.BSSID) {
			r.log.Info("wifi: roamed", "interface", ifc.Name, "ssid", r.net().SSID, "from", cur.BSSID.String(), "to", l.BSSID.String(), "signal_dbm", l.SignalDBm)
		}
		cur = l
		r.state.update(func(st *Status) {
			st.BSSID, st.FrequencyMHz, st.SignalDBm = l.BSSID.String(), l.FrequencyMHz, l.SignalDBm
		})
	}
}
