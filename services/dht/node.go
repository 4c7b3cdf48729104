// Package dht runs PC2's private Kademlia DHT on go-libp2p: one host per node
// keyed by the node key, kad-dht with the /pc2 protocol prefix, the did, name
// and domain validators from package records, a persistent record store, and
// the loops that keep records alive (owner republishing and supernode
// re-replication).
package dht

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/libp2p/go-libp2p"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

// ProtocolPrefix keeps PC2's DHT apart from every other Kademlia network.
const ProtocolPrefix = "/pc2"

// Default listen ports of a supernode (DESIGN.md: "Boson DHT" and "Active
// Proxy" ports).
const (
	DefaultQUICPort = 39001
	DefaultTCPPort  = 8090
)

// DefaultListenAddrs are a supernode's listeners when Config.ListenAddrs is
// empty.
var DefaultListenAddrs = []string{
	fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultQUICPort),
	fmt.Sprintf("/ip6/::/udp/%d/quic-v1", DefaultQUICPort),
	fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultTCPPort),
	fmt.Sprintf("/ip6/::/tcp/%d", DefaultTCPPort),
}

// Get quorums (see Config.GetQuorum).
const (
	DefaultGetQuorum = 3
	FullLookup       = -1
)

// Errors.
var (
	ErrNotFound = errors.New("dht: record not found")
	ErrNoKey    = errors.New("dht: config has no node key")
	ErrClosed   = errors.New("dht: node closed")
)

// Mode selects server (supernode) or client (personal node) behaviour.
type Mode int

const (
	ModeServer Mode = iota // answers queries and stores records
	ModeClient             // only asks
)

// Config configures a Node. The zero value plus Key is a server with an
// in-memory store on the default ports.
type Config struct {
	// Key is the node key; it is also the libp2p identity. Required unless
	// Host is set.
	Key ed25519.PrivateKey
	// Mode is ModeServer (default) or ModeClient.
	Mode Mode
	// ListenAddrs are libp2p multiaddrs to listen on. Empty: DefaultListenAddrs
	// for servers, none for clients. Tests use port 0.
	ListenAddrs []string
	// Bootstrap peers (full multiaddrs with /p2p/<peer id>).
	Bootstrap []peer.AddrInfo
	// DataDir holds the persistent record store (LevelDB). Empty keeps
	// records in memory only. Ignored when Datastore is set.
	DataDir string
	// Datastore overrides DataDir, e.g. for tests.
	Datastore ds.Batching
	// Host, when set, is used instead of building one from Key and
	// ListenAddrs (in-process networks and benchmarks use a mocknet host).
	// The node does not close a host it was given.
	Host host.Host
	// Trust pins the operators of the domains this node serves; see
	// records.Validator.
	Trust records.Trust
	// AllowUnknownDomains: see records.Validator. Only for clients.
	AllowUnknownDomains bool
	// RepublishInterval is how often records this node published are put
	// again (default 1h).
	RepublishInterval time.Duration
	// ReplicateInterval is how often a server re-puts every valid record in
	// its store so that records survive churn (default 1h; negative
	// disables).
	ReplicateInterval time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger (nil: discard).
	Logger *slog.Logger
	// GetQuorum is kad-dht's quorum for Get: it returns the best record once
	// it holds more than this many valid copies (a copy in the node's own
	// store counts). 0 means DefaultGetQuorum; FullLookup completes the
	// lookup over the closest peers, which is slower but never stale and
	// repairs stale copies (docs/benchmarks.md has the figures).
	GetQuorum int
	// DHTOptions are extra kad-dht options (benchmarks tune the bucket size
	// and timeouts).
	DHTOptions []kaddht.Option
	// PublicDialsOnly makes the host dial public addresses only, never
	// loopback, private, link-local or CGNAT ones (a supernode on the
	// internet: addresses from records and peers must not make it probe
	// its own networks). Ignored when Host is set.
	PublicDialsOnly bool
	// Limits size the host's resource and connection managers (see
	// Limits; the zero value: a server sized for DefaultServerPeers, a
	// client with libp2p's defaults). Ignored when Host is set.
	Limits Limits
	// Metrics, if set, receives libp2p's metrics (its resource manager's
	// and the host's own: connections, streams, identify, ...). Ignored
	// when Host is set.
	Metrics prometheus.Registerer
	// Announce are more addresses the host tells peers it is reachable
	// at, besides its listening ones: the public address of a server
	// whose interface holds only a private one (1:1 NAT at a cloud
	// provider, a port forward), or a /dns4 name. They reach the records
	// that list the node (its presence record, its operator's domain
	// record) through Multiaddrs. Ignored when Host is set.
	Announce []string
	// WebSocketTLS is the TLS config of the host's secure WebSocket
	// listeners (a ListenAddrs entry ending in /tls/ws): a supernode's,
	// handed connections for relay.<domain> by its gateway's port 443.
	// Every host dials /tls/ws addresses (nodes behind a firewall that
	// lets only TCP 443 out), checking the certificate against the
	// system's roots: libp2p's own handshake inside authenticates the
	// peer either way.
	WebSocketTLS *tls.Config
}

// Node is a running DHT participant.
type Node struct {
	cfg       Config
	log       *slog.Logger
	host      host.Host
	ownsHost  bool
	dht       *kaddht.IpfsDHT
	store     ds.Batching
	ownsStore bool
	validator *records.Validator

	mu    sync.Mutex
	owned map[string]*owned // records this node publishes and republishes

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// New starts a node. It does not block on bootstrapping: call Bootstrap.
func New(ctx context.Context, cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RepublishInterval == 0 {
		cfg.RepublishInterval = time.Hour
	}
	if cfg.ReplicateInterval == 0 {
		cfg.ReplicateInterval = time.Hour
	}
	if cfg.GetQuorum == 0 {
		cfg.GetQuorum = DefaultGetQuorum
	}
	n := &Node{cfg: cfg, log: log, owned: map[string]*owned{}}
	n.validator = &records.Validator{Now: cfg.Now, Trust: cfg.Trust, AllowUnknownDomains: cfg.AllowUnknownDomains}

	var err error
	switch {
	case cfg.Datastore != nil:
		n.store = cfg.Datastore
	case cfg.DataDir != "":
		// LevelDB: pure Go, crash-safe journal, small and frugal on a Pi.
		st, err := leveldb.NewDatastore(cfg.DataDir, nil)
		if err != nil {
			return nil, fmt.Errorf("open record store %s: %w", cfg.DataDir, err)
		}
		n.store, n.ownsStore = st, true
	default:
		n.store, n.ownsStore = dssync.MutexWrap(ds.NewMapDatastore()), true
	}

	if cfg.Host != nil {
		n.host = cfg.Host
	} else {
		if len(cfg.Key) != ed25519.PrivateKeySize {
			n.closeStore()
			return nil, ErrNoKey
		}
		h, err := newHost(cfg)
		if err != nil {
			n.closeStore()
			return nil, err
		}
		n.host, n.ownsHost = h, true
	}

	mode := kaddht.ModeServer
	if cfg.Mode == ModeClient {
		mode = kaddht.ModeClient
	}
	opts := []kaddht.Option{
		kaddht.ProtocolPrefix(ProtocolPrefix),
		kaddht.Mode(mode),
		kaddht.Validator(n.validator.Namespaced()),
		kaddht.Datastore(n.store),
		kaddht.DisableProviders(),
		// Records carry their own signed expiry; keep them at least as long.
		kaddht.MaxRecordAge(records.MaxNameLifetime),
		kaddht.BootstrapPeers(cfg.Bootstrap...),
	}
	if cfg.Mode == ModeClient {
		// A client's routing table holds the few supernodes it knows,
		// under kad-dht's threshold of 10 peers, below which kad-dht
		// refreshes it every 2 minutes: a self-lookup at each
		// supernode, whose DHT stream the supernode keeps open for a
		// minute after it. That held a stream, a goroutine and about
		// 16 KB of stack per node on its supernodes half of the time
		// (docs/benchmarks.md, "10,000 nodes"). Clients refresh every
		// ClientRefreshInterval instead (clientRefreshLoop).
		opts = append(opts, kaddht.DisableAutoRefresh())
	}
	opts = append(opts, cfg.DHTOptions...)
	n.dht, err = kaddht.New(n.host, opts...)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("start dht: %w", err)
	}

	loopCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(1)
	go n.republishLoop(loopCtx)
	if cfg.Mode == ModeServer && cfg.ReplicateInterval > 0 {
		n.wg.Add(1)
		go n.replicateLoop(loopCtx)
	}
	if cfg.Mode == ModeClient {
		n.wg.Add(1)
		go n.clientRefreshLoop(loopCtx)
	}
	log.Info("dht node started", "peer", n.host.ID(), "mode", modeName(cfg.Mode), "addrs", n.host.Addrs())
	return n, nil
}

func modeName(m Mode) string {
	if m == ModeClient {
		return "client"
	}
	return "server"
}

func newHost(cfg Config) (host.Host, error) {
	sk, err := crypto.UnmarshalEd25519PrivateKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	worked := &lastWorked{}
	announce, err := ParseAnnounce(cfg.Announce)
	if err != nil {
		return nil, err
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 && cfg.Mode == ModeServer {
		listen = DefaultListenAddrs
	}
	opts := []libp2p.Option{
		libp2p.Identity(sk),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Transport(websocket.New, websocket.WithTLSConfig(cfg.WebSocketTLS)),
		// A WebSocket listener is a supernode's loopback end of its port
		// 443 (the gateway hands it relay.<domain>): not an address to
		// tell anyone.
		libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			return append(withoutWebSocket(addrs), announce...)
		}),
		// TLS 1.3 first: Go's TLS picks AES-GCM where both ends have AES
		// instructions and ChaCha20-Poly1305 elsewhere (the Pi 4); Noise
		// is always ChaCha20 (relay throughput: docs/benchmarks.md).
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.SwarmOpts(swarm.WithDialRanker(worked.rank)),
		libp2p.DisableRelay(),
	}
	if cfg.Metrics != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Metrics))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if len(listen) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	if cfg.Mode == ModeServer {
		opts = append(opts, libp2p.Muxer(yamux.ID, serverMuxer()))
	}
	if cfg.PublicDialsOnly {
		opts = append(opts, libp2p.ConnectionGater(publicDials{}))
	}
	if lim, ok := cfg.Limits.withDefaults(cfg.Mode); ok {
		sized, err := lim.hostOptions(cfg.Metrics)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sized...)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.Stat().Direction == network.DirOutbound {
			worked.remember(c.RemoteMultiaddr())
		}
	}})
	return h, nil
}

// lastWorked remembers the addresses a host's dials last connected over,
// for its dial ranker: the address that worked last time (a node on a
// network that lets only port 443 out, on its supernode's WebSocket
// address) is tried at once next time, beside plain TCP, so a reconnect
// there does not wait out TCP's head start; where TCP works too, it
// still wins the race.
type lastWorked struct {
	mu    sync.Mutex
	addrs map[string]time.Time
}

// lastWorkedTTL is how long a remembered address keeps its place; the
// bound, how many are remembered.
const (
	lastWorkedTTL = 24 * time.Hour
	lastWorkedMax = 1024
)

func (w *lastWorked) remember(a ma.Multiaddr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.addrs == nil || len(w.addrs) >= lastWorkedMax {
		w.addrs = map[string]time.Time{}
	}
	w.addrs[workedKey(a)] = time.Now()
}

// workedKey is the form of an address lastWorked compares: without a TLS
// server name, which a connection's remote address may leave out where
// the dialed address had it.
func workedKey(a ma.Multiaddr) string {
	var out ma.Multiaddr
	for _, c := range a {
		if c.Protocol().Code != ma.P_SNI {
			out = append(out, c)
		}
	}
	return out.String()
}

// serverAcceptBacklog is a server's yamux AcceptBacklog: how many streams
// of one connection may wait to be accepted, and how many the server may
// have opened on it that the peer has not acknowledged yet (go-yamux
// uses one figure for both; libp2p's default is 256). Each connection
// holds a channel of that many pointers for its life: 2 KB at 256, a
// twenty-fifth of what an idle attached node costs a supernode
// (docs/benchmarks.md, "Relay: 10,000 attached nodes"). A supernode
// opens streams to a node for its visitors; 64 unacknowledged at once
// still let it open 1,280 a second to a node 50 ms away, beyond what a
// home uplink serves, and an open past them waits for an
// acknowledgement instead of failing. The swarm accepts the streams
// peers open as they come, so 64 waiting is a burst no peer needs.
const serverAcceptBacklog = 64

// serverKeepAlive is a server's yamux KeepAliveInterval: a connection
// that brings nothing for that long gets a yamux ping, and ends when the
// pong is not back within yamux's ConnectionWriteTimeout (10 s). A node
// attached with relay.ProtocolAttach2 writes nothing on its own while
// the relay pings it, so this is how a supernode sees such a node vanish
// (a power cut, a NAT that forgot it): within 15 s of its last frame, as
// attach/1's 3 x 5 s of silence did, where libp2p's 30 s took 40 s.
// A pong is 12 bytes each way per idle connection every 5 s.
const serverKeepAlive = 5 * time.Second

// serverMuxer is libp2p's yamux with serverAcceptBacklog and
// serverKeepAlive.
func serverMuxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.AcceptBacklog = serverAcceptBacklog
	t.KeepAliveInterval = serverKeepAlive
	return &t
}

// rank is the dial ranker: tcpFirst, with the address that worked last
// (within lastWorkedTTL) at once too.
func (w *lastWorked) rank(addrs []ma.Multiaddr) []network.AddrDelay {
	w.mu.Lock()
	var best ma.Multiaddr
	var when time.Time
	for _, a := range addrs {
		if t, ok := w.addrs[workedKey(a)]; ok && t.After(when) && time.Since(t) < lastWorkedTTL {
			best, when = a, t
		}
	}
	w.mu.Unlock()
	if best == nil {
		return tcpFirst(addrs)
	}
	out := tcpFirst(addrs)
	for i := range out {
		if out[i].Addr.Equal(best) {
			out[i].Delay = 0
		}
	}
	return out
}

// tcpFirst is the dial ranker: a peer's plain TCP addresses at once, the
// others (QUIC, WebSocket over TLS on port 443) 250 ms later if no TCP
// connection has come up by then. libp2p's default prefers QUIC, but a
// node's relay traffic over TCP with TLS moves about 1.8 times the bytes
// per CPU-second of QUIC on the supernode (docs/benchmarks.md, "Relay:
// one-stream throughput"), and WebSocket adds the gateway's hop; they
// remain the fallbacks where TCP, or everything but port 443, is
// blocked. Every address is tried on every dial, so a node that moves
// between networks finds what works there; lastWorked then puts it
// first.
func tcpFirst(addrs []ma.Multiaddr) []network.AddrDelay {
	out := make([]network.AddrDelay, 0, len(addrs))
	for _, a := range addrs {
		d := fallbackDelay
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil && !IsWebSocket(a) {
			d = 0
		}
		out = append(out, network.AddrDelay{Addr: a, Delay: d})
	}
	return out
}

// fallbackDelay is how long a dial waits for TCP before trying QUIC and
// WebSocket.
const fallbackDelay = 250 * time.Millisecond

// IsWebSocket reports whether a is a (secure) WebSocket address.
func IsWebSocket(a ma.Multiaddr) bool {
	for _, c := range a {
		if p := c.Protocol().Code; p == ma.P_WS || p == ma.P_WSS {
			return true
		}
	}
	return false
}

// ParseAnnounce parses Config.Announce: transport addresses, without
// /p2p/ (the host's own ID follows them wherever they are listed).
func ParseAnnounce(l []string) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, s := range l {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("announce %q: %w", s, err)
		}
		if t, id := peer.SplitAddr(a); id != "" || t == nil {
			return nil, fmt.Errorf("announce %q: a transport address, without /p2p/", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// withoutWebSocket drops WebSocket listeners from the addresses a host
// announces.
func withoutWebSocket(addrs []ma.Multiaddr) []ma.Multiaddr {
	out := addrs[:0:0]
	for _, a := range addrs {
		if !IsWebSocket(a) {
			out = append(out, a)
		}
	}
	return out
}

// Host is the node's libp2p host (the relay and gateway add protocols to it).
func (n *Node) Host() host.Host { return n.host }

// DHT exposes the underlying kad-dht (for routing-table inspection).
func (n *Node) DHT() *kaddht.IpfsDHT { return n.dht }

// Validator is the record validator this node applies.
func (n *Node) Validator() *records.Validator { return n.validator }

// ID is the node's identity.
func (n *Node) ID() (identity.ID, error) { return PeerToID(n.host.ID()) }

// AddrInfo is how other nodes reach this one.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
}

// Multiaddrs are the node's full addresses (with /p2p/<id>), for bootstrap
// lists.
func (n *Node) Multiaddrs() []ma.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	return addrs
}

// Bootstrap connects to the configured bootstrap peers (at least one must
// answer when any are configured) and fills the routing table.
func (n *Node) Bootstrap(ctx context.Context) error {
	var errs []error
	ok := 0
	for _, p := range n.cfg.Bootstrap {
		if p.ID == n.host.ID() {
			continue
		}
		if err := n.host.Connect(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("connect %s: %w", p.ID, err))
			continue
		}
		ok++
	}
	if len(n.cfg.Bootstrap) > 0 && ok == 0 && len(errs) > 0 {
		return fmt.Errorf("bootstrap: no peer reachable: %w", errors.Join(errs...))
	}
	for _, err := range errs {
		n.log.Warn("bootstrap peer unreachable", "err", err)
	}
	if err := n.dht.Bootstrap(ctx); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	// Wait (bounded by ctx) until the routing table has a peer, so the
	// first put or get does not fail on an empty table.
	for n.dht.RoutingTable().Size() == 0 && ok > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bootstrap: routing table still empty: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Put validates value and stores it in the DHT under key (on this node and
// the closest peers). It does not republish.
func (n *Node) Put(ctx context.Context, key string, value []byte) error {
	if err := n.dht.PutValue(ctx, key, value); err != nil && !n.storedAlone(err) {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// storedAlone reports whether a put failed only because a server has no
// peers yet: kad-dht stored the record locally before looking for peers, and
// replication spreads it once peers arrive.
func (n *Node) storedAlone(err error) bool {
	return n.cfg.Mode == ModeServer && errors.Is(err, kb.ErrLookupFailure)
}

// Publish puts value under key and keeps republishing it every
// RepublishInterval until Unpublish or Close, as long as it is valid. Use
// KeepPublished for records that must outlive their expiry.
func (n *Node) Publish(ctx context.Context, key string, value []byte) (PutResult, error) {
	res, err := n.PutVerified(ctx, key, value)
	if err != nil {
		return res, err
	}
	n.mu.Lock()
	n.owned[key] = &owned{value: value}
	n.mu.Unlock()
	return res, nil
}

// Signer makes the record to publish for seq at now.
type Signer func(seq uint64, now time.Time) ([]byte, error)

type owned struct {
	value []byte
	seq   uint64
	sign  Signer // nil: republish value as is
}

// NextSeq is the seq a publisher uses after current: above it and at least
// the clock's milliseconds, so a key restored on a fresh device (which knows
// no earlier seq) still publishes a winning record.
func NextSeq(current uint64, now time.Time) uint64 {
	return max(current+1, uint64(now.UnixMilli()))
}

// KeepPublished publishes the record sign makes now (with a seq above the
// one the network holds) and, every RepublishInterval until Unpublish or
// Close, signs and publishes a fresh one, so the record never expires while
// this node runs.
func (n *Node) KeepPublished(ctx context.Context, key string, sign Signer) (PutResult, error) {
	cur, err := n.CurrentSeq(ctx, key)
	if err != nil {
		return PutResult{}, err
	}
	o := &owned{seq: cur, sign: sign}
	res, err := n.republish(ctx, key, o)
	if err != nil {
		return res, err
	}
	n.mu.Lock()
	n.owned[key] = o
	n.mu.Unlock()
	return res, nil
}

// republish re-signs (when o has a Signer) and puts o's record.
func (n *Node) republish(ctx context.Context, key string, o *owned) (PutResult, error) {
	if o.sign != nil {
		now := n.cfg.now()
		seq := NextSeq(o.seq, now)
		val, err := o.sign(seq, now)
		if err != nil {
			return PutResult{}, fmt.Errorf("sign %s: %w", key, err)
		}
		o.value, o.seq = val, seq
	}
	res, err := n.PutVerified(ctx, key, o.value)
	res.Seq = o.seq
	return res, err
}

// Unpublish stops republishing key.
func (n *Node) Unpublish(key string) {
	n.mu.Lock()
	delete(n.owned, key)
	n.mu.Unlock()
}

// Get returns the best valid value stored under key anywhere in the
// network, or ErrNotFound, waiting for GetQuorum copies.
func (n *Node) Get(ctx context.Context, key string) ([]byte, error) {
	return n.get(ctx, key, n.cfg.GetQuorum)
}

// GetNewest is Get with a full lookup: for publishers, which must know the
// highest seq in the network.
func (n *Node) GetNewest(ctx context.Context, key string) ([]byte, error) {
	return n.get(ctx, key, FullLookup)
}

func (n *Node) get(ctx context.Context, key string, quorum int) ([]byte, error) {
	// A quorum ends the get before kad-dht's queries in flight return;
	// cancelling releases them (they would otherwise wait for ctx).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opts []routing.Option
	if quorum > 0 {
		opts = append(opts, kaddht.Quorum(quorum))
	}
	val, err := n.dht.GetValue(ctx, key, opts...)
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) {
			return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return val, nil
}

// Close stops the loops, the DHT, and the host and store if the node made
// them.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	var errs []error
	if n.dht != nil {
		errs = append(errs, n.dht.Close())
	}
	if n.ownsHost {
		errs = append(errs, n.host.Close())
	}
	errs = append(errs, n.closeStore())
	return errors.Join(errs...)
}

func (n *Node) closeStore() error {
	if n.ownsStore && n.store != nil {
		return n.store.Close()
	}
	return nil
}

// PeerToID maps a libp2p peer ID (an Ed25519 identity key) to a PC2 ID.
func PeerToID(p peer.ID) (identity.ID, error) {
	pk, err := p.ExtractPublicKey()
	if err != nil {
		return identity.ID{}, fmt.Errorf("peer %s: %w", p, err)
	}
	raw, err := pk.Raw()
	if err != nil || pk.Type() != crypto.Ed25519 {
		return identity.ID{}, fmt.Errorf("peer %s: not an Ed25519 key", p)
	}
	return identity.IDFromPublicKey(raw)
}

// IDToPeer maps a PC2 ID to its libp2p peer ID.
func IDToPeer(id identity.ID) (peer.ID, error) {
	pk, err := crypto.UnmarshalEd25519PublicKey(id[:])
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pk)
}

// ParseAddrInfos parses full multiaddrs (with /p2p/<id>) into peers, one
// per peer ID in the order the IDs first appear: the order is a preference
// (the tunnel attaches to the first supernodes of its list), which
// peer.AddrInfosFromP2pAddrs loses by collecting into a map.
func ParseAddrInfos(addrs []string) ([]peer.AddrInfo, error) {
	var infos []peer.AddrInfo
	index := map[peer.ID]int{}
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %w", s, err)
		}
		transport, id := peer.SplitAddr(m)
		if id == "" {
			return nil, fmt.Errorf("bootstrap address %q: %w", s, peer.ErrInvalidAddr)
		}
		i, ok := index[id]
		if !ok {
			i = len(infos)
			index[id] = i
			infos = append(infos, peer.AddrInfo{ID: id})
		}
		if transport != nil {
			infos[i].Addrs = append(infos[i].Addrs, transport)
		}
	}
	return infos, nil
}
