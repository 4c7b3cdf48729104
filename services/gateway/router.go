package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/pc2/pc2/internal/chanlisten"

	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/sni"
	"github.com/pc2/pc2/services/relay"
)

// Limits of the TLS router's peek (ServeTLS): what one client, and all
// of them together, may hold in connections that have not finished their
// ClientHello. A connection over its client's share waits in line for a
// slot (at most PeekLine of them, each up to the peek's timeout, bounded
// further by the client's connection rate); one past the line or the
// total is closed at once.
// A client's share is that of its other per-client limits (64): an
// office or a carrier-grade NAT opens many connections at once from one
// address, while a peek lasts a round trip unless the client stalls.
const (
	PeeksPerClient = 64
	PeeksTotal     = 4096
	PeekLine       = 16 * PeeksPerClient
)

// RelayLabel is the reserved name of a domain's relays on port 443:
// relay.<domain> goes to the supernode's libp2p WebSocket listener
// (Config.RelayWS).
const RelayLabel = "relay"

// RelayConnsPerClient bounds the relay.<domain> connections one client
// (an IPv4 address or an IPv6 /64) holds at once: they reach libp2p from
// loopback, where its per-address limits do not count them, so the
// gateway does. A home or a carrier-grade NAT's address holds as many
// as libp2p allows one address on the supernode's own port (64).
const RelayConnsPerClient = 64

// ServeTLS serves port 443: each connection's ClientHello is read without
// terminating it (services/gateway/sni), within the per-client request
// limit and the peek limits (a client that sends nothing is cut after
// sni.DefaultTimeout), and routed by its server name:
//
//   - to the name's node, raw (end to end): a relay.ProtocolTLS stream
//     over the routes HTTP takes, the visitor's address in a PROXY v2
//     header, when the domain's TLS mode (records.Domain.TLS) allows it
//     and the node accepts (it holds a certificate for the name, or is
//     getting one: a CA's TLS-ALPN-01 validation that is not the
//     gateway's own, Config.OwnChallenge). Each spliced connection holds
//     one of the client's share of the node's streams
//     (Config.StreamsPerClient) and one of the node's (StreamsPerNode)
//     while it lasts; over either it waits in line as a request does,
//     up to QueueWait, and is closed after that.
//   - relay.<domain>, unless it is the gateway's own TLS-ALPN-01
//     validation: raw to the supernode's libp2p WebSocket listener
//     (Config.RelayWS), which terminates TLS with the gateway's
//     certificate for the name; at most RelayConnsPerClient at once.
//   - else to the gateway's own TLS termination (tlsConfig, then srv):
//     apexes, names under a domain in "gateway" mode, and in "auto"
//     mode names whose node has no certificate yet (asked again after
//     NoSpliceTTL). A domain in "end-to-end" mode is never terminated
//     here: the connection is closed.
//
// A ClientHello without a server name, or that is not one, is closed
// without an answer. It returns when ln fails or is closed.
func (g *Gateway) ServeTLS(ln net.Listener, tlsConfig *tls.Config, srv *http.Server) error {
	term := chanlisten.New(ln.Addr())
	defer term.Close()
	go srv.Serve(tls.NewListener(term, tlsConfig))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.route(c, term)
		}()
	}
}

// route peeks at c's ClientHello and hands c on, or closes it.
func (g *Gateway) route(c net.Conn, term *chanlisten.Listener) {
	client := netaddr.ClientKey(netaddr.Host(c.RemoteAddr().String()))
	if !g.limiter.allow(client) {
		c.Close()
		return
	}
	mine, ok := g.peeking.Take(client, PeeksPerClient)
	if !ok {
		// A burst of connections (a page's, an office's): wait for the
		// peeks ahead, which last a round trip unless their client
		// stalls, and then at most the peek's timeout.
		ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(g.cfg.PeekTimeout, sni.DefaultTimeout))
		mine, ok = g.peeking.Wait(ctx, client, PeeksPerClient, PeekLine)
		cancel()
		if !ok {
			c.Close()
			return
		}
	}
	all, ok := g.peekingAll.Take(struct{}{}, PeeksTotal)
	if !ok {
		mine()
		c.Close()
		return
	}
	hello, replay, err := sni.Peek(c, 0, g.cfg.PeekTimeout)
	all()
	mine()
	if err != nil {
		g.log.Debug("TLS connection refused", "client", client, "err", err)
		c.Close()
		return
	}
	if g.toRelay(replay, client, hello) || g.splice(c, client, hello) {
		return
	}
	if !term.Deliver(replay) {
		c.Close()
	}
}

// toRelay hands a connection for relay.<domain> to the libp2p WebSocket
// listener and reports whether it took it (spliced, or closed: over the
// client's share, the listener down).
func (g *Gateway) toRelay(c net.Conn, client string, hello *sni.Hello) bool {
	if g.cfg.RelayWS == "" {
		return false
	}
	host, ok := netaddr.CanonicalHost(hello.ServerName)
	if !ok {
		return false
	}
	label, _, ok := g.split(host)
	if !ok || label != RelayLabel {
		return false
	}
	if slices.Equal(hello.ALPN, []string{relay.ALPNACME}) && g.cfg.OwnChallenge != nil && g.cfg.OwnChallenge(host) {
		return false
	}
	release, ok := g.relaying.Take(client, RelayConnsPerClient)
	if !ok {
		g.log.Debug("relay connection refused: the client holds its share", "client", client)
		c.Close()
		return true
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.DialTimeout)
	ws, err := (&net.Dialer{}).DialContext(ctx, "tcp", g.cfg.RelayWS)
	cancel()
	if err != nil {
		g.log.Warn("the relay's WebSocket listener cannot be reached", "addr", g.cfg.RelayWS, "err", err)
		c.Close()
		return true
	}
	relay.Splice(c, ws)
	c.Close()
	ws.Close()
	return true
}

// Where a visitor's TLS ended (Status.TLS).
const (
	TLSAtNode    = "end-to-end"
	TLSAtGateway = "gateway"
)

// NoSpliceTTL is how long a name whose node took no spliced connection
// (no certificate, offline) is terminated here in "auto" mode before its
// node is asked again; OrderingTTL the same when the node said it is
// getting its certificate now.
const (
	NoSpliceTTL = time.Minute
	OrderingTTL = 5 * time.Second
)

// answerTimeout bounds the node's answer to a spliced connection's
// header.
const answerTimeout = 10 * time.Second

// splice hands c to the node of hello's name when the name's domain and
// node allow it (see ServeTLS) and reports whether c is no longer the
// caller's: spliced, or closed because the domain allows no
// termination here.
func (g *Gateway) splice(c net.Conn, client string, hello *sni.Hello) bool {
	host, ok := netaddr.CanonicalHost(hello.ServerName)
	if !ok {
		return false
	}
	var name string
	if label, domain, ok := g.split(host); ok && label != "" && records.ValidLabel(label) == nil {
		name = label + "." + domain
	} else if g.isCustom(host) {
		name = host // an owner's own domain: auto, as its node holds a certificate or not
	} else {
		return false // not a name: the gateway's own certificate or none
	}
	acme := slices.Equal(hello.ALPN, []string{relay.ALPNACME})
	if acme && g.cfg.OwnChallenge != nil && g.cfg.OwnChallenge(host) {
		return false
	}
	lctx, lcancel := context.WithTimeout(context.Background(), g.cfg.DialTimeout)
	e, err := g.lookup(lctx, name, false)
	lcancel()
	if err != nil {
		return false // the termination answers as for a request (no certificate)
	}
	mode := tlsMode(e.res)
	atGateway := func(why string) bool {
		e.mu.Lock()
		e.lastTLS, e.tlsWhy = TLSAtGateway, why
		e.mu.Unlock()
		if mode == records.TLSEndToEnd {
			g.log.Debug("TLS connection closed: the domain is end-to-end and the node took none", "name", name, "why", why)
			c.Close()
			return true
		}
		return false
	}
	if mode == records.TLSGateway {
		return atGateway("the domain's operator terminates TLS at its gateways")
	}
	e.mu.Lock()
	recent := g.cfg.Now().Before(e.noSplice)
	why := e.tlsWhy
	e.mu.Unlock()
	if recent && !acme && mode != records.TLSEndToEnd {
		return atGateway(why)
	}
	id := e.res.Name.Grant.DID
	// A client that gives up while its connection waits leaves the line.
	wctx, stopWatch := whileOpen(context.Background(), c)
	release, ok := g.queue(wctx, client, id)
	stopWatch()
	if !ok {
		g.log.Debug("TLS connection closed: over its client's or the node's streams for too long", "client", client, "name", name)
		c.Close() // as a 503 would, but there is no HTTP yet
		return true
	}
	defer release()
	// The dial's time starts after the wait in line: a connection that
	// waited would otherwise dial with what is left of it, fail, and
	// turn the name over to termination here for NoSpliceTTL.
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.DialTimeout)
	defer cancel()
	node, err := g.dialNode(ctx, e, id, relay.ProtocolTLS)
	if errors.Is(err, relay.ErrBusy) {
		// The node takes end-to-end TLS but has no stream free: as a
		// request past the line gets a 503. Terminating here instead
		// would let a load on the node (anyone's) turn its visitors'
		// TLS over to the gateway for NoSpliceTTL.
		g.log.Debug("TLS connection closed: the node is busy", "name", name, "err", err)
		c.Close()
		return true
	}
	if err != nil {
		g.noSplice(e, NoSpliceTTL, "the node could not be reached for end-to-end TLS")
		g.log.Debug("TLS splice: node unreachable", "name", name, "err", err)
		return atGateway("the node could not be reached for end-to-end TLS")
	}
	answer, err := g.offer(node, c, hello, acme)
	if err != nil || answer != relay.TLSAccept {
		node.Close()
		why, ttl := "the node did not take end-to-end TLS for this name", NoSpliceTTL
		switch {
		case err != nil:
		case answer == relay.TLSOrdering:
			why, ttl = "the node is getting its certificate", OrderingTTL
		case answer == relay.TLSNoCertificate:
			why = "the node has no certificate for this name"
		}
		g.log.Debug("TLS splice refused", "name", name, "answer", answer, "err", err)
		g.noSplice(e, ttl, why)
		if acme {
			c.Close() // the node's validation: no one else answers it
			return true
		}
		return atGateway(why)
	}
	e.mu.Lock()
	e.lastTLS, e.tlsWhy, e.noSplice = TLSAtNode, "", time.Time{}
	e.mu.Unlock()
	relay.Splice(c, node)
	c.Close()
	node.Close()
	return true
}

// offer sends the node the header and the ClientHello and reads its
// answer.
func (g *Gateway) offer(node, c net.Conn, hello *sni.Hello, acme bool) (byte, error) {
	node.SetDeadline(time.Now().Add(answerTimeout)) // wall clock: the stream's deadlines use it
	defer node.SetDeadline(time.Time{})
	if err := relay.WriteTLSHeader(node, relay.TLSHeader{Client: c.RemoteAddr(), Gateway: c.LocalAddr(),
		ServerName: hello.ServerName, ACME: acme}); err != nil {
		return 0, err
	}
	if _, err := node.Write(hello.Raw); err != nil {
		return 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(node, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// noSplice records that e's node took no spliced connection, and why:
// it is not asked again for ttl.
func (g *Gateway) noSplice(e *entry, ttl time.Duration, why string) {
	e.mu.Lock()
	e.noSplice, e.tlsWhy = g.cfg.Now().Add(ttl), why
	e.mu.Unlock()
}

// tlsMode is the TLS mode of res's domain (records.TLSAuto without a
// domain record).
func tlsMode(res *dht.NameResolution) string {
	if res == nil || res.Domain == nil {
		return records.TLSAuto
	}
	return res.Domain.TLS
}
