package testenv

import (
	"context"
	"net"
	"testing"
	"time"
)

// Context returns a context that ends after d or with the test, whichever
// comes first: the bound of a test's network waits.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ListenUDP opens a loopback IPv4 UDP socket, closed when the test ends.
func ListenUDP(t testing.TB) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listen UDP: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
