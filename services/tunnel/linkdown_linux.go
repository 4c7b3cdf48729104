package tunnel

import (
	"net/netip"

	"github.com/vishvananda/netlink"
)

// routeLinkDown is the default Config.LinkDown: the device the kernel
// routes dst out of has lost its carrier (a cable out, Wi-Fi gone, the
// line down), while its addresses and routes stay.
func routeLinkDown(dst netip.Addr) bool {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return false
	}
	for _, r := range routes {
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			return false
		}
		if s := l.Attrs().OperState; s == netlink.OperUp || s == netlink.OperUnknown {
			return false
		}
	}
	return true
}
