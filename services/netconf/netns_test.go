package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
)

// These tests run against the kernel, each in a network namespace of its
// own holding a veth pair: veth0 (configured by netconf, starts down) and
// its peer veth1 (up). They need root; without it, or when namespaces
// cannot be created, they skip, except on CI (CI=true), where they fail.

type testNetns struct {
	ns   netns.NsHandle
	h    *netlink.Handle
	dev  netlink.Link // veth0
	peer netlink.Link // veth1
}

func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "needs root to create network namespaces")
	}

	ns, err := nattest.NewNamespace()
	if err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	t.Cleanup(func() { ns.Close() }) // the namespace goes with its last reference

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		testenv.SkipOrFail(t, "netlink handle in the new netns: %v", err)
	}
	t.Cleanup(h.Close)

	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}); err != nil {
		testenv.SkipOrFail(t, "create veth pair: %v", err)
	}
	tn := &testNetns{ns: ns, h: h}
	tn.dev = tn.link(t, "veth0")
	tn.peer = tn.link(t, "veth1")
	if err := h.LinkSetUp(tn.peer); err != nil {
		t.Fatalf("set veth1 up: %v", err)
	}
	return tn
}

func (tn *testNetns) link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := tn.h.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	return l
}

func (tn *testNetns) manager(t testing.TB, opts Options) *Manager {
	t.Helper()
	ns := tn.ns
	opts.Namespace = &ns
	if opts.ResolvConfPath == "" {
		opts.ResolvConfPath = filepath.Join(t.TempDir(), "resolv.conf")
	}
	opts.Logger = testLogger(t)
	m, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// addrs returns the addresses on link as strings, e.g. "10.0.0.2/24".
func (tn *testNetns) addrs(t testing.TB, link netlink.Link) []string {
	t.Helper()
	list, err := retryDump(func() ([]netlink.Addr, error) { return tn.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		t.Fatalf("AddrList: %v", err)
	}
	var out []string
	for _, a := range list {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p.String())
		}
	}
	slices.Sort(out)
	return out
}

// routes returns netconf's routes as "dst via gw metric N dev".
func (tn *testNetns) routes(t testing.TB) []string {
	t.Helper()
	m := &Manager{h: tn.h}
	rs, err := m.ownRoutes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		k, ok := kernelKey(r)
		if !ok {
			t.Fatalf("unexpected route %v", r)
		}
		out = append(out, fmt.Sprintf("%s metric %d dev %s", describeRoute(k.dst, k.gw, 0), k.metric, linkName(tn.h, k.link)))
	}
	slices.Sort(out)
	return out
}

func hasLinkLocal(addrs []string) bool {
	return slices.ContainsFunc(addrs, func(s string) bool { return strings.HasPrefix(s, "fe80:") })
}

func changeStrings(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	slices.Sort(out)
	return out
}

func wantChanges(t testing.TB, got []Change, want ...string) {
	t.Helper()
	slices.Sort(want)
	if g := changeStrings(got); !slices.Equal(g, want) {
		t.Fatalf("changes:\n got %q\nwant %q", g, want)
	}
}

func wantSet(t testing.TB, what string, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestApplyStaticInNetns(t *testing.T) {
	tn := newTestNetns(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	state := filepath.Join(t.TempDir(), "netconf-state.json")
	m := tn.manager(t, Options{ResolvConfPath: resolv, StatePath: state})
	ctx := t.Context()

	cfg1 := Config{Interfaces: []Interface{{
		Name:      "veth0",
		Mode:      ModeStatic,
		Addresses: []string{"10.0.0.2/24", "fd00:1::2/64"},
		Gateway4:  "10.0.0.1",
		Gateway6:  "fd00:1::1",
		Routes: []Route{
			{To: "10.20.0.0/16", Via: "10.0.0.254"},
			{To: "192.168.77.0/24"},
			{To: "fd00:2::/48", Via: "fd00:1::1", Metric: 50},
		},
		DNS:    []string{"10.0.0.53", "fd00:1::53"},
		Search: []string{"example.internal"},
		MTU:    1400,
	}}}

	// The kernel's default route from router advertisements (metric 1024)
	// must neither collide with the static IPv6 gateway nor be removed.
	// Only an up link takes routes, so "set link up" is tested elsewhere.
	if err := tn.h.LinkSetUp(tn.dev); err != nil {
		t.Fatal(err)
	}
	raRoute := &netlink.Route{LinkIndex: tn.dev.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("::/0")),
		Gw: net.ParseIP("fe80::1"), Protocol: 9 /* ra */, Priority: 1024}
	if err := tn.h.RouteAdd(raRoute); err != nil {
		t.Fatalf("add router-advertisement route: %v", err)
	}

	changes, err := m.Apply(ctx, cfg1)
	if err != nil {
		t.Fatalf("Apply(cfg1): %v", err)
	}
	wantChanges(t, changes,
		"set MTU 1400 on veth0",
		"add address 10.0.0.2/24 on veth0",
		"add address fd00:1::2/64 on veth0",
		"add route default via 10.0.0.1 on veth0",
		"add route default (IPv6) via fd00:1::1 metric 512 on veth0",
		"add route 10.20.0.0/16 via 10.0.0.254 on veth0",
		"add route 192.168.77.0/24 on veth0",
		"add route fd00:2::/48 via fd00:1::1 metric 50 on veth0",
		"write resolv.conf "+resolv,
	)

	dev := tn.link(t, "veth0")
	if got := dev.Attrs().MTU; got != 1400 {
		t.Errorf("MTU: got %d, want 1400", got)
	}
	if dev.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("veth0 not up after Apply")
	}
	// The kernel adds an IPv6 link-local address once the link is up;
	// netconf must never remove it.
	testenv.WaitFor(t, 10*time.Second, "IPv6 link-local address on veth0", func() bool { return hasLinkLocal(tn.addrs(t, dev)) })
	linkLocal := slices.DeleteFunc(tn.addrs(t, dev), func(s string) bool { return !strings.HasPrefix(s, "fe80:") })[0]
	wantSet(t, "addresses", tn.addrs(t, dev), "10.0.0.2/24", "fd00:1::2/64", linkLocal)
	wantSet(t, "netconf routes", tn.routes(t),
		"default via 10.0.0.1 metric 0 dev veth0",
		"default (IPv6) via fd00:1::1 metric 512 dev veth0",
		"10.20.0.0/16 via 10.0.0.254 metric 0 dev veth0",
		"192.168.77.0/24 metric 0 dev veth0",
		"fd00:2::/48 via fd00:1::1 metric 50 dev veth0",
	)
	wantResolv := resolvConfMarker + " from the device settings; changes here are overwritten.\n" +
		"nameserver 10.0.0.53\nnameserver fd00:1::53\nsearch example.internal\n"
	if b, err := os.ReadFile(resolv); err != nil || string(b) != wantResolv {
		t.Fatalf("resolv.conf: got %q (%v), want %q", b, err, wantResolv)
	}

	// Idempotent: the same config again changes nothing.
	changes, err = m.Apply(ctx, cfg1)
	if err != nil {
		t.Fatalf("Apply(cfg1) again: %v", err)
	}
	wantChanges(t, changes)

	// Something else (a DHCP client, an operator) adds an address and a
	// route; netconf must leave them alone.
	foreign := &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.0.0.99/24"))}
	if err := tn.h.AddrAdd(dev, foreign); err != nil {
		t.Fatal(err)
	}
	foreignRoute := &netlink.Route{LinkIndex: dev.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("10.30.0.0/16")),
		Gw: net.ParseIP("10.0.0.1"), Protocol: 16 /* dhcp */}
	if err := tn.h.RouteAdd(foreignRoute); err != nil {
		t.Fatal(err)
	}

	cfg2 := Config{Interfaces: []Interface{{
		Name:      "veth0",
		Mode:      ModeStatic,
		Addresses: []string{"10.0.1.2/24", "fd00:1::3/64"},
		Gateway4:  "10.0.1.1",
		DNS:       []string{"10.0.1.53"},
	}}}
	// A fresh Manager: what the old config added is known from the state
	// file (addresses) and the route protocol (routes).
	m = tn.manager(t, Options{ResolvConfPath: resolv, StatePath: state})
	changes, err = m.Apply(ctx, cfg2)
	if err != nil {
		t.Fatalf("Apply(cfg2): %v", err)
	}
	wantChanges(t, changes,
		"set sysctl net.ipv4.conf.veth0.promote_secondaries=1 on veth0",
		"remove address 10.0.0.2/24 on veth0",
		"remove address fd00:1::2/64 on veth0",
		"add address 10.0.1.2/24 on veth0",
		"add address fd00:1::3/64 on veth0",
		"remove route default via 10.0.0.1 on veth0",
		"remove route default (IPv6) via fd00:1::1 metric 512 on veth0",
		"remove route 10.20.0.0/16 via 10.0.0.254 on veth0",
		"remove route 192.168.77.0/24 on veth0",
		"remove route fd00:2::/48 via fd00:1::1 metric 50 on veth0",
		"add route default via 10.0.1.1 on veth0",
		"write resolv.conf "+resolv,
	)
	wantSet(t, "addresses after cfg2", tn.addrs(t, dev), "10.0.0.99/24", "10.0.1.2/24", "fd00:1::3/64", linkLocal)
	wantSet(t, "netconf routes after cfg2", tn.routes(t), "default via 10.0.1.1 metric 0 dev veth0")
	if _, err := tn.h.RouteListFiltered(netlink.FAMILY_V4, foreignRoute, netlink.RT_FILTER_DST); err != nil {
		t.Fatal(err)
	}
	if rs, _ := tn.h.RouteListFiltered(netlink.FAMILY_V4, foreignRoute, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL); len(rs) != 1 {
		t.Fatalf("foreign route 10.30.0.0/16: got %d routes, want it kept", len(rs))
	}
	if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver 10.0.1.53\n") || strings.Contains(string(b), "10.0.0.53") {
		t.Fatalf("resolv.conf after cfg2: %q", b)
	}
	changes, err = m.Apply(ctx, cfg2)
	if err != nil {
		t.Fatalf("Apply(cfg2) again: %v", err)
	}
	wantChanges(t, changes)

	// Back to DHCP: netconf's addresses, routes and resolv.conf go, the
	// rest stays for the DHCP client.
	cfg3 := Config{Interfaces: []Interface{{Name: "veth0", Mode: ModeDHCP}}}
	changes, err = m.Apply(ctx, cfg3)
	if err != nil {
		t.Fatalf("Apply(cfg3): %v", err)
	}
	wantChanges(t, changes,
		"remove address 10.0.1.2/24 on veth0",
		"remove address fd00:1::3/64 on veth0",
		"remove route default via 10.0.1.1 on veth0",
		"remove resolv.conf "+resolv,
	)
	wantSet(t, "addresses after cfg3", tn.addrs(t, dev), "10.0.0.99/24", linkLocal)
	wantSet(t, "netconf routes after cfg3", tn.routes(t))
	if _, err := os.Stat(resolv); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("resolv.conf after cfg3: Stat = %v, want not exist", err)
	}
	changes, err = m.Apply(ctx, cfg3)
	if err != nil {
		t.Fatalf("Apply(cfg3) again: %v", err)
	}
	wantChanges(t, changes)
	if rs, _ := tn.h.RouteListFiltered(netlink.FAMILY_V6, raRoute, netlink.RT_FILTER_PROTOCOL); len(rs) != 1 {
		t.Fatalf("router-advertisement route: got %d routes, want it kept", len(rs))
	}
	if b, err := os.ReadFile(state); err != nil || strings.Contains(string(b), "veth0") {
		t.Fatalf("state file after cfg3: %q (%v), want no addresses", b, err)
	}
}

func TestApplyZeroConfigInNetns(t *testing.T) {
	tn := newTestNetns(t)
	if err := tn.h.LinkSetDown(tn.peer); err != nil {
		t.Fatal(err)
	}
	m := tn.manager(t, Options{})
	// The kernel registers a veth's peer first, so the peer has the lower
	// index and is "the first Ethernet-like interface".
	first := "veth1"
	if tn.dev.Attrs().Index < tn.peer.Attrs().Index {
		first = "veth0"
	}
	changes, err := m.Apply(t.Context(), Config{})
	if err != nil {
		t.Fatalf("Apply(Config{}): %v", err)
	}
	wantChanges(t, changes, "set link up on "+first)
	changes, err = m.Apply(t.Context(), Config{})
	if err != nil {
		t.Fatalf("Apply(Config{}) again: %v", err)
	}
	wantChanges(t, changes)
}

func TestApplyMissingInterfaceInNetns(t *testing.T) {
	tn := newTestNetns(t)
	m := tn.manager(t, Options{})
	cfg := Config{Interfaces: []Interface{
		{Name: "eth9", Mode: ModeStatic, Addresses: []string{"10.9.0.2/24"}},
		{Name: "veth0", Mode: ModeStatic, Addresses: []string{"10.0.0.2/24"}},
	}}
	changes, err := m.Apply(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "netconf: interface eth9:") {
		t.Fatalf("Apply: got error %v, want one about eth9", err)
	}
	// The interface that exists is configured anyway.
	wantChanges(t, changes, "set link up on veth0", "add address 10.0.0.2/24 on veth0")
}

func TestWatchInNetns(t *testing.T) {
	tn := newTestNetns(t)
	m := tn.manager(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := m.Apply(ctx, Config{Interfaces: []Interface{{Name: "veth0"}}}); err != nil {
		t.Fatal(err)
	}
	dev := tn.link(t, "veth0")
	testenv.WaitFor(t, 10*time.Second, "veth0 running", func() bool { return isRunning(tn.link(t, "veth0").Attrs().RawFlags) })

	w, err := m.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	events, unsubscribe := w.Subscribe()
	defer unsubscribe()
	other, unsubscribeOther := w.Subscribe()
	defer unsubscribeOther()
	changed := Debounce(ctx, other, 50*time.Millisecond)

	// expect reads events until one matches, failing after a deadline.
	expect := func(want Event) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("event channel closed (Err: %v) while waiting for %v", w.Err(), want)
				}
				t.Logf("event: %v", ev)
				if ev.Kind == want.Kind && ev.Interface == want.Interface && ev.Addr == want.Addr {
					if ev.Index != dev.Attrs().Index {
						t.Fatalf("event %v: got index %d, want %d", ev, ev.Index, dev.Attrs().Index)
					}
					return
				}
			case <-timeout:
				t.Fatalf("timed out waiting for event %v", want)
			}
		}
	}
	expectChanged := func() {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the debounced network-changed signal")
		}
	}

	// Taking the peer down removes veth0's carrier.
	if err := tn.h.LinkSetDown(tn.peer); err != nil {
		t.Fatal(err)
	}
	expect(Event{Kind: LinkDown, Interface: "veth0"})
	expectChanged()
	if err := tn.h.LinkSetUp(tn.peer); err != nil {
		t.Fatal(err)
	}
	expect(Event{Kind: LinkUp, Interface: "veth0"})
	expectChanged()

	pfx := netip.MustParsePrefix("10.7.0.2/24")
	if err := tn.h.AddrAdd(dev, &netlink.Addr{IPNet: ipNet(pfx)}); err != nil {
		t.Fatal(err)
	}
	expect(Event{Kind: AddrAdded, Interface: "veth0", Addr: pfx})
	if err := tn.h.AddrDel(dev, &netlink.Addr{IPNet: ipNet(pfx)}); err != nil {
		t.Fatal(err)
	}
	expect(Event{Kind: AddrRemoved, Interface: "veth0", Addr: pfx})

	// IPv6 addresses are announced once duplicate address detection is done.
	pfx6 := netip.MustParsePrefix("fd00:7::2/64")
	if err := tn.h.AddrAdd(dev, &netlink.Addr{IPNet: ipNet(pfx6)}); err != nil {
		t.Fatal(err)
	}
	expect(Event{Kind: AddrAdded, Interface: "veth0", Addr: pfx6})

	cancel()
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Watcher did not stop after its context ended")
	}
	if err := w.Err(); err != nil {
		t.Fatalf("Err after cancel: got %v, want nil", err)
	}
	for range events {
	}
}
