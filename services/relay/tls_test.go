package relay

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// headerPipe writes b to one end of a pipe and returns the other.
func headerPipe(t *testing.T, b []byte) net.Conn {
	t.Helper()
	a, z := net.Pipe()
	go func() {
		a.Write(b)
		// The rest of the "stream": what a node reads after the header.
		a.Write([]byte("after"))
		a.Close()
	}()
	t.Cleanup(func() { z.Close() })
	return z
}

// TestTLSHeader: the header round-trips (the visitor's address, the
// server name, the ACME flag), the connection returned reads on after it
// (bytes read past the header included) and says the visitor is its
// remote end.
func TestTLSHeader(t *testing.T) {
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 51234}
	gw := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}
	for _, h := range []TLSHeader{
		{Client: client, Gateway: gw, ServerName: "alice.ela.city"},
		{Client: &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 1}, Gateway: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443},
			ServerName: "bob.ela.city", ACME: true},
	} {
		var b bytes.Buffer
		if err := WriteTLSHeader(&b, h); err != nil {
			t.Fatal(err)
		}
		got, c, err := ReadTLSHeader(headerPipe(t, b.Bytes()), time.Second)
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		if got.ServerName != h.ServerName || got.ACME != h.ACME || got.Client.String() != h.Client.String() || got.Gateway.String() != h.Gateway.String() {
			t.Fatalf("read %+v, wrote %+v", got, h)
		}
		if c.RemoteAddr().String() != h.Client.String() {
			t.Fatalf("remote address %v, want the visitor's %v", c.RemoteAddr(), h.Client)
		}
		if rest, _ := io.ReadAll(c); string(rest) != "after" {
			t.Fatalf("after the header: %q", rest)
		}
	}
}

// TestTLSHeaderRefused: what is not our header is an error, never a
// connection: plain bytes, PROXY v1, v2 LOCAL (no addresses), a header
// without a server name, UDP, an oversized header, and a peer that sends
// nothing (the timeout).
func TestTLSHeaderRefused(t *testing.T) {
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 51234}
	gw := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}
	v2 := func(edit func(*proxyproto.Header)) []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, client, gw)
		edit(h)
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	udp := proxyproto.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: client.IP, Port: 1}, &net.UDPAddr{IP: gw.IP, Port: 2})
	udp.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("alice.ela.city")}})
	udpBytes, _ := udp.Format()
	for name, in := range map[string][]byte{
		"TLS without a header": {22, 3, 1, 0, 5},
		"PROXY v1":             []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"),
		"v2 LOCAL":             v2(func(h *proxyproto.Header) { h.Command = proxyproto.LOCAL }),
		"no server name":       v2(func(*proxyproto.Header) {}),
		"UDP":                  udpBytes,
		"oversized": v2(func(h *proxyproto.Header) {
			h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(strings.Repeat("a", 4000))}})
		}),
	} {
		if h, c, err := ReadTLSHeader(headerPipe(t, in), time.Second); err == nil {
			t.Errorf("%s: read %+v (%v), want an error", name, h, c)
		}
	}
	a, z := net.Pipe()
	defer a.Close()
	start := time.Now()
	if _, _, err := ReadTLSHeader(z, 100*time.Millisecond); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a peer that sends nothing: %v after %v", err, time.Since(start))
	}
}

// FuzzReadTLSHeader: a node reads the header of every spliced stream its
// supernodes and gateways open; whatever the bytes, it returns a header
// with a server name or an error, and never panics.
func FuzzReadTLSHeader(f *testing.F) {
	var b bytes.Buffer
	WriteTLSHeader(&b, TLSHeader{Client: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1},
		Gateway: &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}, ServerName: "alice.ela.city", ACME: true})
	f.Add(b.Bytes())
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
	f.Add(b.Bytes()[:20])
	f.Fuzz(func(t *testing.T, in []byte) {
		a, z := net.Pipe()
		go func() { a.Write(in); a.Close() }()
		defer z.Close()
		h, _, err := ReadTLSHeader(z, time.Second)
		if err == nil && (h.ServerName == "" || h.Client == nil) {
			t.Fatalf("accepted %+v", h)
		}
	})
}
