// Package netaddr classifies IP addresses for limits and dial policies:
// which client a per-client limit counts (ClientKey) and whether an
// address is public (Public); and the one form of a host name
// (CanonicalHost).
package netaddr

import (
	"net"
	"net/netip"
	"strings"
)

// ClientKey is the limit key of the client at address addr: the IPv4
// address (an IPv4-mapped IPv6 address counts as IPv4), the IPv6 /64
// prefix, or addr itself when it is not an IP address (clients without
// one share that key). One home or one VPS gets a /64 (or more) of IPv6
// addresses, so counting single IPv6 addresses would give a guesser
// billions of fresh buckets.
func ClientKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

// Host is the host part of addr ("host:port", as net.Addr.String and
// http.Request.RemoteAddr give it), or addr when it has no port.
func Host(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// Public reports whether a is a public unicast address: not loopback,
// private (RFC 1918, fc00::/7), link-local, multicast, unspecified, nor
// in a special-purpose range (RFC 6890) such as shared CGNAT space.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// nonPublic are special-purpose ranges (RFC 6890) that IsGlobalUnicast and
// IsPrivate let through.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (CGNAT)
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved
}

// CanonicalHost lowercases h (a Host header or a TLS server name),
// drops a port and a trailing dot, and checks that what is left is a DNS
// name (false if not).
func CanonicalHost(h string) (string, bool) {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" || len(h) > 253 {
		return "", false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", false
			}
		}
	}
	return h, true
}
