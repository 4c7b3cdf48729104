//go:build !linux

package tunnel

import "net/netip"

// routeLinkDown is the default Config.LinkDown where the routing table is
// not read: never down.
func routeLinkDown(netip.Addr) bool { return false }
