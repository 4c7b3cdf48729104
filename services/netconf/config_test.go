package netconf

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestZeroConfigIsValid(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: got %v, want nil", err)
	}
	cfg, err := Parse([]byte(`{}`))
	if err != nil {
		t.Fatalf("Parse({}): %v", err)
	}
	if !reflect.DeepEqual(cfg, Config{}) {
		t.Fatalf("Parse({}) = %+v, want zero Config", cfg)
	}
}

func TestParseStatic(t *testing.T) {
	const settings = `{
		"interfaces": [{
			"name": "eth0",
			"mode": "static",
			"addresses": ["192.168.1.10/24", "2001:db8::10/64"],
			"gateway4": "192.168.1.1",
			"gateway6": "fe80::1",
			"routes": [{"to": "10.20.0.0/16", "via": "192.168.1.254", "metric": 10}],
			"dns": ["192.168.1.1", "2001:db8::53"],
			"search": ["home.arpa"],
			"mtu": 1500
		}, {
			"name": "wlan0"
		}]
	}`
	cfg, err := Parse([]byte(settings))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{Interfaces: []Interface{{
		Name:      "eth0",
		Mode:      ModeStatic,
		Addresses: []string{"192.168.1.10/24", "2001:db8::10/64"},
		Gateway4:  "192.168.1.1",
		Gateway6:  "fe80::1",
		Routes:    []Route{{To: "10.20.0.0/16", Via: "192.168.1.254", Metric: 10}},
		DNS:       []string{"192.168.1.1", "2001:db8::53"},
		Search:    []string{"home.arpa"},
		MTU:       1500,
	}, {Name: "wlan0"}}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Parse:\n got %+v\nwant %+v", cfg, want)
	}

	// The JSON form round-trips, so the settings file can be rewritten.
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal(cfg)): %v", err)
	}
	if !reflect.DeepEqual(again, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", again, want)
	}

	p, err := cfg.compile()
	if err != nil {
		t.Fatal(err)
	}
	got := p.ifaces[0].routes
	wantRoutes := []routePlan{
		{dst: netip.MustParsePrefix("0.0.0.0/0"), gw: netip.MustParseAddr("192.168.1.1")},
		{dst: netip.MustParsePrefix("::/0"), gw: netip.MustParseAddr("fe80::1"), metric: Gateway6Metric},
		{dst: netip.MustParsePrefix("10.20.0.0/16"), gw: netip.MustParseAddr("192.168.1.254"), metric: 10},
	}
	if !reflect.DeepEqual(got, wantRoutes) {
		t.Fatalf("routes:\n got %+v\nwant %+v", got, wantRoutes)
	}
	if p.ifaces[1].mode != ModeDHCP {
		t.Errorf("wlan0 mode: got %q, want %q", p.ifaces[1].mode, ModeDHCP)
	}
}

func TestValidateErrors(t *testing.T) {
	static := func(mod func(*Interface)) Config {
		in := Interface{Name: "eth0", Mode: ModeStatic, Addresses: []string{"10.0.0.2/24"}}
		mod(&in)
		return Config{Interfaces: []Interface{in}}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error
	}{
		{"unknown mode", static(func(in *Interface) { in.Mode = "manual" }),
			`netconf: interface eth0: unknown mode "manual" (want "dhcp" or "static")`},
		{"duplicate interface", Config{Interfaces: []Interface{{Name: "eth0"}, {Name: "eth0"}}},
			"netconf: interface eth0: duplicate interface"},
		{"two unnamed", Config{Interfaces: []Interface{{}, {}}},
			"more than one interface without a name"},
		{"bad name", Config{Interfaces: []Interface{{Name: "eth/0"}}},
			`invalid character '/'`},
		{"long name", Config{Interfaces: []Interface{{Name: "abcdefghijklmnop"}}},
			"longer than 15 bytes"},
		{"bad CIDR", static(func(in *Interface) { in.Addresses = []string{"10.0.0.300/24"} }),
			`netconf: interface eth0: address "10.0.0.300/24": not a CIDR address`},
		{"missing prefix length", static(func(in *Interface) { in.Addresses = []string{"10.0.0.2"} }),
			"missing prefix length"},
		{"network address", static(func(in *Interface) { in.Addresses = []string{"10.0.0.0/24"} }),
			"network address of 10.0.0.0/24"},
		{"broadcast address", static(func(in *Interface) { in.Addresses = []string{"10.0.0.255/24"} }),
			"broadcast address of 10.0.0.0/24"},
		{"static without address", static(func(in *Interface) { in.Addresses = nil }),
			"mode static needs at least one address"},
		{"dhcp with address", Config{Interfaces: []Interface{{Name: "eth0", Addresses: []string{"10.0.0.2/24"}}}},
			`addresses, gateways and routes need mode "static"`},
		{"duplicate address", Config{Interfaces: []Interface{
			{Name: "eth0", Mode: ModeStatic, Addresses: []string{"10.0.0.2/24"}},
			{Name: "eth1", Mode: ModeStatic, Addresses: []string{"10.0.0.2/16"}},
		}}, "address 10.0.0.2 already configured on eth0"},
		{"gateway not on-link", static(func(in *Interface) { in.Gateway4 = "10.0.1.1" }),
			"netconf: interface eth0: gateway4 10.0.1.1: not on-link"},
		{"gateway4 is IPv6", static(func(in *Interface) { in.Gateway4 = "fd00::1" }),
			"not an IPv4 address"},
		{"gateway6 without IPv6 address", static(func(in *Interface) { in.Gateway6 = "fd00::1" }),
			"gateway6 fd00::1: not on-link"},
		{"gateway is own address", static(func(in *Interface) { in.Gateway4 = "10.0.0.2" }),
			"is the interface's own address"},
		{"route bad CIDR", static(func(in *Interface) { in.Routes = []Route{{To: "10.20.0.0"}} }),
			`route to "10.20.0.0": not a CIDR network`},
		{"route host bits", static(func(in *Interface) { in.Routes = []Route{{To: "10.20.0.1/16"}} }),
			"did you mean 10.20.0.0/16?"},
		{"route via not on-link", static(func(in *Interface) { in.Routes = []Route{{To: "10.20.0.0/16", Via: "10.9.0.1"}} }),
			"via 10.9.0.1: not on-link"},
		{"route family mismatch", static(func(in *Interface) { in.Routes = []Route{{To: "10.20.0.0/16", Via: "fe80::1"}} }),
			"not an IPv4 address"},
		{"route twice", static(func(in *Interface) {
			in.Gateway4 = "10.0.0.1"
			in.Routes = []Route{{To: "0.0.0.0/0", Via: "10.0.0.3"}}
		}), "listed twice"},
		{"bad DNS", Config{Interfaces: []Interface{{Name: "eth0", DNS: []string{"dns.example"}}}},
			`DNS server "dns.example": not an IP address`},
		{"too many DNS", Config{Interfaces: []Interface{{Name: "eth0", DNS: []string{"1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"}}}},
			"4 DNS servers configured, resolv.conf supports at most 3"},
		{"bad search domain", Config{Interfaces: []Interface{{Name: "eth0", DNS: []string{"1.1.1.1"}, Search: []string{"a b"}}}},
			`search domain "a b": invalid character ' '`},
		{"search without DNS", Config{Interfaces: []Interface{{Name: "eth0", Search: []string{"home.arpa"}}}},
			"search domains need at least one DNS server"},
		{"MTU too small", Config{Interfaces: []Interface{{Name: "eth0", MTU: 60}}},
			"MTU 60 out of range"},
		{"MTU too small for IPv6", static(func(in *Interface) {
			in.Addresses = []string{"fd00::2/64"}
			in.MTU = 1000
		}), "below IPv6's minimum 1280"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil {
				t.Fatalf("Validate: got nil, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate:\n got %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"interfaces":[{"name":"eth0","adresses":["10.0.0.2/24"]}]}`, `unknown field "adresses"`},
		{`{"interfaces":[]} {}`, "trailing data"},
		{`{"interfaces":[{"name":"eth0","mtu":"big"}]}`, "parse config"},
		{`{"interfaces":[{"name":"eth0","mode":"STATIC"}]}`, "unknown mode"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s): got %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, in := range []Interface{
		{Name: "eth0", Mode: ModeStatic, Addresses: []string{"10.0.0.2/31"}, Gateway4: "10.0.0.3"},
		{Name: "eth0", Mode: ModeStatic, Addresses: []string{"192.0.2.7/32"}},
		{Name: "eth0", Mode: ModeStatic, Addresses: []string{"2001:db8::2/64"}, Gateway6: "fe80::1",
			Routes: []Route{{To: "2001:db8:1::/48"}, {To: "2001:db8:2::/48", Via: "2001:db8::1", Metric: 5}}},
		{Name: "eth0", DNS: []string{"fe80::1%eth0"}, Search: []string{"Home.Arpa."}},
		{Mode: ModeStatic, Addresses: []string{"10.0.0.2/24"}},
	} {
		if err := (Config{Interfaces: []Interface{in}}).Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", in, err)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for pfx, want := range map[string]string{
		"10.0.0.0/24":   "10.0.0.255",
		"10.0.0.0/8":    "10.255.255.255",
		"10.0.0.128/25": "10.0.0.255",
		"10.0.0.0/30":   "10.0.0.3",
	} {
		if got := lastAddr(netip.MustParsePrefix(pfx)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", pfx, got, want)
		}
	}
}

func TestResolvConfContent(t *testing.T) {
	cfg := Config{Interfaces: []Interface{
		{Name: "eth0", DNS: []string{"10.0.0.53", "fd00::53"}, Search: []string{"Example.Internal.", "lan"}},
		{Name: "eth1", DNS: []string{"10.0.0.53"}, Search: []string{"lan"}},
	}}
	p, err := cfg.compile()
	if err != nil {
		t.Fatal(err)
	}
	got := string(resolvConfContent(p))
	want := resolvConfMarker + " from the device settings; changes here are overwritten.\n" +
		"nameserver 10.0.0.53\n" +
		"nameserver fd00::53\n" +
		"search example.internal lan\n"
	if got != want {
		t.Fatalf("resolv.conf:\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(got, "generated by") {
		t.Fatalf("resolv.conf lacks the marker that keeps gokrazy's DHCP client away")
	}
}

// TestResolvConfReplacesSymlink mirrors gokrazy at boot, where
// /tmp/resolv.conf is a symlink to /proc/net/pnp: netconf replaces the
// link, never writes through it.
func TestResolvConfReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "pnp")
	if err := os.WriteFile(target, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	m := &Manager{resolvConf: path}
	cfg := Config{Interfaces: []Interface{{Name: "eth0", DNS: []string{"10.0.0.53"}}}}
	p, err := cfg.compile()
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{m: m, ctx: context.Background()}
	if err := a.resolvConf(p); err != nil {
		t.Fatal(err)
	}
	if len(a.changes) != 1 || a.changes[0].Kind != ChangeResolvConf {
		t.Fatalf("changes: got %v, want one %q", a.changes, ChangeResolvConf)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("%s: got mode %v, want a regular file with 0644", path, fi.Mode())
	}
	if b, _ := os.ReadFile(target); string(b) != "nameserver 192.0.2.1\n" {
		t.Fatalf("symlink target was modified: %q", b)
	}

	// Without DNS servers netconf removes its own file, but leaves others.
	a = &applier{m: m, ctx: context.Background()}
	if err := a.resolvConf(plan{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("after removing DNS servers: Lstat(%s) = %v, want not exist", path, err)
	}
	if err := os.WriteFile(path, []byte("# generated by gokrazy/dhcp\nnameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a = &applier{m: m, ctx: context.Background()}
	if err := a.resolvConf(plan{}); err != nil {
		t.Fatal(err)
	}
	if len(a.changes) != 0 {
		t.Fatalf("DHCP's resolv.conf: got changes %v, want none", a.changes)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"interfaces":[{"name":"eth0"}]}`,
		`{"interfaces":[{"name":"eth0","mode":"static","addresses":["10.0.0.2/24","fd00::2/64"],"gateway4":"10.0.0.1","gateway6":"fe80::1","routes":[{"to":"10.1.0.0/16","via":"10.0.0.254"}],"dns":["10.0.0.1"],"search":["lan"],"mtu":1500}]}`,
		`{"interfaces":[{"mode":"static","addresses":["10.0.0.2/31"],"gateway4":"10.0.0.3"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip unchanged (compared
		// as JSON: omitempty turns empty lists into absent ones).
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(%+v)): %v", cfg, err)
		}
		b2, err := json.Marshal(again)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if string(b) != string(b2) {
			t.Fatalf("round trip: got %s, want %s", b2, b)
		}
	})
}
