package gateway

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestWhileOpen: the context ends when the client closes its
// connection; bytes the client sent stay for the next reader, and stop
// ends the watch on a connection still open.
func TestWhileOpen(t *testing.T) {
	pair := func() (client, server net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		client, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); server.Close() })
		return client, server
	}

	client, server := pair()
	ctx, stop := whileOpen(context.Background(), server)
	select {
	case <-ctx.Done():
		t.Fatal("ended while the client is there")
	case <-time.After(100 * time.Millisecond):
	}
	client.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client closed, the context goes on")
	}
	stop()

	client, server = pair()
	ctx, stop = whileOpen(context.Background(), server)
	client.Write([]byte("hi"))
	time.Sleep(100 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("ended when the client sent bytes")
	}
	stop()
	b := make([]byte, 2)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, b); err != nil || string(b) != "hi" {
		t.Fatalf("after the watch: %q %v, want the client's bytes", b, err)
	}

	// stop on a quiet connection returns, and leaves it usable.
	client, server = pair()
	_, stop = whileOpen(context.Background(), server)
	stop()
	client.Write([]byte("x"))
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, b[:1]); err != nil || b[0] != 'x' {
		t.Fatalf("after stop: %q %v", b[:1], err)
	}
}
