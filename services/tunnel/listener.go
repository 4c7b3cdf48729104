package tunnel

import (
	"context"
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/services/relay"
)

// streamListener hands streams to an http.Server as connections.
type streamListener struct {
	addr  relay.PeerAddr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newStreamListener(self peer.ID) *streamListener {
	return &streamListener{addr: relay.PeerAddr(self), conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver passes c to Accept; false when the listener is closed.
func (l *streamListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.addr }

// DirectListener serves /pc2/http/1 streams on h without a tunnel from
// the peers allow accepts (the gateways of the node's domain): a node in
// direct mode, which attaches nowhere, is reached by gateways this way.
// Close removes the handler.
func DirectListener(h host.Host, allow func(context.Context, peer.ID) bool) net.Listener {
	l := newStreamListener(h.ID())
	h.SetStreamHandler(relay.ProtocolHTTP, func(st network.Stream) {
		if !allowedGateway(allow, st.Conn().RemotePeer()) || !l.deliver(relay.StreamConn{Stream: st}) {
			st.Reset()
		}
	})
	return &directListener{streamListener: l, h: h}
}

type directListener struct {
	*streamListener
	h host.Host
}

func (l *directListener) Close() error {
	l.h.RemoveStreamHandler(relay.ProtocolHTTP)
	return l.streamListener.Close()
}
