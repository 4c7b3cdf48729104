package relay

import (
	"io"
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// StreamConn makes a stream a net.Conn (for http.Server and
// http.Transport); the addresses name the peers.
type StreamConn struct {
	network.Stream
}

// LocalAddr implements net.Conn.
func (c StreamConn) LocalAddr() net.Addr { return PeerAddr(c.Conn().LocalPeer()) }

// RemoteAddr implements net.Conn.
func (c StreamConn) RemoteAddr() net.Addr { return PeerAddr(c.Conn().RemotePeer()) }

// PeerAddr is a libp2p peer as a net.Addr.
type PeerAddr peer.ID

// Network implements net.Addr.
func (a PeerAddr) Network() string { return "libp2p" }

// String implements net.Addr.
func (a PeerAddr) String() string { return peer.ID(a).String() }

// halfCloser can end its write direction.
type halfCloser interface{ CloseWrite() error }

// Splice copies both ways between a and b until both directions end,
// passing each EOF on as a half-close.
func Splice(a, b io.ReadWriter) {
	var wg sync.WaitGroup
	cp := func(dst, src io.ReadWriter) {
		defer wg.Done()
		io.Copy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
