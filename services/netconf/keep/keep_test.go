package keep

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/pc2/pc2/internal/testing/dhcptest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/services/dhcp"
	"github.com/pc2/pc2/services/netconf"
)

// TestDHCPInterfaces: which interfaces get DHCP clients.
func TestDHCPInterfaces(t *testing.T) {
	for _, c := range []struct {
		cfg  netconf.Config
		also []string
		want []string
	}{
		{netconf.Config{}, nil, []string{""}},
		{netconf.Config{}, []string{"usb0", "wlan0"}, []string{"", "usb0", "wlan0"}},
		{netconf.Config{Interfaces: []netconf.Interface{{Mode: netconf.ModeStatic, Addresses: []string{"10.0.0.2/24"}}}}, []string{"usb0"}, []string{"usb0"}},
		{netconf.Config{Interfaces: []netconf.Interface{{Name: "usb0", Mode: netconf.ModeStatic, Addresses: []string{"10.0.0.2/24"}}, {Name: "eth1", Mode: netconf.ModeDHCP}}},
			[]string{"usb0", "wlan0", "eth1"}, []string{"eth1", "wlan0"}},
	} {
		if got := dhcpInterfaces(c.cfg, c.also); !reflect.DeepEqual(got, c.want) {
			t.Errorf("dhcpInterfaces(%+v, %q) = %q, want %q", c.cfg, c.also, got, c.want)
		}
	}
}

// TestStatic: an interface is static by its name, or as the first
// Ethernet interface when the static one is unnamed; the DHCP clients
// skip those.
func TestStatic(t *testing.T) {
	cfg := netconf.Config{Interfaces: []netconf.Interface{{Mode: netconf.ModeStatic, Addresses: []string{"10.0.0.2/24"}},
		{Name: "eth1", Mode: netconf.ModeStatic, Addresses: []string{"10.1.0.2/24"}}, {Name: "eth2"}}}
	for name, want := range map[string]bool{"eth0": true, "eth1": true, "eth2": false, "usb0": false} {
		if got := static(cfg, name, "eth0"); got != want {
			t.Errorf("static(%s) = %t, want %t", name, got, want)
		}
	}
	if static(cfg, "eth0", "usb0") {
		t.Error("eth0 static when the unnamed interface is usb0")
	}
}

// TestLeasedConfig: a lease makes its interface static on it, with a
// default route by kind of interface and its name servers unless the
// settings name some; a static interface ignores a lease; an unnamed
// interface is the first Ethernet one.
func TestLeasedConfig(t *testing.T) {
	lease := func(addr, router string, dns ...string) *dhcp.Lease {
		l := &dhcp.Lease{Address: netip.MustParsePrefix(addr)}
		if router != "" {
			l.Router = netip.MustParseAddr(router)
		}
		for _, d := range dns {
			l.DNS = append(l.DNS, netip.MustParseAddr(d))
		}
		return l
	}
	cfg := netconf.Config{Interfaces: []netconf.Interface{{DNS: []string{"9.9.9.9"}, MTU: 1400}, {Name: "eth1", Mode: netconf.ModeStatic, Addresses: []string{"10.1.0.2/24"}}}}
	got := leasedConfig(cfg, map[string]*dhcp.Lease{
		"eth0":  lease("192.168.1.20/24", "192.168.1.1", "192.168.1.1"),
		"eth1":  lease("10.1.0.99/24", "10.1.0.1"),
		"wlan0": lease("192.168.2.20/24", "192.168.2.1", "192.168.2.1"),
		"usb0":  lease("10.2.0.20/16", ""),
	}, "eth0")
	want := netconf.Config{Interfaces: []netconf.Interface{
		{Name: "eth0", Mode: netconf.ModeStatic, Addresses: []string{"192.168.1.20/24"}, DNS: []string{"9.9.9.9"}, MTU: 1400,
			Routes: []netconf.Route{{To: "0.0.0.0/0", Via: "192.168.1.1", Metric: metricWired}}},
		{Name: "eth1", Mode: netconf.ModeStatic, Addresses: []string{"10.1.0.2/24"}},
		{Name: "usb0", Mode: netconf.ModeStatic, Addresses: []string{"10.2.0.20/16"}},
		{Name: "wlan0", Mode: netconf.ModeStatic, Addresses: []string{"192.168.2.20/24"}, DNS: []string{"192.168.2.1"},
			Routes: []netconf.Route{{To: "0.0.0.0/0", Via: "192.168.2.1", Metric: metricWireless}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("leasedConfig:\n got %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("leased config invalid: %v", err)
	}
	if cfg.Interfaces[0].Name != "" || cfg.Interfaces[0].Addresses != nil {
		t.Errorf("leasedConfig changed its argument: %+v", cfg)
	}
	if got := leasedConfig(netconf.Config{}, nil, "eth0"); !reflect.DeepEqual(got, netconf.Config{Interfaces: []netconf.Interface{{Mode: netconf.ModeDHCP}}}) {
		t.Errorf("no leases: %+v", got)
	}
}

// TestRunDHCP: Run with the default config (DHCP on the first Ethernet
// interface, veth0, down) against a real DHCP server (dnsmasq) in another
// namespace: it brings the link up, applies the lease (address, default
// route through the router, resolv.conf with the server's name server),
// and when the server refuses the address (back with another range) takes
// the old address away and applies the new one; an interface that goes
// away loses its lease, and gets one again when it is back.
func TestRunDHCP(t *testing.T) {
	p := dhcptest.NewPair(t)
	h, err := netlink.NewHandleAt(p.Client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	dev, err := h.LinkByName("veth0")
	if err != nil {
		t.Fatal(err)
	}
	srvLog, stop := p.Dnsmasq(t, "192.0.2.50", "192.0.2.59")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	ns := p.Client
	m, err := netconf.New(netconf.Options{Namespace: &ns, ResolvConfPath: resolv, StatePath: filepath.Join(t.TempDir(), "state.json"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	// addrs are veth0's IPv4 addresses; routed says whether netconf's
	// default route goes through the server.
	addrs := func() []string {
		list, err := h.AddrList(dev, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range list {
			out = append(out, a.IPNet.String())
		}
		return out
	}
	routed := func() bool {
		rs, err := h.RouteList(dev, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(rs, func(r netlink.Route) bool {
			return r.Protocol == netconf.RouteProtocol && r.Gw.String() == "192.0.2.1" && r.Priority == 300 &&
				(r.Dst == nil || r.Dst.String() == "0.0.0.0/0")
		})
	}

	var mu sync.Mutex
	var held map[string]*dhcp.Lease
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, m, netconf.Config{}, Options{Logger: log, Quiet: 50 * time.Millisecond, Hostname: "pc2-keep", Retry: 200 * time.Millisecond,
			Leased: func(l map[string]*dhcp.Lease) { mu.Lock(); held = l; mu.Unlock() }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	leased := func(in netip.Prefix) string {
		mu.Lock()
		defer mu.Unlock()
		if l := held["veth0"]; l != nil && in.Contains(l.Address.Addr()) {
			return l.Address.String()
		}
		return ""
	}
	applied := func(addr string) bool {
		return addr != "" && slices.Contains(addrs(), addr) && routed()
	}
	var first string
	testenv.WaitFor(t, 30*time.Second, "the lease applied", func() bool {
		first = leased(netip.MustParsePrefix("192.0.2.48/28"))
		return applied(first)
	})
	// resolv.conf is written after the address and the route, in the
	// same apply: the kernel can show them first.
	testenv.WaitFor(t, 10*time.Second, "resolv.conf naming the server's name server", func() bool {
		b, err := os.ReadFile(resolv)
		return err == nil && strings.Contains(string(b), "nameserver 192.0.2.53")
	})
	if !strings.Contains(srvLog.String(), "pc2-keep") {
		t.Errorf("the host name did not reach the server")
	}

	stop()
	_, stop2 := p.Dnsmasq(t, "192.0.2.100", "192.0.2.109")
	var second string
	testenv.WaitFor(t, 30*time.Second, "the new lease applied", func() bool {
		second = leased(netip.MustParsePrefix("192.0.2.96/28"))
		return applied(second)
	})
	if slices.Contains(addrs(), first) {
		t.Errorf("the refused address %s is still on veth0: %q", first, addrs())
	}

	// The interface goes away (an adapter pulled out): the lease goes
	// with it; when it is back, a new client leases it again.
	stop2()
	p.Unlink(t)
	testenv.WaitFor(t, 30*time.Second, "the lease dropped", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := held["veth0"]
		return !ok
	})
	p.Link(t)
	p.Dnsmasq(t, "192.0.2.100", "192.0.2.109")
	if dev, err = h.LinkByName("veth0"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "a lease on the new interface", func() bool {
		return applied(leased(netip.MustParsePrefix("192.0.2.96/28")))
	})
}
