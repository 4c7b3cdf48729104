package wifi

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// fakeRadio is a Radio with one access point, behaving like cfg80211 as
// far as Run can tell: Connect starts an attempt that succeeds or fails
// after a while, a second Connect meanwhile gets EALREADY, Disconnect
// without anything to end gets ENOTCONN.
type fakeRadio struct {
	mu sync.Mutex

	ifaces    []Interface
	ifacesErr error
	upErr     error

	ap      Network // the access point of the network
	inRange bool
	wantPMK []byte        // what the access point accepts; nil: open
	delay   time.Duration // association delay after Connect
	// dropAfter, if set, ends every association this long after it began.
	dropAfter time.Duration
	others    []Network // other networks in range
	scanErr   error

	connectErrs []error // returned by the next Connect calls, in order
	linkErrs    int     // the next Link calls fail with ENODEV

	assoc   *Link
	assocAt time.Time
	pending *pending
	closed  bool

	calls    []string    // SetUp, Connect, Disconnect, Scan, in order
	connects []time.Time // when Connect was called
}

type pending struct {
	at time.Time
	ok bool
}

const (
	testSSID = "home"
	testPass = "correct horse battery"
)

var testBSSID = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}

// newFake returns a radio with wlan0 and a WPA2 access point for testSSID
// that accepts testPass, in range, associating 3 s after Connect.
func newFake(t testing.TB) *fakeRadio {
	t.Helper()
	pmk, err := Config{SSID: testSSID, Passphrase: testPass}.PMK()
	if err != nil {
		t.Fatal(err)
	}
	return &fakeRadio{
		ifaces:  []Interface{{Index: 3, Name: "wlan0", PHY: 0, Station: true}},
		ap:      Network{SSID: testSSID, BSSID: testBSSID, SignalDBm: -52, Security: SecurityWPA2},
		inRange: true,
		wantPMK: pmk,
		delay:   3 * time.Second,
		others:  []Network{{SSID: "neighbour", SignalDBm: -80, Security: SecurityWPA2}},
	}
}

func (f *fakeRadio) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeRadio) Interfaces() ([]Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ifacesErr != nil {
		return nil, f.ifacesErr
	}
	return slices.Clone(f.ifaces), nil
}

func (f *fakeRadio) SetUp(ifc Interface) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("up %s", ifc.Name)
	return f.upErr
}

func (f *fakeRadio) Connect(ifc Interface, ssid string, pmk []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	key := "none"
	if pmk != nil {
		key = hex.EncodeToString(pmk)
	}
	f.record("connect %s#%d %q pmk=%s", ifc.Name, ifc.Index, ssid, key)
	f.connects = append(f.connects, time.Now())
	if len(f.connectErrs) > 0 {
		err := f.connectErrs[0]
		f.connectErrs = f.connectErrs[1:]
		if err != nil {
			return err
		}
	}
	if f.assoc != nil || f.pending != nil {
		return syscall.EALREADY
	}
	ok := ssid == f.ap.SSID && f.inRange && bytes.Equal(pmk, f.wantPMK)
	f.pending = &pending{at: time.Now().Add(f.delay), ok: ok}
	return nil
}

func (f *fakeRadio) Disconnect(ifc Interface) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("disconnect %s", ifc.Name)
	if f.assoc == nil && f.pending == nil {
		return syscall.ENOTCONN
	}
	f.assoc, f.pending = nil, nil
	return nil
}

// advance settles a pending attempt and a scheduled drop. Callers hold mu.
func (f *fakeRadio) advance() {
	now := time.Now()
	if p := f.pending; p != nil && !now.Before(p.at) {
		f.pending = nil
		if p.ok {
			f.assoc = &Link{Connected: true, SSID: f.ap.SSID, BSSID: f.ap.BSSID, FrequencyMHz: 5180, SignalDBm: f.ap.SignalDBm}
			f.assocAt = p.at
		}
	}
	if f.assoc != nil && f.dropAfter > 0 && !now.Before(f.assocAt.Add(f.dropAfter)) {
		f.assoc = nil
	}
}

func (f *fakeRadio) Link(ifc Interface) (Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.linkErrs > 0 {
		f.linkErrs--
		return Link{}, syscall.ENODEV
	}
	if !slices.ContainsFunc(f.ifaces, func(i Interface) bool { return i.Index == ifc.Index }) {
		return Link{}, syscall.ENODEV
	}
	f.advance()
	if f.assoc == nil {
		return Link{}, nil
	}
	return *f.assoc, nil
}

func (f *fakeRadio) Scan(ctx context.Context, ifc Interface) ([]Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("scan %s", ifc.Name)
	if _, ok := ctx.Deadline(); !ok {
		return nil, fmt.Errorf("scan without a deadline")
	}
	if f.scanErr != nil {
		return nil, f.scanErr
	}
	nets := slices.Clone(f.others)
	if f.inRange {
		nets = append(nets, f.ap)
	}
	return nets, nil
}

func (f *fakeRadio) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// do runs fn under the fake's lock, to change its world.
func (f *fakeRadio) do(fn func(f *fakeRadio)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeRadio) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeRadio) connectTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.connects)
}

// logRecorder is a slog.Handler that logs to t and keeps the records.
type logRecorder struct {
	t    testing.TB
	mu   sync.Mutex
	recs []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
		return true
	})
	h.t.Log(b.String())
	h.mu.Lock()
	h.recs = append(h.recs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { panic("unused") }
func (h *logRecorder) WithGroup(string) slog.Handler      { panic("unused") }

// matching returns the records that start with prefix ("LEVEL message").
func (h *logRecorder) matching(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if strings.HasPrefix(r, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func (h *logRecorder) all() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.recs, "\n")
}

// run is a Run under test, inside a synctest bubble.
type run struct {
	t      *testing.T
	radio  *fakeRadio
	state  *State
	logs   *logRecorder
	start  time.Time
	cancel context.CancelFunc
	done   chan error
}

// startRun starts Run with the fake, no backoff jitter, and opts changed
// by tweak (may be nil).
func startRun(t *testing.T, cfg Config, f *fakeRadio, tweak func(*Options)) *run {
	t.Helper()
	r := &run{t: t, radio: f, state: new(State), logs: &logRecorder{t: t}, start: time.Now(), done: make(chan error, 1)}
	opts := Options{
		Logger: slog.New(r.logs),
		State:  r.state,
		Open:   func() (Radio, error) { return f, nil },
	}
	opts.Backoff.Jitter = -1
	if tweak != nil {
		tweak(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- Run(ctx, cfg, opts) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// at sleeps until d after the start and lets Run settle.
func (r *run) at(d time.Duration) {
	r.t.Helper()
	if w := time.Until(r.start.Add(d)); w > 0 {
		time.Sleep(w)
	}
	synctest.Wait()
}

// stop cancels Run and checks that it returns nil without delay.
func (r *run) stop() {
	r.t.Helper()
	r.cancel()
	before := time.Now()
	if err := <-r.done; err != nil {
		r.t.Errorf("Run after cancel: got %v, want nil", err)
	}
	r.done <- nil // for the cleanup
	if d := time.Since(before); d != 0 {
		r.t.Errorf("Run returned %v after cancel, want at once", d)
	}
}

func (r *run) wantPhase(want Phase) Status {
	r.t.Helper()
	st := r.state.Status()
	if st.Phase != want {
		r.t.Fatalf("phase: got %s (%+v), want %s", st.Phase, st, want)
	}
	return st
}
