package prefixconn

import (
	"io"
	"net"
	"testing"
)

// TestPrefixFirst: the prefix comes out first, in reads of any size, then
// the connection's own bytes.
func TestPrefixFirst(t *testing.T) {
	a, b := net.Pipe()
	go func() { a.Write([]byte(" world")); a.Close() }()
	c := New(b, []byte("hello"))
	buf := make([]byte, 3)
	n, _ := c.Read(buf)
	if string(buf[:n]) != "hel" {
		t.Fatalf("first read %q", buf[:n])
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "lo world" {
		t.Fatalf("rest %q %v", rest, err)
	}
}
