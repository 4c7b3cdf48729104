// Package sni reads the server name of a TLS connection without
// terminating it: the gateway on port 443 routes each connection by the
// name the client asks for (to its own TLS termination, or, raw, to a
// node that holds its own certificate). The ClientHello is parsed by
// crypto/tls itself (a server handshake that stops at the hello), over
// a reader that records what it reads, bounded in size and time; the
// connection Peek returns replays those bytes first.
package sni

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/pc2/pc2/internal/prefixconn"
)

// Errors of Peek. A connection that gets one is the caller's to close.
var (
	// ErrNoServerName: a ClientHello without SNI (an IP address typed in
	// the browser, a scanner).
	ErrNoServerName = errors.New("sni: the client named no server")
	// ErrNotTLS: the first bytes are not a TLS handshake.
	ErrNotTLS = errors.New("sni: not a TLS ClientHello")
	// ErrTooLarge: the ClientHello is longer than the limit.
	ErrTooLarge = errors.New("sni: ClientHello too large")
)

// Limits of Peek's zero values.
const (
	// DefaultMaxHello bounds the bytes read for a ClientHello: browsers
	// send under 2 KB (with post-quantum key shares), and TLS allows a
	// hello in several records, which this covers.
	DefaultMaxHello = 16 << 10
	// DefaultTimeout bounds the time the client takes to send it.
	DefaultTimeout = 10 * time.Second
)

// Hello is what Peek learned of a ClientHello.
type Hello struct {
	ServerName string   // lower case, without a trailing dot
	ALPN       []string // the protocols the client offers
	// Raw are the bytes read from the connection (the ClientHello's
	// records), which the returned connection replays: a caller that
	// passes the connection on raw sends these first.
	Raw []byte
}

// errStop ends the server handshake once the hello is parsed.
var errStop = errors.New("sni: hello read")

// Peek reads c's ClientHello (at most maxHello bytes, 0: DefaultMaxHello;
// within timeout, 0: DefaultTimeout) and returns what it says and a
// connection that yields the same bytes from the start. Peek does not
// write to c.
func Peek(c net.Conn, maxHello int, timeout time.Duration) (*Hello, net.Conn, error) {
	if maxHello <= 0 {
		maxHello = DefaultMaxHello
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, err
	}
	rec := &recorder{r: c, max: maxHello}
	// The first byte says whether this is a TLS handshake record at all:
	// crypto/tls would answer a plain HTTP request with a record of its
	// own, and Peek writes nothing.
	var first [1]byte
	if _, err := io.ReadFull(rec, first[:]); err != nil {
		return nil, nil, fmt.Errorf("sni: %w", err)
	}
	if first[0] != 22 { // handshake
		return nil, nil, ErrNotTLS
	}
	var hello *tls.ClientHelloInfo
	srv := tls.Server(&readOnly{Conn: c, r: io.MultiReader(bytes.NewReader(first[:]), rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errStop
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := srv.HandshakeContext(ctx)
	cancel()
	if hello == nil {
		switch {
		case rec.over:
			return nil, nil, ErrTooLarge
		case err == nil:
			err = ErrNotTLS
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil, fmt.Errorf("sni: no ClientHello within %v: %w", timeout, err)
		}
		return nil, nil, fmt.Errorf("%w: %v", ErrNotTLS, err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	h := &Hello{ServerName: strings.TrimSuffix(strings.ToLower(hello.ServerName), "."),
		ALPN: append([]string(nil), hello.SupportedProtos...), Raw: rec.buf.Bytes()}
	replay := prefixconn.New(c, h.Raw)
	if h.ServerName == "" {
		return h, replay, ErrNoServerName
	}
	return h, replay, nil
}

// recorder reads from r and keeps what it read, up to max bytes.
type recorder struct {
	r    io.Reader
	buf  bytes.Buffer
	max  int
	over bool
}

func (r *recorder) Read(p []byte) (int, error) {
	if r.buf.Len() >= r.max {
		r.over = true
		return 0, ErrTooLarge
	}
	if room := r.max - r.buf.Len(); len(p) > room {
		p = p[:room]
	}
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

// readOnly is the connection crypto/tls parses the hello from: reads
// come from the recorder, writes (an alert) go nowhere.
type readOnly struct {
	net.Conn
	r io.Reader
}

func (c *readOnly) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *readOnly) Write(p []byte) (int, error) { return len(p), nil }
func (c *readOnly) Close() error                { return nil }
