package sni

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/tlstest"
)

// clientHello is the first flight of a Go TLS client asking for name.
func clientHello(t testing.TB, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{ServerName: name, InsecureSkipVerify: name == "", NextProtos: []string{"h2", "http/1.1"}}).Handshake()
	}()
	// One ClientHello: the record header says how long it is.
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return append(hdr, body...)
}

// peekBytes runs Peek on a connection whose peer writes data (in the
// given pieces) and then waits.
func peekBytes(t *testing.T, pieces [][]byte, max int, timeout time.Duration) (*Hello, net.Conn, error) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() {
		for _, p := range pieces {
			if _, err := a.Write(p); err != nil {
				return
			}
		}
	}()
	return Peek(b, max, timeout)
}

func selfSigned(t *testing.T, name string) tls.Certificate {
	cert, _ := tlstest.SelfSigned(t, name)
	return cert
}

// TestPeekThenTerminate: a real client's handshake completes through a
// server that peeked first: the replayed bytes are the client's.
func TestPeekThenTerminate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert := selfSigned(t, "alice.pc2.test")
	got := make(chan *Hello, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h, replay, err := Peek(c, 0, 0)
		if err != nil {
			c.Close()
			got <- nil
			return
		}
		got <- h
		srv := tls.Server(replay, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
		io.Copy(srv, srv)
		srv.Close()
	}()
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "Alice.PC2.test", RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatalf("handshake through the peek: %v", err)
	}
	defer c.Close()
	if h := <-got; h == nil || h.ServerName != "alice.pc2.test" || len(h.ALPN) != 2 || h.ALPN[0] != "h2" {
		t.Fatalf("peeked %+v", h)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("ALPN %q after the peek", p)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

// TestPeekFragmented: a ClientHello split over several records, and
// written a byte at a time, still gives its name.
func TestPeekFragmented(t *testing.T) {
	hello := clientHello(t, "bob.pc2.test")
	body := hello[5:]
	var recs []byte
	for i := 0; i < len(body); i += 100 {
		end := min(i+100, len(body))
		recs = append(recs, 22, 3, 1, byte((end-i)>>8), byte(end-i))
		recs = append(recs, body[i:end]...)
	}
	var pieces [][]byte
	for _, b := range recs {
		pieces = append(pieces, []byte{b})
	}
	h, replay, err := peekBytes(t, pieces, 0, 5*time.Second)
	if err != nil || h.ServerName != "bob.pc2.test" {
		t.Fatalf("fragmented hello: %+v %v", h, err)
	}
	// The replay starts with exactly the bytes read.
	got := make([]byte, len(recs))
	if _, err := io.ReadFull(replay, got); err != nil || !bytes.Equal(got, recs) {
		t.Fatalf("replay: %v, equal %v", err, bytes.Equal(got, recs))
	}
}

func TestPeekRefusals(t *testing.T) {
	t.Run("no SNI", func(t *testing.T) {
		if _, _, err := peekBytes(t, [][]byte{clientHello(t, "")}, 0, 5*time.Second); !errors.Is(err, ErrNoServerName) {
			t.Errorf("got %v, want ErrNoServerName", err)
		}
	})
	t.Run("plain HTTP", func(t *testing.T) {
		if _, _, err := peekBytes(t, [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")}, 0, 5*time.Second); !errors.Is(err, ErrNotTLS) {
			t.Errorf("got %v, want ErrNotTLS", err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		// A handshake record that claims 16 KiB, then more records.
		rec := append([]byte{22, 3, 1, 0x40, 0x00, 1, 0, 0xff, 0xff}, make([]byte, 16<<10)...)
		if _, _, err := peekBytes(t, [][]byte{rec, rec}, 4096, 5*time.Second); !errors.Is(err, ErrTooLarge) {
			t.Errorf("got %v, want ErrTooLarge", err)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		start := time.Now()
		_, _, err := peekBytes(t, [][]byte{{22, 3, 1}}, 0, 300*time.Millisecond)
		if err == nil || time.Since(start) > 5*time.Second {
			t.Errorf("a stalled hello: %v after %v", err, time.Since(start))
		}
	})
	t.Run("garbage", func(t *testing.T) {
		if _, _, err := peekBytes(t, [][]byte{{22, 3, 1, 0, 5, 1, 2, 3, 4, 5}}, 0, time.Second); !errors.Is(err, ErrNotTLS) {
			t.Errorf("got %v, want ErrNotTLS", err)
		}
	})
}

// FuzzPeek: any bytes give a hello or an error, never a panic, within
// the limits; an accepted hello replays what was read.
func FuzzPeek(f *testing.F) {
	f.Add(clientHello(f, "alice.pc2.test"))
	f.Add(clientHello(f, ""))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, replay, err := Peek(&memConn{r: bytes.NewReader(data)}, 4096, time.Second)
		if err != nil {
			if h != nil && !errors.Is(err, ErrNoServerName) {
				t.Fatalf("a hello and an error %v", err)
			}
			return
		}
		if h.ServerName == "" {
			t.Fatal("accepted without a server name")
		}
		got, _ := io.ReadAll(io.LimitReader(replay, int64(len(data))))
		if !bytes.HasPrefix(data, got) || len(got) == 0 {
			t.Fatalf("replay %x is not a prefix of the input", got)
		}
	})
}

// memConn is a connection whose peer sent data and then closed.
type memConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) Close() error                     { return nil }
