// Package echotest is the TCP echo service that tests expose through
// relays and tunnels: every byte a client sends comes back.
package echotest

import (
	"io"
	"net"
	"testing"
)

// Serve echoes every connection ln accepts until ln is closed.
func Serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

// Start runs an echo service on loopback for the test's lifetime and
// returns its address.
func Start(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go Serve(ln)
	return ln.Addr().String()
}
