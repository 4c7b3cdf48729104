// Package clientaddr names the client that per-client limits count: an
// IPv4 address, or an IPv6 /64. One home or one VPS gets a /64 (or more)
// of IPv6 addresses, so counting single IPv6 addresses would give a
// guesser billions of fresh buckets.
package clientaddr

import "net/netip"

// Key is the limit key of the client at address addr: the IPv4 address
// (an IPv4-mapped IPv6 address counts as IPv4), the IPv6 /64 prefix, or
// addr itself when it is not an IP address (clients without one share
// that key).
func Key(addr string) string {
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
