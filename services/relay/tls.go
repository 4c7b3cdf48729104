package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/pc2/pc2/internal/prefixconn"
)

// The header of a ProtocolTLS stream (see the package doc): the
// visitor's address and the gateway's, the server name
// (PP2_TYPE_AUTHORITY) and, for an ACME TLS-ALPN-01 validation, the ALPN
// "acme-tls/1" (PP2_TYPE_ALPN). The gateway may send the ClientHello
// right after the header: a node that refuses reads no further and
// closes, and the gateway terminates the connection itself. The node
// believes the header only from the peers it takes HTTP streams from
// (its supernodes and its domain's gateways), as it believes their
// X-Forwarded-For.

// Answers of the node to a ProtocolTLS header.
const (
	TLSAccept        byte = 0 // the TLS bytes follow
	TLSNoCertificate byte = 1 // no certificate for this name (the CA refused, or it is off)
	TLSRefused       byte = 2 // not a name of this node
	TLSOrdering      byte = 3 // no certificate yet, being obtained now: ask again soon
)

// ALPNACME is the ALPN protocol of the ACME TLS-ALPN-01 challenge.
const ALPNACME = "acme-tls/1"

// TLSHeader is what the gateway tells the node of a spliced connection.
type TLSHeader struct {
	// Client is the visitor's address, Gateway the address it reached.
	Client, Gateway net.Addr
	// ServerName is the ClientHello's server name.
	ServerName string
	// ACME: the client offers only "acme-tls/1" (a CA validating a
	// TLS-ALPN-01 challenge).
	ACME bool
}

// maxTLSHeader bounds the header a node reads (PROXY v2 allows 64 KiB
// of TLVs; ours are a name and a protocol).
const maxTLSHeader = 1024

// WriteTLSHeader writes h as a PROXY protocol v2 header.
func WriteTLSHeader(w io.Writer, h TLSHeader) error {
	ph := proxyproto.HeaderProxyFromAddrs(2, h.Client, h.Gateway)
	tlvs := []proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(h.ServerName)}}
	if h.ACME {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte(ALPNACME)})
	}
	if err := ph.SetTLVs(tlvs); err != nil {
		return fmt.Errorf("relay: TLS header: %w", err)
	}
	b, err := ph.Format()
	if err != nil {
		return fmt.Errorf("relay: TLS header: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("relay: TLS header: %w", err)
	}
	return nil
}

// ReadTLSHeader reads the header at the start of c within timeout and
// returns it with a connection that reads on after it and whose
// RemoteAddr is the visitor's. A header that is not PROXY v2 for a TCP
// connection with a server name is an error.
func ReadTLSHeader(c net.Conn, timeout time.Duration) (*TLSHeader, net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(&limitedReader{r: c, n: maxTLSHeader}, 512)
	ph, err := proxyproto.Read(br)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: TLS header: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	if ph.Version != 2 || ph.Command != proxyproto.PROXY {
		return nil, nil, errors.New("relay: TLS header: not a PROXY v2 header for a proxied connection")
	}
	src, dst, ok := ph.TCPAddrs()
	if !ok {
		return nil, nil, errors.New("relay: TLS header: not a TCP connection")
	}
	tlvs, err := ph.TLVs()
	if err != nil {
		return nil, nil, fmt.Errorf("relay: TLS header: %w", err)
	}
	h := &TLSHeader{Client: src, Gateway: dst}
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_AUTHORITY:
			h.ServerName = string(t.Value)
		case proxyproto.PP2_TYPE_ALPN:
			h.ACME = string(t.Value) == ALPNACME
		}
	}
	if h.ServerName == "" {
		return nil, nil, errors.New("relay: TLS header: no server name")
	}
	// What the reader buffered past the header is the visitor's.
	rest, _ := br.Peek(br.Buffered())
	return h, &headerConn{Conn: prefixconn.New(c, slices.Clone(rest)), remote: src}, nil
}

// limitedReader reads at most n bytes from r while the header is read:
// afterwards the connection is read directly.
type limitedReader struct {
	r io.Reader
	n int
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("relay: TLS header too long")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// headerConn is a connection after its header: the bytes read past it
// first, the visitor's address as RemoteAddr.
type headerConn struct {
	*prefixconn.Conn
	remote net.Addr
}

func (c *headerConn) RemoteAddr() net.Addr { return c.remote }
