package netaddr

import (
	"net/netip"
	"testing"
)

func TestClientKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"198.51.100.7", "198.51.100.7"},
		{"::ffff:198.51.100.7", "198.51.100.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"relayed", "relayed"},
		{"", ""},
	} {
		if got := ClientKey(c.in); got != c.want {
			t.Errorf("ClientKey(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestPublic(t *testing.T) {
	for in, want := range map[string]bool{
		"203.0.113.7": true, "8.8.8.8": true, "2001:4860::8888": true, "::ffff:8.8.8.8": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "169.254.1.1": false,
		"100.64.0.1": false, "100.127.255.254": false, "0.0.0.0": false, "0.1.2.3": false, "224.0.0.1": false,
		"::1": false, "fe80::1": false, "fd00::1": false, "::": false, "::ffff:127.0.0.1": false,
	} {
		if got := Public(netip.MustParseAddr(in)); got != want {
			t.Errorf("Public(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestHost(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1:80": "192.0.2.1", "[2001:db8::1]:443": "2001:db8::1", "192.0.2.1": "192.0.2.1", "pipe": "pipe"} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
}
