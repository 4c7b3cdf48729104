package dht

import (
	"net/netip"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/pc2/pc2/internal/netaddr"
)

// publicDials is the connection gater of a host that dials only public
// addresses (Config.PublicDialsOnly). Addresses come from records anyone
// may publish (a did record's direct addresses, its supernodes) and from
// what peers announce; a supernode that dialled them as given would
// probe its own loopback, LAN and provider network for whoever asks. DNS
// names are resolved before the gater sees them.
type publicDials struct{}

func (publicDials) InterceptPeerDial(peer.ID) bool { return true }

func (publicDials) InterceptAddrDial(_ peer.ID, m ma.Multiaddr) bool {
	ip, err := manet.ToIP(m)
	if err != nil {
		return false // no IP after resolution: nothing we know to be public
	}
	a, ok := netip.AddrFromSlice(ip)
	return ok && netaddr.Public(a)
}

func (publicDials) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (publicDials) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}

func (publicDials) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
