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

// Splice's copy buffers: 32 KiB (io.Copy's), and 256 KiB for a
// direction whose reads fill half of the small one (a bulk transfer:
// fewer system calls on the TCP side of a relayed stream, 16 % more of
// one stream's throughput: docs/benchmarks.md, "The real path"). A read
// under 4 KiB gives the big one back, so the many idle or interactive
// connections of a gateway or relay hold small buffers only.
const (
	smallSplice = 32 << 10
	bigSplice   = 256 << 10
)

var (
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, smallSplice); return &b }}
	bigBuffers   = sync.Pool{New: func() any { b := make([]byte, bigSplice); return &b }}
)

// spliceCopy copies src to dst until src ends or a write fails, in
// buffers that grow for bulk transfers and shrink when they stop.
func spliceCopy(dst io.Writer, src io.Reader) {
	small := smallBuffers.Get().(*[]byte)
	defer smallBuffers.Put(small)
	var big *[]byte
	defer func() {
		if big != nil {
			bigBuffers.Put(big)
		}
	}()
	buf := *small
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			switch {
			case n >= smallSplice/2 && big == nil:
				big = bigBuffers.Get().(*[]byte)
				buf = *big
			case n < smallSplice/8 && big != nil:
				bigBuffers.Put(big)
				big, buf = nil, *small
			}
		}
		if err != nil {
			return
		}
	}
}

// Splice copies both ways between a and b until both directions end,
// passing each EOF on as a half-close.
func Splice(a, b io.ReadWriter) {
	var wg sync.WaitGroup
	cp := func(dst, src io.ReadWriter) {
		defer wg.Done()
		spliceCopy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
