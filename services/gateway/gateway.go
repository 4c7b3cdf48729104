// Package gateway is the supernode's web gateway: it maps
// https://<name>.<domain> to the node holding the name, for every domain
// the supernode serves.
//
// A request's Host is resolved name -> name record -> DID -> did record
// (dht.Node.ResolveName, which checks the operator's grant), and the
// request goes to the node over a /pc2/http/1 stream (nodeproxy.Proxy:
// keep-alive, WebSocket, streamed bodies both ways, X-Forwarded-*). The
// stream is opened by the first route that works, in this order:
//
//  1. this supernode's relay server (Config.Relay), when the node is
//     attached here;
//  2. the node's direct addresses from its did record (libp2p to the node
//     itself: the node is publicly reachable);
//  3. each supernode the did record lists, asked over
//     relay.ProtocolForward to open the stream through its relay.
//
// Resolutions are cached (Config.CacheTTL). When every route of a cached
// resolution fails, the name is resolved again at once and the new
// record's routes are tried, so a node that moved to another supernode is
// followed on the next request. All of it is bounded by Config.DialTimeout:
// an offline node gets a 502 page within it, never a hang.
//
// The apex of each domain is Config.API (the names API). `?status` on a
// name answers the routing state as JSON without proxying. Unknown names
// get a 404 page, a malformed Host a 400, a client over its request rate
// a 429. A request over its client's share of a node's streams
// (Config.StreamsPerClient) or over the node's (StreamsPerNode) waits in
// line for one, and gets a 503 with Retry-After only after QueueWait.
package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/internal/shares"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/customdomain"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/relay/nodeproxy"
)

// Resolver resolves names (dht.Node does).
type Resolver interface {
	ResolveName(ctx context.Context, fqdn string) (*dht.NameResolution, error)
}

// LocalRelay is what the gateway needs of this supernode's relay server
// (relayserver.Relay).
type LocalRelay interface {
	// OpenStream opens a stream to node id if it is attached here;
	// relay.ErrNotAttached if it is not, relay.ErrBusy at its stream
	// limit.
	OpenStream(ctx context.Context, id identity.ID, proto protocol.ID) (network.Stream, error)
	// Attached reports whether id is attached here (for ?status).
	Attached(id identity.ID) bool
}

// Defaults for zero Config fields.
const (
	DefaultCacheTTL    = 30 * time.Second
	DefaultNegativeTTL = 5 * time.Second
	DefaultDialTimeout = 2 * time.Second
	DefaultRate        = 50 // requests per second per client IP
	DefaultBurst       = 200
	DefaultHeaderTime  = 10 * time.Second
	DefaultIdleTime    = 2 * time.Minute
	// DefaultStreamsPerClient is a quarter of a node's streams at a relay
	// (relay.DefaultLimits.Streams).
	DefaultStreamsPerClient = 64
	// DefaultStreamsPerNode is three quarters of them: with the idle
	// streams the proxy keeps (a quarter), never more than the relay
	// allows, so load beyond it waits here rather than fail there.
	DefaultStreamsPerNode = 192
	// DefaultQueueWait is how long a request over its client's share, or
	// over the node's, waits in line for a stream.
	DefaultQueueWait = 10 * time.Second
)

// Config configures a Gateway.
type Config struct {
	// Host is the supernode's libp2p host: direct dials and forwarding.
	Host host.Host
	// Resolver resolves names (the supernode's DHT node).
	Resolver Resolver
	// Relay is this supernode's relay server; nil if it runs none.
	Relay LocalRelay
	// Domains are the domains served (lowercase, e.g. "ela.city").
	Domains []string
	// Mesh are other operators' domains this supernode trusts. A
	// visitor's request for one of their names is served here when the
	// domain's record allows it (MeshOpen, records.Domain.Mesh), and
	// otherwise answered 421 with where the name is served: never "not
	// served here". Only over HTTP: this gateway has no certificate for
	// them (with HTTPS, port 80 redirects to the domain's own gateways).
	Mesh     []string
	MeshOpen func(ctx context.Context, domain string) bool
	// Custom, if set, serves owners' own domains (customdomain.go).
	Custom *Custom
	// API serves each domain's apex (the names API); nil answers 404.
	API http.Handler
	// CacheTTL is how long a resolution is used without asking the DHT
	// again; NegativeTTL the same for names that do not exist.
	CacheTTL, NegativeTTL time.Duration
	// DialTimeout bounds reaching a node, re-resolving included.
	DialTimeout time.Duration
	// HeaderTimeout bounds reading a request's headers and IdleTimeout a
	// keep-alive connection's wait for the next request (slow or idle
	// clients); 0: the defaults.
	HeaderTimeout, IdleTimeout time.Duration
	// Rate and Burst limit requests per client (<= 0: the defaults).
	Rate  rate.Limit
	Burst int
	// StreamsPerClient bounds the requests one client (an IPv4 address
	// or an IPv6 /64) has in flight to one node, WebSockets included
	// (<= 0: DefaultStreamsPerClient): a stranger holding slow requests
	// takes this share of the node's streams, not all of them.
	StreamsPerClient int
	// StreamsPerNode bounds the requests this gateway has in flight to
	// one node (<= 0: DefaultStreamsPerNode).
	StreamsPerNode int
	// QueueWait is how long a request over either limit waits in line
	// (first come, first served) before a 503 with Retry-After (<= 0:
	// DefaultQueueWait). At most 16 times its share wait per client, so
	// waiting requests stay bounded by the client's connections and
	// request rate.
	QueueWait time.Duration
	// PeekTimeout bounds a port-443 client's wait before its ClientHello
	// (ServeTLS; 0: sni.DefaultTimeout).
	PeekTimeout time.Duration
	// RelayWS is the address ("127.0.0.1:port") of this supernode's
	// libp2p secure WebSocket listener: ServeTLS hands it the
	// connections for relay.<domain> of every served domain, so nodes
	// behind firewalls that let only TCP 443 out attach through port 443
	// too. Empty: relay.<domain> is not served.
	RelayWS string
	// OwnChallenge reports whether a TLS-ALPN-01 validation for name is
	// the gateway's own (certs.Manager.Ordering): those are terminated
	// here, the others spliced to the name's node, which may be getting
	// its own certificate. nil: none is.
	OwnChallenge func(name string) bool
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock of the cache and the limiter; nil: time.Now.
	Now func() time.Time
}

// Gateway routes HTTP requests for names to nodes.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	self    peer.ID
	proxy   *nodeproxy.Proxy
	limiter *ipLimiter
	// peeking and peekingAll count the port-443 connections still
	// sending their ClientHello (ServeTLS), per client and in all;
	// relaying the connections handed to the relay's WebSocket listener,
	// per client.
	peeking    shares.Counter[string]
	peekingAll shares.Counter[struct{}]
	relaying   shares.Counter[string]

	mu    sync.Mutex
	cache map[string]*entry

	inFlight   shares.Counter[shareKey]    // requests in flight per client and node
	nodeFlight shares.Counter[identity.ID] // requests in flight per node
}

// shareKey is one client's requests to one node.
type shareKey struct {
	client string
	node   identity.ID
}

// entry is a cached resolution of one name.
type entry struct {
	name     string
	res      *dht.NameResolution // nil when err is set
	err      error               // the name does not resolve (errNoName)
	resolved time.Time

	mu        sync.Mutex
	lastRoute string // how the node was last reached
	lastErr   string // why it last was not
	// lastTLS is where the last TLS connection for the name ended
	// (TLSAtNode or TLSAtGateway) and tlsWhy why it ended here;
	// until noSplice, the node is not offered connections (ServeTLS).
	lastTLS, tlsWhy string
	noSplice        time.Time
}

// Errors of resolution and routing.
var (
	errNoName = errors.New("no such name")
	// errLapsed: the name is held, but its holder's node has not renewed
	// the grant in time (records.Grant.RouteUntil).
	errLapsed  = errors.New("the name lapsed: its node has not renewed it")
	errOffline = errors.New("node offline")
)

// New returns a Gateway; serve it with Server or as an http.Handler.
func New(cfg Config) (*Gateway, error) {
	if cfg.Host == nil || cfg.Resolver == nil {
		return nil, errors.New("gateway: host and resolver are required")
	}
	if len(cfg.Domains) == 0 {
		return nil, errors.New("gateway: no domains to serve")
	}
	if c := cfg.Custom; c != nil {
		switch {
		case c.ResolveDID == nil:
			return nil, errors.New("gateway: custom domains need ResolveDID")
		case c.Policy != CustomOpen && c.Policy != CustomInvite && c.Policy != CustomAllowlist:
			return nil, fmt.Errorf("gateway: custom domain policy %q: want open, invite or allowlist", c.Policy)
		case c.Policy == CustomInvite && c.Tally == nil:
			return nil, errors.New("gateway: the custom-domain invite policy needs Tally")
		}
		if c.LookupTXT == nil {
			c.LookupTXT = LookupTXTWith("")
		}
	}
	for _, d := range cfg.Domains {
		if err := records.ValidDomain(d); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTime
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTime
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.StreamsPerClient <= 0 {
		cfg.StreamsPerClient = DefaultStreamsPerClient
	}
	if cfg.StreamsPerNode <= 0 {
		cfg.StreamsPerNode = DefaultStreamsPerNode
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = DefaultQueueWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, self: cfg.Host.ID(), cache: map[string]*entry{},
		limiter: newIPLimiter(cfg.Rate, cfg.Burst, cfg.Now)}
	proxy, err := nodeproxy.New(nodeproxy.Config{Dial: g.dial, ErrorHandler: g.proxyError})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.proxy = proxy
	return g, nil
}

// Server returns an http.Server for g with limits against slow and idle
// clients; the caller sets Addr or TLSConfig and serves it.
func (g *Gateway) Server() *http.Server {
	return &http.Server{
		Handler:           g,
		ReadHeaderTimeout: g.cfg.HeaderTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

// ServeHTTP routes one request by its Host.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, ok := netaddr.CanonicalHost(r.Host)
	if !ok {
		page(w, http.StatusBadRequest, "Bad request", "The Host of this request is not a valid host name.")
		return
	}
	if !g.limiter.allow(clientKey(r)) {
		w.Header().Set("Retry-After", "1")
		page(w, http.StatusTooManyRequests, "Too many requests", "Slow down, and try again in a moment.")
		return
	}
	label, domain, ok := g.split(host)
	custom := false
	if !ok {
		if label, domain, ok = splitUnder(host, g.cfg.Mesh); ok {
			if label == "" || g.cfg.MeshOpen == nil || !g.cfg.MeshOpen(r.Context(), domain) {
				page(w, http.StatusMisdirectedRequest, "Served elsewhere", html.EscapeString(host)+" is served by the gateways of "+
					html.EscapeString(domain)+"'s operator, not by this one. Its address leads there.")
				return
			}
		} else if custom = g.cfg.Custom != nil; !custom {
			page(w, http.StatusNotFound, "Not served here", html.EscapeString(host)+" is not a domain this gateway serves.")
			return
		}
	}
	if label == "" && !custom {
		if g.cfg.API == nil {
			page(w, http.StatusNotFound, "Not found", "This gateway has no API for "+html.EscapeString(domain)+".")
			return
		}
		g.cfg.API.ServeHTTP(w, r)
		return
	}
	name := host
	if !custom {
		name = label + "." + domain
		if err := records.ValidLabel(label); err != nil {
			page(w, http.StatusNotFound, "No such name", html.EscapeString(name)+" is not a name anyone can hold.")
			return
		}
	}
	e, err := g.lookup(r.Context(), name, false)
	if _, status := r.URL.Query()["status"]; status && r.Method == http.MethodGet {
		g.serveStatus(w, r, name, e, err)
		return
	}
	switch {
	case errors.Is(err, errNoName) && custom:
		why := "or its node may not use this gateway"
		if g.cfg.Custom.Policy == CustomInvite {
			why = "or its owner has not registered it with this gateway's operator (own domains here need an invite code)"
		}
		page(w, http.StatusNotFound, "Not set up", html.EscapeString(name)+" has no valid PC2 proof in its DNS (a TXT record at "+
			html.EscapeString(customdomain.TXTName(name))+"), "+why+".")
		return
	case errors.Is(err, errNoName):
		page(w, http.StatusNotFound, "No such name", html.EscapeString(name)+" is not registered.")
		return
	case errors.Is(err, errLapsed):
		page(w, http.StatusNotFound, html.EscapeString(name)+" is not in use", html.EscapeString(name)+
			" is held, but its owner's node has not renewed it lately. It is back once the node is online again.")
		return
	case err != nil && r.Context().Err() != nil:
		// The visitor left (closed the connection) while the name was
		// looked up: nobody reads an answer, and it is not the DHT's
		// failure.
		g.log.Debug("resolve abandoned: the visitor left", "name", name)
		return
	case err != nil:
		g.log.Warn("resolve failed", "name", name, "err", err)
		page(w, http.StatusBadGateway, "Cannot resolve "+html.EscapeString(name), "The name could not be looked up right now. Try again in a moment.")
		return
	}
	id := e.res.Name.Grant.DID
	release, ok := g.queue(r.Context(), clientKey(r), id)
	if !ok {
		g.log.Debug("request not served: over its client's or the node's streams for too long", "client", clientIP(r), "name", name)
		w.Header().Set("Retry-After", "1")
		page(w, http.StatusServiceUnavailable, "Busy", html.EscapeString(name)+" has too many requests in flight. Try again in a moment.")
		return
	}
	defer release()
	g.proxy.ServeNode(w, r.WithContext(context.WithValue(r.Context(), entryKey{}, e)), id)
}

// queue takes a slot of client's share of node id's streams and one of
// the node's, waiting in line for each up to QueueWait (or until parent
// ends): load beyond what the node takes at once queues here, first
// come first served, instead of failing at the relay. A request and a
// spliced TLS connection each hold one while they last.
func (g *Gateway) queue(parent context.Context, client string, id identity.ID) (release func(), ok bool) {
	// Without a line, no timer: most requests find a slot at once.
	var ctx context.Context
	cancel := func() {}
	defer func() { cancel() }()
	wait := func() context.Context {
		if ctx == nil {
			ctx, cancel = context.WithTimeout(parent, g.cfg.QueueWait)
		}
		return ctx
	}
	k := shareKey{client, id}
	mine, ok := g.inFlight.Take(k, g.cfg.StreamsPerClient)
	if !ok {
		if mine, ok = g.inFlight.Wait(wait(), k, g.cfg.StreamsPerClient, 16*g.cfg.StreamsPerClient); !ok {
			return nil, false
		}
	}
	// Every client may wait for the node's slots (its own share bounds
	// how many of its requests do).
	node, ok := g.nodeFlight.Take(id, g.cfg.StreamsPerNode)
	if !ok {
		if node, ok = g.nodeFlight.Wait(wait(), id, g.cfg.StreamsPerNode, math.MaxInt); !ok {
			mine()
			return nil, false
		}
	}
	return func() { node(); mine() }, true
}

// Allowed says whether name may get a TLS certificate: nil for the apex
// of a served domain and for a registered (active) name under one whose
// domain is not end to end only (records.TLSEndToEnd); the
// on-demand certificate decision (Certs' CertsConfig.Allow). Lookups use
// the resolution cache, so handshakes for unknown names cost the DHT
// once per NegativeTTL.
func (g *Gateway) Allowed(ctx context.Context, name string) error {
	host, ok := netaddr.CanonicalHost(name)
	if !ok {
		return fmt.Errorf("gateway: %q is not a host name", name)
	}
	label, domain, ok := g.split(host)
	switch {
	case !ok && g.isCustom(host):
		// An owner's domain whose DNS points here: its proof decides
		// (a DNS lookup, counted as a name's DHT lookup is).
		if err := g.handshakeAllowed(ctx, host); err != nil {
			return err
		}
		_, err := g.lookup(ctx, host, false)
		return err
	case !ok:
		return fmt.Errorf("gateway: %s is not under a domain served here", host)
	case label == "":
		return nil
	case label == RelayLabel && g.cfg.RelayWS != "":
		return nil // the libp2p WebSocket listener's certificate
	}
	if err := records.ValidLabel(label); err != nil {
		return err
	}
	full := label + "." + domain
	if err := g.handshakeAllowed(ctx, full); err != nil {
		return err
	}
	e, err := g.lookup(ctx, full, false)
	if err != nil {
		return err
	}
	if tlsMode(e.res) == records.TLSEndToEnd {
		return fmt.Errorf("gateway: %s is end to end: its TLS ends only at its node", full)
	}
	return nil
}

// handshakeAllowed counts a TLS handshake for name in its client's
// request limit when name is not in the cache: it costs a lookup, as a
// request would.
func (g *Gateway) handshakeAllowed(ctx context.Context, name string) error {
	if hello, ok := ctx.Value(certmagic.ClientHelloInfoCtxKey).(*tls.ClientHelloInfo); ok && hello.Conn != nil && !g.cached(name) {
		if !g.limiter.allow(netaddr.ClientKey(netaddr.Host(hello.Conn.RemoteAddr().String()))) {
			return errHandshakeLimited
		}
	}
	return nil
}

// errHandshakeLimited refuses a certificate to a client over its request
// limit.
var errHandshakeLimited = errors.New("gateway: too many handshakes for names not looked up yet from this client")

// cached reports whether name has a fresh resolution in the cache.
func (g *Gateway) cached(name string) bool {
	g.mu.Lock()
	e := g.cache[name]
	g.mu.Unlock()
	if e == nil {
		return false
	}
	ttl := g.cfg.CacheTTL
	if e.err != nil {
		ttl = g.cfg.NegativeTTL
	}
	return g.cfg.Now().Sub(e.resolved) < ttl
}

// entryKey carries a request's resolution to dial.
type entryKey struct{}

// split returns the name label and domain of host, label "" for the apex;
// false when host is not under a served domain or has more than one
// label below it.
func (g *Gateway) split(host string) (label, domain string, ok bool) {
	return splitUnder(host, g.cfg.Domains)
}

// splitUnder splits host into a label and one of domains (label ""
// for the apex).
func splitUnder(host string, domains []string) (label, domain string, ok bool) {
	for _, d := range domains {
		if host == d {
			return "", d, true
		}
		if l, found := strings.CutSuffix(host, "."+d); found && !strings.Contains(l, ".") {
			return l, d, true
		}
	}
	return "", "", false
}

// lookup returns name's resolution, from the cache unless it is stale or
// fresh is set.
func (g *Gateway) lookup(ctx context.Context, name string, fresh bool) (*entry, error) {
	now := g.cfg.Now()
	g.mu.Lock()
	e := g.cache[name]
	g.mu.Unlock()
	if e != nil && !fresh {
		ttl := g.cfg.CacheTTL
		if e.err != nil {
			ttl = g.cfg.NegativeTTL
		}
		if now.Sub(e.resolved) < ttl {
			return e, e.err
		}
	}
	var res *dht.NameResolution
	var err error
	if g.isCustom(name) {
		res, err = g.resolveCustom(ctx, name)
	} else {
		res, err = g.cfg.Resolver.ResolveName(ctx, name)
	}
	ne := &entry{name: name, resolved: now}
	switch {
	case errors.Is(err, dht.ErrNotFound):
		ne.err = errNoName
	case err != nil:
		return nil, err // not cached: the DHT may answer next time
	case res.Name.Grant.Status != records.StatusActive:
		ne.err = errNoName // revoked or released
	case !res.Name.Grant.RoutesAt(now.Unix()):
		ne.err = errLapsed
	default:
		ne.res = res
	}
	if e != nil {
		e.mu.Lock()
		ne.lastRoute, ne.lastErr = e.lastRoute, e.lastErr
		ne.lastTLS, ne.tlsWhy, ne.noSplice = e.lastTLS, e.tlsWhy, e.noSplice
		e.mu.Unlock()
	}
	g.mu.Lock()
	g.cache[name] = ne
	if len(g.cache) > maxCache {
		g.evict(now)
	}
	g.mu.Unlock()
	return ne, ne.err
}

// maxCache bounds the resolution cache (a variable for tests).
var maxCache = 100000

// evict drops expired entries, and when that is not enough (many names
// looked up within CacheTTL), others until a tenth is free (g.mu held).
func (g *Gateway) evict(now time.Time) {
	for k, e := range g.cache {
		if now.Sub(e.resolved) > g.cfg.CacheTTL {
			delete(g.cache, k)
		}
	}
	for k := range g.cache {
		if len(g.cache) <= maxCache*9/10 {
			break
		}
		delete(g.cache, k)
	}
}

// Forget drops name from the cache (a record changed).
func (g *Gateway) Forget(name string) {
	g.mu.Lock()
	delete(g.cache, name)
	g.mu.Unlock()
}

// dial opens an HTTP connection to the node of the request's resolution
// (nodeproxy's Config.Dial).
func (g *Gateway) dial(ctx context.Context, id identity.ID) (net.Conn, error) {
	e, _ := ctx.Value(entryKey{}).(*entry)
	if e == nil {
		return nil, errors.New("gateway: no resolution for this connection")
	}
	return g.dialNode(ctx, e, id, relay.ProtocolHTTP)
}

// dialNode opens a proto stream (HTTP, or TLS spliced) to node id of
// resolution e: through the routes of the cached record, then, if none
// works and the record came from the cache, through those of a fresh
// one.
func (g *Gateway) dialNode(parent context.Context, e *entry, id identity.ID, proto protocol.ID) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(parent, g.cfg.DialTimeout)
	defer cancel()
	conn, route, err := g.dialRoutes(ctx, id, e.res, proto)
	// A busy node is busy on every route: a fresh record would not help,
	// and looking it up costs most when the node is loaded.
	if err != nil && ctx.Err() == nil && !errors.Is(err, relay.ErrBusy) {
		if fe, ferr := g.lookup(ctx, e.name, true); ferr == nil && fe.res.Name.Grant.DID == id {
			e = fe // the cache holds the fresh entry now: record the outcome there
			conn, route, err = g.dialRoutes(ctx, id, fe.res, proto)
		}
	}
	e.mu.Lock()
	switch {
	case err == nil:
		e.lastRoute, e.lastErr = route, ""
	case parent.Err() == nil: // else the visitor left: that says nothing of the node
		e.lastErr = visitorError(err)
	}
	e.mu.Unlock()
	return conn, err
}

// dialRoutes tries res's routes in order and returns the first proto
// stream with the route's name.
func (g *Gateway) dialRoutes(ctx context.Context, id identity.ID, res *dht.NameResolution, proto protocol.ID) (net.Conn, string, error) {
	var errs []string
	var busy error
	if g.cfg.Relay != nil {
		st, err := g.cfg.Relay.OpenStream(ctx, id, proto)
		switch {
		case err == nil:
			return relay.StreamConn{Stream: st}, "relay", nil
		case errors.Is(err, relay.ErrBusy):
			return nil, "", err // the limit holds for every route
		case errors.Is(err, relay.ErrNotAttached):
			// Not attached here: the other routes follow.
		default:
			errs = append(errs, "relay here: "+err.Error())
		}
	}
	if res.DID == nil {
		errs = append(errs, "no did record: "+res.DIDError)
		return nil, "", fmt.Errorf("%w: %s", errOffline, strings.Join(errs, "; "))
	}
	if len(res.DID.Direct) > 0 {
		conn, err := g.dialDirect(ctx, id, res.DID.Direct, proto)
		if err == nil {
			return conn, "direct", nil
		}
		errs = append(errs, "direct: "+err.Error())
	}
	for _, sn := range res.DID.Supernodes {
		pid, err := dht.IDToPeer(sn.ID)
		if err != nil || pid == g.self {
			continue
		}
		ai := peer.AddrInfo{ID: pid}
		for _, a := range sn.Addrs {
			if m, err := ma.NewMultiaddr(a); err == nil {
				ai.Addrs = append(ai.Addrs, m)
			}
		}
		conn, err := relay.Forward(ctx, g.cfg.Host, ai, id, proto)
		if err == nil {
			return conn, "via " + pid.String(), nil
		}
		if errors.Is(err, relay.ErrBusy) {
			busy = err
		}
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	if busy != nil {
		return nil, "", busy // the node is there, at its limit
	}
	if len(errs) == 0 {
		errs = append(errs, "the node is attached to no supernode and has no direct address")
	}
	return nil, "", fmt.Errorf("%w: %s", errOffline, strings.Join(errs, "; "))
}

// dialDirect connects to the node itself at its published addresses.
func (g *Gateway) dialDirect(ctx context.Context, id identity.ID, addrs []string, proto protocol.ID) (net.Conn, error) {
	pid, err := dht.IDToPeer(id)
	if err != nil {
		return nil, err
	}
	ai := peer.AddrInfo{ID: pid}
	for _, a := range addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			ai.Addrs = append(ai.Addrs, m)
		}
	}
	if err := g.cfg.Host.Connect(ctx, ai); err != nil {
		return nil, err
	}
	st, err := g.cfg.Host.NewStream(ctx, pid, proto)
	if err != nil {
		return nil, err
	}
	return relay.StreamConn{Stream: st}, nil
}

// proxyError answers a request whose node could not be reached.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	host, _ := netaddr.CanonicalHost(r.Host)
	if r.Context().Err() != nil {
		g.log.Debug("request abandoned: the visitor left", "host", host, "err", err)
		return // nobody reads an answer
	}
	g.log.Info("node unreachable", "host", host, "err", err)
	if errors.Is(err, relay.ErrBusy) {
		w.Header().Set("Retry-After", "1")
		page(w, http.StatusServiceUnavailable, "Busy", html.EscapeString(host)+" has too many open connections. Try again in a moment.")
		return
	}
	page(w, http.StatusBadGateway, html.EscapeString(host)+" is offline",
		"The personal cloud at "+html.EscapeString(host)+" cannot be reached right now: it may be switched off or have lost its connection. Try again later.")
}

// Status is the routing state of a name, for ?status.
type Status struct {
	Name       string    `json:"name"`
	Registered bool      `json:"registered"`
	DID        string    `json:"did,omitempty"`
	Direct     []string  `json:"direct,omitempty"`
	Supernodes []string  `json:"supernodes,omitempty"`
	Attached   bool      `json:"attached_here"`
	Resolved   time.Time `json:"resolved,omitzero"`
	LastRoute  string    `json:"last_route,omitempty"`
	// TLSMode is the domain's (records.Domain.TLS, "auto" when unset);
	// TLS where the last visitor's TLS ended (TLSAtNode: end to end;
	// TLSAtGateway: this gateway could read it) and TLSReason why.
	TLSMode   string          `json:"tls_mode,omitempty"`
	TLS       string          `json:"tls,omitempty"`
	TLSReason string          `json:"tls_reason,omitempty"`
	LastError string          `json:"last_error,omitempty"`
	Error     string          `json:"error,omitempty"`
	Record    *records.DID    `json:"did_record,omitempty"`
	Grant     *records.Grant  `json:"grant,omitempty"`
	Domain    *records.Domain `json:"domain_record,omitempty"`
}

// visitorError is what ?status tells anyone of a failed dial: the kind
// of failure, never the dial errors themselves, which would map the
// supernode's own network for whoever publishes a did record with
// internal "direct" addresses (open or closed ports, timeouts). The
// details go to the gateway's log (proxyError).
func visitorError(err error) string {
	switch {
	case errors.Is(err, relay.ErrBusy):
		return "busy: the node is at its connection limit"
	case errors.Is(err, context.DeadlineExceeded):
		return "offline: no route to the node answered in time"
	default:
		return "offline: no route to the node answered"
	}
}

func (g *Gateway) serveStatus(w http.ResponseWriter, r *http.Request, name string, e *entry, err error) {
	st := Status{Name: name}
	code := http.StatusOK
	switch {
	case errors.Is(err, errNoName), errors.Is(err, errLapsed):
		code = http.StatusNotFound
		st.Error = err.Error()
	case err != nil:
		code = http.StatusBadGateway
		st.Error = "the name could not be resolved right now"
		g.log.Info("status: resolve failed", "name", name, "err", err)
	default:
		st.Registered = true
		st.DID = e.res.Name.Grant.DID.DID()
		st.Grant = &e.res.Name.Grant
		st.Domain = e.res.Domain
		st.Resolved = e.resolved
		if d := e.res.DID; d != nil {
			st.Record = d
			st.Direct = d.Direct
			for _, p := range d.Supernodes {
				st.Supernodes = append(st.Supernodes, p.ID.DID())
			}
		} else {
			st.Error = "the node's did record could not be found"
		}
		st.Attached = g.cfg.Relay != nil && g.cfg.Relay.Attached(e.res.Name.Grant.DID)
		st.TLSMode = cmp.Or(tlsMode(e.res), "auto")
		e.mu.Lock()
		st.LastRoute, st.LastError = e.lastRoute, e.lastErr
		st.TLS, st.TLSReason = e.lastTLS, e.tlsWhy
		e.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(st)
}

// clientIP is the request's peer address (never a header the client
// wrote).
func clientIP(r *http.Request) string { return netaddr.Host(r.RemoteAddr) }

// clientKey is the client that limits count (netaddr.ClientKey).
func clientKey(r *http.Request) string { return netaddr.ClientKey(clientIP(r)) }

// page writes a small self-contained HTML page.
func page(w http.ResponseWriter, code int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">`+
		`<title>%s</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}`+
		`h1{font-size:1.4em}small{color:#777}</style></head><body><h1>%s</h1><p>%s</p><p><small>%d %s · PC2 gateway</small></p></body></html>`+"\n",
		title, title, body, code, http.StatusText(code))
}
