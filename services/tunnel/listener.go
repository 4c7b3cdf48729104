package tunnel

import (
	"context"
	"net"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/internal/chanlisten"
	"github.com/pc2/pc2/services/relay"
)

// DirectListener serves proto streams (relay.ProtocolHTTP or
// relay.ProtocolTLS) on h without a tunnel from the peers allow accepts
// (the gateways of the node's domain): a node in direct mode, which
// attaches nowhere, is reached by gateways this way. Close removes the
// handler.
func DirectListener(h host.Host, proto protocol.ID, allow func(context.Context, peer.ID) bool) net.Listener {
	l := chanlisten.New(relay.PeerAddr(h.ID()))
	h.SetStreamHandler(proto, func(st network.Stream) {
		if !allowedGateway(allow, st.Conn().RemotePeer()) || !l.Deliver(relay.StreamConn{Stream: st}) {
			st.Reset()
		}
	})
	return &directListener{Listener: l, h: h, proto: proto}
}

type directListener struct {
	*chanlisten.Listener
	h     host.Host
	proto protocol.ID
}

func (l *directListener) Close() error {
	l.h.RemoveStreamHandler(l.proto)
	return l.Listener.Close()
}
