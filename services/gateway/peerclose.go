package gateway

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// whileOpen returns a context that ends when the client closes c (EOF or
// a reset), for a wait in line before anything is written to c: a
// spliced TLS connection waits there after its ClientHello, when a client
// sends nothing until the ServerHello, and one that gives up must leave
// the line at once rather than hold its place for QueueWait. It looks
// without reading (MSG_PEEK), so the bytes stay for whoever reads c next;
// should the client send any, it stops looking (the context then ends
// only with stop). stop ends the watch and must be called before c is
// used again. Connections that are not sockets are not watched.
func whileOpen(parent context.Context, c net.Conn) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ctx, cancel
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ctx, cancel
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		closed := false
		// rc.Read waits (in the runtime's poller) until c is readable,
		// or its read deadline passes.
		err := rc.Read(func(fd uintptr) bool {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				return false // not readable yet: wait
			}
			closed = err != nil || n == 0
			return true
		})
		if closed && err == nil {
			cancel()
		}
	}()
	return ctx, func() {
		c.SetReadDeadline(time.Unix(1, 0)) // wakes the watch
		<-done
		c.SetReadDeadline(time.Time{})
		cancel()
	}
}
