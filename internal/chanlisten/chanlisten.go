// Package chanlisten is a net.Listener fed by its owner: connections that
// arrive some other way than a socket's accept (libp2p streams, TLS
// connections the gateway's SNI router passes on) are handed to an
// http.Server this way.
package chanlisten

import (
	"net"
	"sync"
)

// Listener hands the connections given to Deliver to Accept.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// New returns a listener that reports addr as its address.
func New(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Deliver waits until Accept takes c; false when the listener is closed
// (c is then the caller's to close).
func (l *Listener) Deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept returns the next delivered connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept and Deliver.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address given to New.
func (l *Listener) Addr() net.Addr { return l.addr }
