package chanlisten

import (
	"errors"
	"net"
	"testing"
)

func TestListener(t *testing.T) {
	l := New(&net.TCPAddr{})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go l.Deliver(a)
	if c, err := l.Accept(); err != nil || c != a {
		t.Fatalf("Accept = %v, %v", c, err)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if l.Deliver(b) {
		t.Error("Deliver after Close took the connection")
	}
	l.Close() // twice is fine
}
