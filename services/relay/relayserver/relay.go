// Package relayserver is the supernode side of the Active Proxy (the
// protocol is in package relay): personal nodes behind NAT attach to it
// over their outbound libp2p connection, and the supernode reaches them by
// opening streams back over that connection (OpenStream). It answers the
// control stream, maps public TCP ports to nodes, checks dial-backs and
// serves relay.ProtocolForward for other supernodes' gateways.
//
// # Attaching
//
// An attach is checked against the challenge this relay sent on the same
// stream: the signature (relay.VerifyAttach), that the DID is the peer's
// (dht.PeerToID), and that the time is within ClockSkew.
//
// A node attaching again (a reconnect after a network change, or a
// replaced connection) replaces its old session at once: the old control
// stream is told "detached: replaced" and closed. There is never an
// "already attached" wait.
//
// # Limits
//
// Per node: concurrent streams to it (Limits.Streams; beyond that
// OpenStream fails at once with relay.ErrBusy), relayed bytes per second
// in each direction (a token bucket on every stream), mapped ports. Per
// peer on the control protocol: one attach in progress. Other inbound
// streams (a node flooding the supernode) meet libp2p's resource manager,
// which dht sizes for thousands of attached nodes (dht.Limits). A
// misbehaving node is refused with a message saying why; it never stops
// the others. An attached node's connection is protected from libp2p's
// connection manager, so trimming never detaches a node.
//
// # Mapped TCP ports
//
// A node lists the services it exposes (relay.Message.TCP). Each (DID,
// service) gets a public port in [PortMin, PortMax] derived from a hash of
// both, probing upwards past ports in use; assignments are kept in the
// data dir, so a node gets the same port back after a reconnect or a relay
// restart.
package relayserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/internal/shares"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
)

// Config configures a Relay.
type Config struct {
	// Host is the supernode's libp2p host (the DHT's).
	Host host.Host
	// Limits per node; zero fields take relay.DefaultLimits.
	Limits relay.Limits
	// KeepAlive is the ping interval nodes are told to use (default 5 s).
	KeepAlive time.Duration
	// ClockSkew is the accepted difference of an attach's time (default 5 min).
	ClockSkew time.Duration
	// ListenIP is the address mapped ports listen on (default all).
	ListenIP string
	// PortMin and PortMax bound mapped ports (default 20000-22000).
	PortMin, PortMax int
	// PortsFile keeps port assignments across restarts ("" = memory only).
	PortsFile string
	// PortsUnusedFor is how long the port assignments of a node that does
	// not attach are kept (default 30 days); when the range is full, a new
	// service takes the port of the node detached longest ago sooner.
	PortsUnusedFor time.Duration
	// PortNodesPerAddr bounds the attached nodes with mapped ports from
	// one address (an IPv4 address or IPv6 /64; default 16): keys are
	// free, so the per-node limit alone would let one machine fill the
	// range. A node past it attaches without ports.
	PortNodesPerAddr int
	// TURN, if set, issues STUN/TURN credentials to an attached node; they
	// go out with "attached" and again whenever the node asks ("turn").
	TURN func(id identity.ID) relay.TURNInfo
	// Forwarders says which peers may forward HTTP to attached nodes
	// (relay.ProtocolForward): the gateways of the domains this
	// supernode serves (dht.GatewaySet). nil: nobody. A forwarded
	// request carries the client address the node's login limits count,
	// so a stranger's forwards are refused.
	Forwarders func(ctx context.Context, p peer.ID) bool
	// MaxNodes bounds the attached nodes (0: no bound but the host's
	// resource limits). A node past it is refused with the reason, and
	// attaches to its next supernode, before the supernode runs out of
	// descriptors or memory; a node already attached may attach again.
	MaxNodes int
	// Listen opens a mapped port's listener (default net.Listen).
	Listen func(network, addr string) (net.Listener, error)
	// Metrics, if set, receives the relay's (relayMetrics).
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	Now     func() time.Time
}

// Relay is the relay service of a supernode.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	did   string
	ports *portTable
	m     *relayMetrics

	mu        sync.Mutex
	sessions  map[peer.ID]*session
	attaching map[peer.ID]bool
	// forwarding counts the streams each forwarding gateway holds to
	// each node, within its share (forwardShare).
	forwarding shares.Counter[forwardKey]
	// connecting and connectingAll count the node-to-node streams
	// (handleConnect) per other peer and node, and per node.
	connecting    shares.Counter[forwardKey]
	connectingAll shares.Counter[identity.ID]
	closed        bool

	stopPings chan struct{} // closed by Close: ends pingLoop
	notifee   network.Notifiee
}

// session is one attached node.
type session struct {
	id      identity.ID
	peer    peer.ID
	addr    string // the node's address as limits count it (netaddr.ClientKey)
	since   time.Time
	stream  network.Stream
	streams chan struct{} // semaphore of Limits.Streams
	in, out *rate.Limiter // the node's bandwidth, each direction
	done    chan struct{}
	once    sync.Once
	wmu     sync.Mutex  // serialises writes on stream
	dialing atomic.Bool // a dial-back runs
	// quiet: the node attached with relay.ProtocolAttach2, so nothing
	// reads its stream; pingLoop pings it and notices its end.
	quiet bool

	// ports are mapped after the session is registered (a replaced
	// session must free the node's preferred ports first), so Sessions,
	// Close and a replacing attach may look at them meanwhile.
	pmu    sync.Mutex
	ports  map[string]*mappedPort
	closed bool // endSession ran: a port mapped now is closed at once
}

// addPort records mp, or closes it and returns false when the session
// has already ended.
func (s *session) addPort(name string, mp *mappedPort) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.closed {
		mp.close()
		return false
	}
	s.ports[name] = mp
	return true
}

// portNumbers returns the session's mapped ports by service.
func (s *session) portNumbers() map[string]int {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	out := make(map[string]int, len(s.ports))
	for name, mp := range s.ports {
		out[name] = mp.port
	}
	return out
}

// write sends one control message.
func (s *session) write(m *relay.Message) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return relay.WriteMessage(s.stream, m)
}

func (s *session) end() { s.once.Do(func() { close(s.done); s.stream.Reset() }) }

// New starts the relay on cfg.Host.
func New(cfg Config) (*Relay, error) {
	if cfg.Host == nil {
		return nil, errors.New("relay: no host")
	}
	if cfg.Limits.Streams <= 0 {
		cfg.Limits.Streams = relay.DefaultLimits.Streams
	}
	if cfg.Limits.BytesPerSecond <= 0 {
		cfg.Limits.BytesPerSecond = relay.DefaultLimits.BytesPerSecond
	}
	if cfg.Limits.Ports <= 0 {
		cfg.Limits.Ports = relay.DefaultLimits.Ports
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 5 * time.Second
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = 5 * time.Minute
	}
	if cfg.PortsUnusedFor <= 0 {
		cfg.PortsUnusedFor = 30 * 24 * time.Hour
	}
	if cfg.PortNodesPerAddr <= 0 {
		cfg.PortNodesPerAddr = 16
	}
	if cfg.PortMin == 0 && cfg.PortMax == 0 {
		cfg.PortMin, cfg.PortMax = 20000, 22000
	}
	if cfg.PortMin < 1 || cfg.PortMax > 65535 || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("relay: port range %d-%d", cfg.PortMin, cfg.PortMax)
	}
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	id, err := dht.PeerToID(cfg.Host.ID())
	if err != nil {
		return nil, fmt.Errorf("relay: host key: %w", err)
	}
	pt, err := loadPorts(cfg.PortsFile, cfg.PortMin, cfg.PortMax, cfg.PortsUnusedFor, cfg.Now())
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: cfg.Logger, did: id.DID(), ports: pt,
		sessions: map[peer.ID]*session{}, attaching: map[peer.ID]bool{}, stopPings: make(chan struct{})}
	if r.m, err = newRelayMetrics(r, cfg.Metrics); err != nil {
		return nil, err
	}
	cfg.Host.SetStreamHandler(relay.ProtocolAttach, r.handleAttach)
	cfg.Host.SetStreamHandler(relay.ProtocolAttach2, r.handleAttach)
	cfg.Host.SetStreamHandler(relay.ProtocolControl, r.handleControl)
	cfg.Host.SetStreamHandler(relay.ProtocolForward, r.handleForward)
	cfg.Host.SetStreamHandler(relay.ProtocolConnect, r.handleConnect)
	r.notifee = &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) { r.connClosed(c) }}
	cfg.Host.Network().Notify(r.notifee)
	go r.pingLoop()
	return r, nil
}

// Close detaches every node and stops the mapped ports.
func (r *Relay) Close() error {
	r.cfg.Host.RemoveStreamHandler(relay.ProtocolAttach)
	r.cfg.Host.RemoveStreamHandler(relay.ProtocolAttach2)
	r.cfg.Host.RemoveStreamHandler(relay.ProtocolControl)
	r.cfg.Host.RemoveStreamHandler(relay.ProtocolForward)
	r.cfg.Host.RemoveStreamHandler(relay.ProtocolConnect)
	r.cfg.Host.Network().StopNotify(r.notifee)
	r.mu.Lock()
	if !r.closed {
		close(r.stopPings)
	}
	r.closed = true
	ss := make([]*session, 0, len(r.sessions))
	for p, s := range r.sessions {
		ss = append(ss, s)
		r.unprotect(p)
	}
	r.sessions = map[peer.ID]*session{}
	r.mu.Unlock()
	for _, s := range ss {
		s.write(&relay.Message{Type: relay.TypeDetached, Error: "relay shutting down"})
		r.endSession(s)
	}
	return nil
}

// SessionInfo describes an attached node.
type SessionInfo struct {
	DID   string         `json:"did"`
	Peer  string         `json:"peer"`
	Since time.Time      `json:"since"`
	Ports map[string]int `json:"ports,omitempty"`
}

// Sessions lists the attached nodes.
func (r *Relay) Sessions() []SessionInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]SessionInfo, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, SessionInfo{DID: s.id.DID(), Peer: s.peer.String(), Since: s.since, Ports: s.portNumbers()})
	}
	return out
}

// Attached reports whether id is attached here.
func (r *Relay) Attached(id identity.ID) bool {
	_, err := r.session(id)
	return err == nil
}

func (r *Relay) session(id identity.ID) (*session, error) {
	p, err := dht.IDToPeer(id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[p]
	if !ok {
		return nil, fmt.Errorf("%w: %s", relay.ErrNotAttached, id.DID())
	}
	return s, nil
}

// OpenStream opens a stream of protocol proto to the attached node id over
// its own connection (never dialling it: it may be behind NAT). The stream
// counts against the node's limits until closed. A node not attached here
// is relay.ErrNotAttached, one at its stream limit relay.ErrBusy: one
// session lookup answers both whether and how to reach the node.
func (r *Relay) OpenStream(ctx context.Context, id identity.ID, proto protocol.ID) (network.Stream, error) {
	s, err := r.session(id)
	if err != nil {
		return nil, err
	}
	select {
	case s.streams <- struct{}{}:
	default:
		r.m.refused.WithLabelValues("busy").Inc()
		return nil, fmt.Errorf("%w (%d) for %s", relay.ErrBusy, cap(s.streams), id.DID())
	}
	st, err := r.cfg.Host.NewStream(network.WithNoDial(ctx, "relay: the node dials us"), s.peer, proto)
	if err != nil {
		<-s.streams
		err = relay.AsBusy(err)
		if errors.Is(err, relay.ErrBusy) {
			r.m.refused.WithLabelValues("busy").Inc()
		}
		return nil, fmt.Errorf("relay: stream to %s: %w", id.DID(), err)
	}
	r.m.streams.WithLabelValues(string(proto)).Inc()
	ls := newLimitedStream(ctx, st, s.in, s.out, func() { <-s.streams })
	ls.read, ls.written = r.m.fromNode, r.m.toNode
	return ls, nil
}

// connAddr is the remote address of c as limits count it.
func connAddr(c network.Conn) string {
	ip, err := manet.ToIP(c.RemoteMultiaddr())
	if err != nil {
		return c.RemoteMultiaddr().String()
	}
	return netaddr.ClientKey(ip.String())
}

// portNodesFrom counts the other attached nodes from s's address that
// hold mapped ports.
func (r *Relay) portNodesFrom(s *session) int {
	r.mu.Lock()
	var others []*session
	for _, o := range r.sessions {
		if o != s && o.addr == s.addr {
			others = append(others, o)
		}
	}
	r.mu.Unlock()
	n := 0
	for _, o := range others {
		o.pmu.Lock()
		if len(o.ports) > 0 && !o.closed {
			n++
		}
		o.pmu.Unlock()
	}
	return n
}

// attachedDIDs are the DIDs attached now.
func (r *Relay) attachedDIDs() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.sessions))
	for _, s := range r.sessions {
		out[s.id.DID()] = true
	}
	return out
}

// handleAttach runs one node's control stream.
func (r *Relay) handleAttach(st network.Stream) {
	p := st.Conn().RemotePeer()
	log := r.log.With("peer", p.String())
	r.mu.Lock()
	if r.closed || r.attaching[p] {
		r.mu.Unlock()
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: "an attach from this peer is already in progress"})
		st.Reset()
		return
	}
	if full := r.full(p, len(r.attaching)); full != "" {
		r.mu.Unlock()
		r.m.refused.WithLabelValues("full").Inc()
		log.Info("attach refused", "err", full)
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: full})
		st.Close()
		return
	}
	r.attaching[p] = true
	r.mu.Unlock()
	s, err := r.attach(st, p)
	r.mu.Lock()
	delete(r.attaching, p)
	r.mu.Unlock()
	if err != nil {
		r.m.refused.WithLabelValues("attach").Inc()
		log.Warn("attach refused", "err", err)
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: err.Error()})
		st.Close()
		return
	}
	log.Info("node attached", "did", s.id.DID())
	if s.quiet {
		return // pingLoop keeps it, handleControl answers it
	}
	r.serveSession(s, log)
}

// full says why a new attach of p is refused when the relay holds
// MaxNodes with pending attaches under way ("" when it is not; r.mu
// held).
func (r *Relay) full(p peer.ID, pending int) string {
	if r.cfg.MaxNodes <= 0 || r.sessions[p] != nil || len(r.sessions)+pending < r.cfg.MaxNodes {
		return ""
	}
	return fmt.Sprintf("this supernode holds the most nodes it takes (%d): attach to another", r.cfg.MaxNodes)
}

func (r *Relay) attach(st network.Stream, p peer.ID) (*session, error) {
	id, err := dht.PeerToID(p)
	if err != nil {
		return nil, fmt.Errorf("peer %s has no Ed25519 DID key: %w", p, err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	st.SetDeadline(r.cfg.Now().Add(10 * time.Second))
	if err := relay.WriteMessage(st, &relay.Message{Type: relay.TypeChallenge, Nonce: nonce, Relay: r.did}); err != nil {
		return nil, fmt.Errorf("send challenge: %w", err)
	}
	m, err := relay.ReadMessage(st)
	if err != nil {
		return nil, fmt.Errorf("read attach: %w", err)
	}
	st.SetDeadline(time.Time{})
	if m.Type != relay.TypeAttach {
		return nil, fmt.Errorf("expected attach, got %q", m.Type)
	}
	if m.DID != id.DID() {
		return nil, fmt.Errorf("attach as %s from the key of %s", m.DID, id.DID())
	}
	if string(m.Nonce) != string(nonce) {
		return nil, errors.New("attach answers another challenge (replayed)")
	}
	if d := r.cfg.Now().Sub(time.Unix(m.Time, 0)); d > r.cfg.ClockSkew || d < -r.cfg.ClockSkew {
		return nil, fmt.Errorf("attach time off by %v", d.Round(time.Second))
	}
	if !relay.VerifyAttach(ed25519.PublicKey(id[:]), r.did, nonce, m) {
		return nil, errors.New("attach signature does not verify with the DID's key")
	}
	if len(m.TCP) > r.cfg.Limits.Ports {
		return nil, fmt.Errorf("%d TCP services asked, the limit is %d", len(m.TCP), r.cfg.Limits.Ports)
	}
	s := &session{id: id, peer: p, addr: connAddr(st.Conn()), since: r.cfg.Now(), stream: st,
		streams: make(chan struct{}, r.cfg.Limits.Streams),
		in:      newBandwidth(r.cfg.Limits.BytesPerSecond),
		out:     newBandwidth(r.cfg.Limits.BytesPerSecond),
		ports:   map[string]*mappedPort{}, done: make(chan struct{}),
		quiet: st.Protocol() == relay.ProtocolAttach2}
	// Replace an older session of the same node at once.
	r.mu.Lock()
	old := r.sessions[p]
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("relay shutting down")
	}
	if full := r.full(p, 0); full != "" {
		r.mu.Unlock()
		return nil, errors.New(full)
	}
	r.sessions[p] = s
	r.protect(p)
	r.mu.Unlock()
	if old != nil {
		old.write(&relay.Message{Type: relay.TypeDetached, Error: "replaced by a newer attach"})
		r.endSession(old)
		r.log.Info("replaced stale session", "did", id.DID())
	}
	if err := r.ports.keepOnly(id, m.TCP); err != nil {
		r.log.Warn("port table not saved", "err", err)
	}
	ports := map[string]int{}
	// Counted only for a node that asks for ports: portNodesFrom walks
	// every session (an attach storm of 10,000 nodes would walk them
	// 10,000 times).
	if len(m.TCP) > 0 {
		if n := r.portNodesFrom(s); n >= r.cfg.PortNodesPerAddr {
			r.log.Warn("no ports for this node: its address's nodes hold ports already", "did", id.DID(), "addr", s.addr, "nodes", n)
			m.TCP = nil
		}
	}
	for _, name := range m.TCP {
		mp, err := r.mapPort(s, name)
		if err != nil {
			r.log.Warn("port mapping failed", "did", id.DID(), "service", name, "err", err)
			continue
		}
		if !s.addPort(name, mp) {
			return nil, errors.New("session ended while its ports were mapped")
		}
		ports[name] = mp.port
	}
	lim := r.cfg.Limits
	ok := &relay.Message{Type: relay.TypeAttached, Ports: ports, KeepAlive: r.cfg.KeepAlive.Milliseconds(), Limits: &lim}
	if r.cfg.TURN != nil {
		t := r.cfg.TURN(id)
		ok.TURN = &t
	}
	if err := relay.WriteMessage(st, ok); err != nil {
		r.dropSession(s)
		return nil, fmt.Errorf("send attached: %w", err)
	}
	return s, nil
}

// serveSession answers an attach/1 node's pings and requests until its
// stream ends or goes silent.
func (r *Relay) serveSession(s *session, log *slog.Logger) {
	defer r.dropSession(s)
	for {
		s.stream.SetReadDeadline(r.cfg.Now().Add(3 * r.cfg.KeepAlive))
		m, err := relay.ReadMessage(s.stream)
		if err != nil {
			select {
			case <-s.done:
			default:
				log.Info("node detached", "did", s.id.DID(), "err", err)
			}
			return
		}
		if m.Type == relay.TypeDialBack {
			// Answered when done: the pings go on meanwhile.
			if !s.dialing.CompareAndSwap(false, true) {
				s.write(&relay.Message{Type: relay.TypeDialBackResult, Error: "a dial-back is already running"})
				continue
			}
			go func() {
				defer s.dialing.Store(false)
				s.write(r.dialBack(context.Background(), s, m.Port))
			}()
			continue
		}
		answer := r.answer(s, m)
		if answer == nil {
			log.Warn("unexpected control message, ending session", "did", s.id.DID(), "type", m.Type)
			s.write(&relay.Message{Type: relay.TypeDetached, Error: "unexpected " + m.Type})
			return
		}
		if err := s.write(answer); err != nil {
			return
		}
	}
}

// answer is the answer to an attached node's ping or turn request (nil
// for any other message).
func (r *Relay) answer(s *session, m *relay.Message) *relay.Message {
	switch m.Type {
	case relay.TypePing:
		return &relay.Message{Type: relay.TypePong}
	case relay.TypeTURN:
		if r.cfg.TURN == nil {
			return &relay.Message{Type: relay.TypeTURN, Error: "this supernode runs no TURN server"}
		}
		t := r.cfg.TURN(s.id)
		return &relay.Message{Type: relay.TypeTURN, TURN: &t}
	}
	return nil
}

// dropSession removes s if it is still current, then ends it.
func (r *Relay) dropSession(s *session) {
	r.mu.Lock()
	if r.sessions[s.peer] == s {
		delete(r.sessions, s.peer)
		r.unprotect(s.peer)
	}
	r.mu.Unlock()
	r.endSession(s)
}

// protectTag marks attached nodes' connections in the connection manager.
const protectTag = "pc2-relay"

// protect keeps the connection manager from trimming an attached node's
// connection: the node cannot be reached without it, and its reconnect
// would cost an attach. A node attaching again keeps the protection of
// its replaced session. Called with r.mu held, so that a detach racing a
// new attach of the same peer cannot leave it unprotected.
func (r *Relay) protect(p peer.ID) { r.cfg.Host.ConnManager().Protect(p, protectTag) }

// unprotect ends protect once p's current session ends (r.mu held).
func (r *Relay) unprotect(p peer.ID) { r.cfg.Host.ConnManager().Unprotect(p, protectTag) }

func (r *Relay) endSession(s *session) {
	s.end()
	s.pmu.Lock()
	s.closed = true
	ports := s.ports
	s.pmu.Unlock()
	for _, mp := range ports {
		mp.close()
	}
}
