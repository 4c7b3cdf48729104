package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/internal/testing/tlstest"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
)

// TestServeTLS: port 443 through the SNI router: a browser's HTTPS
// request (HTTP/2) reaches the gateway's own TLS; a ClientHello without a
// name, plain HTTP and a client that says nothing are closed without an
// answer; one client's stalled connections beyond its share are closed
// at once, and another client still gets through.
func TestServeTLS(t *testing.T) {
	w := newWorld(t, 1)
	// A peek's timeout longer than the steps below take (the stalled
	// connections must still hold their slots and the line), and a
	// connection rate that lets one address fill its line.
	g, _ := w.gateway(w.sns[0], func(cfg *Config) {
		cfg.PeekTimeout = 3 * time.Second
		cfg.Rate, cfg.Burst = 1e4, 1e4
	})
	addr, pool := serveTLS(t, g, testDomain, "h2", "http/1.1")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	resp, err := client.Get("https://" + testDomain + "/")
	if err != nil {
		t.Fatalf("HTTPS through the router: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(string(body), "names API") {
		t.Fatalf("through the router: %s %s %q", resp.Proto, resp.Status, body)
	}

	closedAtOnce := func(what string, send []byte, within time.Duration) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(send)
		c.SetReadDeadline(time.Now().Add(within))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err == nil {
			t.Errorf("%s: read %d bytes, %v; want the connection closed without an answer", what, n, err)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: still open after %v", what, within)
		}
	}
	closedAtOnce("plain HTTP", []byte("GET / HTTP/1.1\r\nHost: "+testDomain+"\r\n\r\n"), 2*time.Second)
	closedAtOnce("a client that says nothing", nil, 5*time.Second)
	if c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Error("a ClientHello without a server name got a handshake")
	}

	// Stalled clients: one address's share, its line, then closed at once.
	var held []net.Conn
	for range PeeksPerClient {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{22, 3, 1}) // a hello that never comes
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // the router took them
	// One more connection of that address waits in line (a page's burst
	// of connections, an office behind one address) and is served once
	// a peek ahead of it ends.
	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	got := make(chan error, 1)
	go func() {
		resp, err := browser.Get("https://" + testDomain + "/")
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("a connection past its address's share was not held in line (%v)", err)
	default:
	}
	held[0].Close()
	held = held[1:]
	if err := <-got; err != nil {
		t.Fatalf("a connection waiting in line: %v", err)
	}
	// The line holds PeekLine more: past it, closed at once.
	for range PeekLine + 1 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{22, 3, 1})
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	closedAtOnce("a stalled client past its share and its line", []byte{22, 3, 1}, 200*time.Millisecond)
	// Another address (127.0.0.2 is loopback too) is not affected.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}}}
	if resp, err := other.Get("https://" + testDomain + "/"); err != nil {
		t.Fatalf("another client while one holds its share: %v", err)
	} else {
		resp.Body.Close()
	}
}

// TestServeTLSLimitsBeforeLookup (issue 18): ClientHellos for names
// nobody holds, each a DHT lookup if it got that far, count in the
// client's request limit before any lookup: one client's flood of random
// names makes its burst of lookups, the connections past it are closed
// without an answer, and another client still gets its own. A name that
// does not resolve gets no certificate: the handshake fails.
func TestServeTLSLimitsBeforeLookup(t *testing.T) {
	w := newWorld(t, 1)
	res := &countingResolver{}
	g, _ := w.gateway(w.sns[0], func(c *Config) { c.Resolver = res; c.Rate, c.Burst = 0.1, 5 })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := g.Server()
	go g.ServeTLS(ln, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, errors.New("no certificate")
	}}, srv)
	t.Cleanup(func() { ln.Close(); srv.Close() })

	handshake := func(local, name string) error {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err
	}
	for i := range 30 {
		if err := handshake("127.0.0.1", fmt.Sprintf("random%d.%s", i, testDomain)); err == nil {
			t.Fatalf("a handshake for an unknown name succeeded")
		}
	}
	if got := res.n.Load(); got != 5 {
		t.Fatalf("30 ClientHellos for random names from one client made %d lookups, want its burst of 5", got)
	}
	if err := handshake("127.0.0.2", "other."+testDomain); err == nil || res.n.Load() != 6 {
		t.Fatalf("another client's ClientHello: %v after %d lookups, want a lookup (and no handshake)", err, res.n.Load())
	}
}

// busyRelay is the supernode's relay whose node, while busy is set, has
// no stream free for end-to-end TLS (relay.ErrBusy, as at its stream
// limit); tlsOpens counts the TLS streams asked of it.
type busyRelay struct {
	LocalRelay
	busy     atomic.Bool
	tlsOpens atomic.Int32
}

func (b *busyRelay) OpenStream(ctx context.Context, id identity.ID, proto protocol.ID) (network.Stream, error) {
	if proto == relay.ProtocolTLS {
		b.tlsOpens.Add(1)
		if b.busy.Load() {
			return nil, fmt.Errorf("%w (256) for %s", relay.ErrBusy, id.DID())
		}
	}
	return b.LocalRelay.OpenStream(ctx, id, proto)
}

// TestSpliceBusyNode: a visitor's TLS connection to a name whose node has
// no stream free is closed, as a request past the line gets a 503; it is
// not terminated at the gateway (which holds a certificate for the name
// here), and the next connection is offered to the node again. Were the
// busy node taken for one that does not do end-to-end TLS, anyone's load
// on it would hand its visitors' TLS to the gateway for NoSpliceTTL.
func TestSpliceBusyNode(t *testing.T) {
	w := newWorld(t, 1)
	br := &busyRelay{}
	g, srv := w.gateway(w.sns[0], func(cfg *Config) { br.LocalRelay, cfg.Relay = cfg.Relay, br })
	addr, _ := serveTLS(t, g, "*."+testDomain)

	alice := w.node(personal.ModeRelayed, w.sns[0])
	name := "alice." + testDomain
	w.grant(name, alice.key)
	w.waitRecord(w.sns[0], alice.id, listsSupernode(w.sns[0]))
	if code, body := get(t, srv, name, "/hello"); code != 200 {
		t.Fatalf("alice through the gateway: %d %q", code, body)
	}
	handshake := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err
	}

	br.busy.Store(true)
	if err := handshake(); err == nil {
		t.Fatal("a TLS connection to a busy node got a handshake (terminated at the gateway)")
	}
	if n := br.tlsOpens.Load(); n != 1 {
		t.Fatalf("%d TLS streams asked of the busy node, want 1", n)
	}
	if st := status(t, srv, name); st.TLS == TLSAtGateway {
		t.Errorf("after a busy node the name's TLS is %q (%s)", st.TLS, st.TLSReason)
	}
	br.busy.Store(false)
	handshake() // alice holds no certificate: the gateway terminates this one
	if n := br.tlsOpens.Load(); n < 2 {
		t.Fatal("the connection after the busy one was not offered to the node (terminated at the gateway at once)")
	}
}

// serveTLS serves g's port 443 (ServeTLS) on a loopback port, with a
// self-signed certificate for name offering protos; it returns the
// address and a pool that trusts the certificate.
func serveTLS(t *testing.T, g *Gateway, name string, protos ...string) (addr string, roots *x509.CertPool) {
	t.Helper()
	cert, roots := tlstest.SelfSigned(t, name)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := g.Server()
	go g.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos}, srv)
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return ln.Addr().String(), roots
}
