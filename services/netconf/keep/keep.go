// Package keep is the device's network loop: it applies the network
// settings with netconf, again after link changes, and runs a DHCP client
// (package dhcp) for each interface the settings leave to DHCP, applying
// each lease as the interface's address, default route and name servers.
// It is apart from netconf so that what only checks network settings
// (the init, which reads them before any service starts) does not link a
// DHCP client.
package keep

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/pc2/pc2/services/dhcp"
	"github.com/pc2/pc2/services/netconf"
)

// Options configure Run.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// Quiet is how long link events must settle before a re-apply
	// (default 500 ms).
	Quiet time.Duration
	// Changed, if set, is called after link or address changes settle
	// (the tunnel reattaches at once).
	Changed func()
	// Applied, if set, gets each apply's result.
	Applied func([]netconf.Change, error)
	// DHCPAlso are interfaces that get an address by DHCP when they
	// exist, besides the DHCP-mode interfaces of the config: a Raspberry
	// Pi's USB Ethernet (usb0), wlan0 on a Wi-Fi network.
	DHCPAlso []string
	// Leased, if set, gets the leases held after each change of them.
	Leased func(map[string]*dhcp.Lease)
	// Hostname is sent with DHCP requests.
	Hostname string
	// OpenDHCP opens a DHCP client on an interface (nil: nclient4 on a
	// raw socket in the Manager's namespace).
	OpenDHCP func(iface string) (dhcp.Client, error)
	// Retry is the DHCP clients' first wait after a failed request
	// (dhcp.Config.Retry).
	Retry time.Duration
}

// DHCP route metrics by kind of interface: wired before USB before
// wireless, as a device with several leases should prefer.
const (
	metricWired    = 100
	metricUSB      = 200
	metricOther    = 300
	metricWireless = 600
)

// Run applies cfg with m, then keeps it applied until ctx ends: again after link
// changes (a link that went down and up loses its routes), and with the
// leases of the DHCP clients it runs (package dhcp) for cfg's DHCP-mode
// interfaces (the first Ethernet interface when cfg has none) and the
// ones of opts.DHCPAlso that exist. A lease is applied as the interface's
// address, a default route through its router (with a metric by kind of
// interface) and its name servers, unless cfg names some; a lost lease
// takes them away again. One DHCP client per interface, in this process.
func Run(ctx context.Context, m *netconf.Manager, cfg netconf.Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w, err := m.Watch(ctx)
	if err != nil {
		return fmt.Errorf("netconf: watch: %w", err)
	}
	events, unsubscribe := w.Subscribe()
	defer unsubscribe()
	quiet := opts.Quiet
	if quiet == 0 {
		quiet = 500 * time.Millisecond
	}
	// Link-ups go to the DHCP client of their interface (ask again at
	// once), removals end it, everything goes to the debouncer.
	forDebounce := make(chan netconf.Event, netconf.SubscriberBuffer)
	k := &keeper{m: m, log: log, opts: opts, leases: map[string]*dhcp.Lease{}, kicks: map[string]chan struct{}{},
		gone: map[string]func(){}, leased: make(chan struct{}, 1)}
	go func() {
		defer close(forDebounce)
		for ev := range events {
			switch ev.Kind {
			case netconf.LinkUp:
				k.kick(ev.Interface)
			case netconf.LinkDown:
				k.linkDown(ev.Interface)
			}
			select {
			case forDebounce <- ev:
			default: // the debouncer has one pending already
			}
		}
	}()
	settled := netconf.Debounce(ctx, forDebounce, quiet)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	want := dhcpInterfaces(cfg, opts.DHCPAlso)
	for {
		first, err := m.FirstEthernet()
		if err != nil {
			log.Warn("netconf: no first Ethernet interface", "err", err)
		}
		for _, name := range want {
			if name == "" {
				name = first
			}
			if name != "" && !static(cfg, name, first) && k.start(name) {
				wg.Add(1)
				go func() { defer wg.Done(); k.run(ctx, name) }()
			}
		}
		eff := leasedConfig(cfg, k.snapshot(), first)
		if err := eff.Validate(); err != nil {
			// A lease that does not fit the settings (its address taken
			// by a static interface): the settings without leases.
			log.Error("netconf: leases not applied", "err", err)
			eff = leasedConfig(cfg, nil, first)
		}
		changes, err := m.Apply(ctx, eff)
		if opts.Applied != nil {
			opts.Applied(changes, err)
		}
		if err != nil {
			log.Error("netconf: network settings not applied", "err", err)
		} else if len(changes) > 0 {
			log.Info("netconf: network settings applied", "changes", len(changes))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.Done():
			return w.Err()
		case <-k.leased:
		case _, ok := <-settled:
			if !ok {
				return nil
			}
			if opts.Changed != nil {
				opts.Changed()
			}
		}
	}
}

// dhcpInterfaces are the interfaces cfg leaves to DHCP ("" is the first
// Ethernet one) and also, each once.
func dhcpInterfaces(cfg netconf.Config, also []string) []string {
	var out []string
	if len(cfg.Interfaces) == 0 {
		out = append(out, "")
	}
	for _, in := range cfg.Interfaces {
		if in.Mode == "" || in.Mode == netconf.ModeDHCP {
			out = append(out, in.Name)
		}
	}
	for _, name := range also {
		if !static(cfg, name, "") && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// static reports whether cfg makes the interface name static (first is
// the first Ethernet interface, which an unnamed one of cfg is).
func static(cfg netconf.Config, name, first string) bool {
	return slices.ContainsFunc(cfg.Interfaces, func(in netconf.Interface) bool {
		return in.Mode == netconf.ModeStatic && (in.Name == name || in.Name == "" && name == first)
	})
}

// metric is the default route metric of a lease on iface.
func metric(iface string) int {
	switch {
	case strings.HasPrefix(iface, "eth"):
		return metricWired
	case strings.HasPrefix(iface, "usb"):
		return metricUSB
	case strings.HasPrefix(iface, "wl"):
		return metricWireless
	}
	return metricOther
}

// leasedConfig is cfg with the leases applied: each leased interface
// static on its lease (first names the first Ethernet interface, which
// an unnamed interface of cfg is).
func leasedConfig(cfg netconf.Config, leases map[string]*dhcp.Lease, first string) netconf.Config {
	out := netconf.Config{Interfaces: slices.Clone(cfg.Interfaces)}
	if len(out.Interfaces) == 0 {
		out.Interfaces = []netconf.Interface{{Mode: netconf.ModeDHCP}}
	}
	for _, name := range slices.Sorted(maps.Keys(leases)) {
		l := leases[name]
		i := slices.IndexFunc(out.Interfaces, func(in netconf.Interface) bool { return in.Name == name })
		if i < 0 && name == first {
			i = slices.IndexFunc(out.Interfaces, func(in netconf.Interface) bool { return in.Name == "" })
		}
		in := netconf.Interface{Mode: netconf.ModeDHCP}
		if i >= 0 {
			in = out.Interfaces[i]
			in.Routes = slices.Clone(in.Routes)
		}
		if in.Mode == netconf.ModeStatic {
			continue // a lease from before the settings changed
		}
		in.Name, in.Mode, in.Addresses = name, netconf.ModeStatic, []string{l.Address.String()}
		if l.Router.IsValid() {
			in.Routes = append(in.Routes, netconf.Route{To: "0.0.0.0/0", Via: l.Router.String(), Metric: metric(name)})
		}
		if len(in.DNS) == 0 {
			for _, d := range l.DNS {
				in.DNS = append(in.DNS, d.String())
			}
		}
		if i >= 0 {
			out.Interfaces[i] = in
		} else {
			out.Interfaces = append(out.Interfaces, in)
		}
	}
	return out
}

// keeper runs the DHCP clients.
type keeper struct {
	m    *netconf.Manager
	log  *slog.Logger
	opts Options

	mu     sync.Mutex
	leases map[string]*dhcp.Lease
	kicks  map[string]chan struct{} // by interface with a client
	gone   map[string]func()        // ends the running client, by interface
	leased chan struct{}
}

// start reports whether a client for name is to start (none yet).
func (k *keeper) start(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.kicks[name]; ok {
		return false
	}
	k.kicks[name] = make(chan struct{}, 1)
	return true
}

func (k *keeper) kick(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.kicks[name]; ok {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func (k *keeper) snapshot() map[string]*dhcp.Lease {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.leases)
}

// run keeps a lease on the interface name whenever it exists: it waits
// for the interface, brings it up and runs a DHCP client on it, until the
// interface goes away (a USB adapter pulled out: the client's socket
// belongs to the old interface), when the lease is dropped and the wait
// begins again.
func (k *keeper) run(ctx context.Context, name string) {
	k.mu.Lock()
	kick := k.kicks[name]
	k.mu.Unlock()
	log := k.log.With("interface", name)
	open := k.opts.OpenDHCP
	if open == nil {
		open = func(iface string) (c dhcp.Client, err error) {
			err = k.m.InNamespace(func() error {
				c, err = nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
				return err
			})
			return c, err
		}
	}
	for ctx.Err() == nil {
		for waited := false; ; waited = true {
			ok, err := k.m.LinkUp(name)
			if err != nil {
				log.Warn("netconf: DHCP interface not brought up", "err", err)
			}
			if ok {
				break
			}
			if !waited {
				log.Info("netconf: waiting for the interface to appear for DHCP")
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
		select {
		case <-kick: // a link-up from before the client: it asks at once anyway
		default:
		}
		cctx, cancel := context.WithCancel(ctx)
		k.mu.Lock()
		k.gone[name] = cancel
		k.mu.Unlock()
		err := dhcp.Run(cctx, dhcp.Config{Interface: name, Hostname: k.opts.Hostname, Logger: k.log, Open: open, Kick: kick, Retry: k.opts.Retry},
			func(l *dhcp.Lease) { k.setLease(name, l) })
		cancel()
		k.mu.Lock()
		delete(k.gone, name)
		k.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Error("netconf: DHCP client stopped; again in 5 s", "err", err)
		} else {
			log.Warn("netconf: the interface went away; its lease is dropped")
		}
		k.setLease(name, nil)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// setLease records the lease held on name (nil: none) and has Run apply
// it.
func (k *keeper) setLease(name string, l *dhcp.Lease) {
	k.mu.Lock()
	_, had := k.leases[name]
	if l == nil {
		delete(k.leases, name)
	} else {
		k.leases[name] = l
	}
	held := maps.Clone(k.leases)
	k.mu.Unlock()
	if l == nil && !had {
		return
	}
	if k.opts.Leased != nil {
		k.opts.Leased(held)
	}
	select {
	case k.leased <- struct{}{}:
	default:
	}
}

// linkDown ends the DHCP client of name when the interface is gone (not
// when it only lost its carrier: the client keeps its lease, and asks
// again when the link comes back up).
func (k *keeper) linkDown(name string) {
	k.mu.Lock()
	cancel, ok := k.gone[name]
	k.mu.Unlock()
	if !ok {
		return
	}
	if exists, err := k.m.LinkExists(name); err == nil && !exists {
		cancel()
	}
}
