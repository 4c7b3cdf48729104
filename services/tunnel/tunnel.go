// Package tunnel is the personal node's side of the Active Proxy: it keeps
// the node attached to one or more supernodes' relays (package relay) over
// the node's own outbound libp2p connections, and serves what the relays
// send back: /pc2/http/1 streams become connections of the node's HTTP
// server (Listener), /pc2/tcp/1 streams are spliced to the local services
// the node exposes.
//
// Attachment: one loop per supernode, up to MaxAttached at a time (the
// first ones of the list at start; the rest wait as spares, tried when an
// attached one fails), so losing a
// supernode leaves the node reachable through another at once. Each loop
// connects, answers the relay's challenge with the node key, then pings
// every KeepAlive; a failed ping, a closed stream or a "detached" message
// ends the attachment and the loop retries with jittered exponential
// backoff capped at MaxBackoff (default 1 s, so a supernode that comes back
// is used again within a second). Reconnect (called on network changes)
// drops every connection and attaches again at once.
package tunnel

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backoff"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/turn"
)

// Config configures a Client.
type Config struct {
	// Host is the node's libp2p host (the DHT client's).
	Host host.Host
	// Key is the node key (the host's identity).
	Key ed25519.PrivateKey
	// Supernodes are the relays to attach to.
	Supernodes []peer.AddrInfo
	// MaxAttached is how many to stay attached to (default 2).
	MaxAttached int
	// TCP maps exposed service names to local addresses ("ssh" ->
	// "127.0.0.1:22"); each gets a public port on every relay.
	TCP map[string]string
	// DirectPort, if set, is the node's libp2p TCP port: after each attach
	// the relay dials back to it at the address it sees the node at, and a
	// node that answers is direct (Direct, Status.Mode).
	DirectPort int
	// AcceptDirect takes /pc2/http/1 streams from any peer, not only from
	// the supernodes the node is attached to: gateways that find the node
	// direct connect to it themselves. It serves what the relays serve
	// (the node's HTTP port), so it is on whenever the node listens.
	AcceptDirect bool
	// MaxBackoff caps the retry wait (default 1 s).
	MaxBackoff time.Duration
	// Dial opens local TCP connections (default net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket opens the UDP socket of a STUN check (default
	// net.ListenPacket).
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// LocalAddrs lists the node's own addresses, to tell a STUN answer
	// that shows one of them (no NAT) from a NAT's (default: the
	// interfaces' addresses).
	LocalAddrs func() ([]netip.Addr, error)
	Logger     *slog.Logger
	Now        func() time.Time
}

// Client keeps a node attached.
type Client struct {
	cfg  Config
	log  *slog.Logger
	did  string
	ln   *streamListener
	kick chan struct{} // Reconnect

	mu      sync.Mutex
	links   map[peer.ID]*link
	changed chan struct{} // closed and replaced on every attachment change
	lastErr string
	direct  string // the address a dial-back reached, "" if none
	dbErr   string // why the last dial-back failed
	dbDone  bool   // a dial-back has answered
	stun    stunResult
}

// stunResult is the last STUN check's outcome.
type stunResult struct {
	server    string
	reflexive netip.AddrPort // zero: none yet or failed
	nat       bool           // reflexive is not one of the node's addresses
	err       string
}

// link is the state of one supernode.
type link struct {
	info      peer.AddrInfo
	accepting bool // an attach is sent or held: streams from it are taken
	attached  bool
	since     time.Time
	ports     map[string]int
	turn      *relay.TURNInfo // the supernode's STUN/TURN credentials
	lastErr   string
	probe     chan struct{} // Reconnect: ping now, give up without a pong
}

// probeTimeout is how long a connection may take to answer the ping sent
// after a network change before it counts as dead and is replaced.
const probeTimeout = 2 * time.Second

// New returns a Client; Run starts it.
func New(cfg Config) (*Client, error) {
	if cfg.Host == nil || cfg.Key == nil {
		return nil, errors.New("tunnel: host and key are required")
	}
	if len(cfg.Supernodes) == 0 {
		return nil, errors.New("tunnel: no supernodes")
	}
	if cfg.MaxAttached <= 0 {
		cfg.MaxAttached = 2
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	if cfg.LocalAddrs == nil {
		cfg.LocalAddrs = interfaceAddrs
	}
	id, err := identity.IDFromPublicKey(cfg.Key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger, did: id.DID(), ln: newStreamListener(cfg.Host.ID()),
		kick: make(chan struct{}, 1), links: map[peer.ID]*link{}, changed: make(chan struct{})}
	for _, ai := range cfg.Supernodes {
		c.links[ai.ID] = &link{info: ai}
	}
	return c, nil
}

// Listener returns the listener of the HTTP connections relays open to the
// node; serve the node's HTTP handler on it.
func (c *Client) Listener() net.Listener { return c.ln }

// Reconnect checks the connections to the supernodes after a network
// change: those that lost their local address or do not answer a ping
// within probeTimeout are replaced at once (checkConns).
func (c *Client) Reconnect() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Changed returns a channel closed at the next change of the attachments.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *Client) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Attached returns the supernodes the node is attached to now, for its did
// record.
func (c *Client) Attached() []records.Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []records.Peer
	for _, l := range c.links {
		if l.attached {
			id, err := dht.PeerToID(l.info.ID)
			if err != nil {
				continue
			}
			p := records.Peer{ID: id}
			for _, a := range l.info.Addrs {
				p.Addrs = append(p.Addrs, a.String())
			}
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
	return out
}

// Run attaches and keeps the node attached until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	h := c.cfg.Host
	h.SetStreamHandler(relay.ProtocolHTTP, c.handleHTTP)
	h.SetStreamHandler(relay.ProtocolTCP, c.handleTCP)
	defer h.RemoveStreamHandler(relay.ProtocolHTTP)
	defer h.RemoveStreamHandler(relay.ProtocolTCP)
	defer c.ln.Close()

	slots := make(chan struct{}, c.cfg.MaxAttached)
	var wg sync.WaitGroup
	for i, ai := range c.cfg.Supernodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The spares start a moment later, so the first MaxAttached
			// supernodes of the list get the slots when they answer.
			if i >= c.cfg.MaxAttached {
				select {
				case <-time.After(spareDelay):
				case <-ctx.Done():
					return
				}
			}
			c.loop(ctx, ai, slots)
		}()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.kick:
				c.checkConns(h)
			}
		}
	}()
	wg.Wait()
	return nil
}

// checkConns follows a network change. Connections to the supernodes
// whose local address is gone are closed at once; the others are asked
// to answer a ping within probeTimeout (attachOnce), so a request or an
// upload in flight on a connection that still works is not cut, while a
// connection the change broke (a new route, a NAT that forgot it) is
// replaced within seconds instead of after the missed keep-alives.
func (c *Client) checkConns(h host.Host) {
	local := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				local[p.Addr().Unmap()] = true
			}
		}
	}
	closed := 0
	for _, ai := range c.cfg.Supernodes {
		for _, conn := range h.Network().ConnsToPeer(ai.ID) {
			ip, err := manet.ToIP(conn.LocalMultiaddr())
			if err != nil || ip.IsUnspecified() {
				continue // QUIC on a wildcard socket: the ping decides
			}
			if a, ok := netip.AddrFromSlice(ip); ok && len(local) > 0 && !local[a.Unmap()] {
				conn.Close()
				closed++
			}
		}
	}
	c.mu.Lock()
	for _, l := range c.links {
		if l.probe != nil {
			select {
			case l.probe <- struct{}{}:
			default:
			}
		}
	}
	c.mu.Unlock()
	c.log.Info("network changed: checking the supernode connections", "closed_without_local_address", closed)
}

// dropConns closes the connections to a supernode that stopped
// answering, so the next attach dials a new one instead of opening its
// stream on a dead connection.
func dropConns(h host.Host, p peer.ID) {
	for _, conn := range h.Network().ConnsToPeer(p) {
		conn.Close()
	}
}

// spareDelay is how long the spare supernodes leave the preferred ones at
// start.
const spareDelay = 500 * time.Millisecond

// loop keeps the node attached to one supernode while it holds a slot.
func (c *Client) loop(ctx context.Context, ai peer.AddrInfo, slots chan struct{}) {
	policy := backoff.Policy{Initial: 100 * time.Millisecond, Max: c.cfg.MaxBackoff}
	failures := 0
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		attachedFor, err := c.attachOnce(ctx, ai)
		<-slots
		if ctx.Err() != nil {
			return
		}
		if attachedFor > 10*time.Second {
			failures = 0
		}
		failures++
		c.mu.Lock()
		l := c.links[ai.ID]
		if err != nil {
			l.lastErr = err.Error()
			c.lastErr = fmt.Sprintf("%s: %v", ai.ID, err)
		}
		c.mu.Unlock()
		wait := policy.Wait(failures)
		c.log.Info("not attached, retrying", "supernode", ai.ID, "err", err, "in", wait)
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// attachOnce connects, attaches and pings until the attachment ends; it
// returns how long it was attached.
func (c *Client) attachOnce(ctx context.Context, ai peer.AddrInfo) (time.Duration, error) {
	h := c.cfg.Host
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.Connect(cctx, ai); err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	st, err := h.NewStream(cctx, ai.ID, relay.ProtocolAttach)
	if err != nil {
		return 0, fmt.Errorf("open attach stream: %w", err)
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	ch, err := relay.ReadMessage(st)
	if err != nil {
		return 0, fmt.Errorf("read challenge: %w", err)
	}
	if ch.Type == relay.TypeRefused {
		return 0, fmt.Errorf("refused: %s", ch.Error)
	}
	if ch.Type != relay.TypeChallenge || len(ch.Nonce) < 16 {
		return 0, fmt.Errorf("expected a challenge, got %q", ch.Type)
	}
	names := make([]string, 0, len(c.cfg.TCP))
	for n := range c.cfg.TCP {
		names = append(names, n)
	}
	sort.Strings(names)
	// The relay may open streams as soon as it has accepted, before its
	// answer arrives here.
	c.setAccepting(ai.ID, true)
	defer c.setAccepting(ai.ID, false)
	if err := relay.WriteMessage(st, relay.SignAttach(c.cfg.Key, ch, c.did, c.cfg.Now(), names)); err != nil {
		return 0, fmt.Errorf("send attach: %w", err)
	}
	ok, err := relay.ReadMessage(st)
	if err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	if ok.Type != relay.TypeAttached {
		return 0, fmt.Errorf("refused: %s", ok.Error)
	}
	keep := time.Duration(ok.KeepAlive) * time.Millisecond
	if keep <= 0 || keep > time.Minute {
		keep = 5 * time.Second
	}
	since := c.cfg.Now()
	c.setAttached(ai.ID, true, since, ok.Ports)
	c.log.Info("attached", "supernode", ai.ID, "ports", ok.Ports, "turn", ok.TURN != nil)
	defer c.setAttached(ai.ID, false, since, nil)
	refreshTURN := c.setTURN(ai.ID, ok.TURN)
	if ok.TURN != nil {
		go c.checkSTUN(ctx, ok.TURN.URIs)
	}

	probe := make(chan struct{}, 1)
	c.mu.Lock()
	c.links[ai.ID].probe = probe
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.links[ai.ID].probe = nil
		c.mu.Unlock()
	}()

	// Ping every keep; the relay answers each. Reads run in their own
	// goroutine so ctx (shutdown) ends the attachment at once.
	errc := make(chan error, 1)
	pongs := make(chan struct{}, 1)
	turns := make(chan *relay.TURNInfo, 1)
	go func() {
		for {
			m, err := relay.ReadMessage(st)
			if err != nil {
				errc <- err
				return
			}
			switch m.Type {
			case relay.TypePong:
				select {
				case pongs <- struct{}{}:
				default:
				}
			case relay.TypeDetached:
				errc <- fmt.Errorf("detached: %s", m.Error)
				return
			case relay.TypeDialBackResult:
				c.dialBackResult(ai.ID, m)
			case relay.TypeTURN:
				if m.TURN == nil {
					c.log.Warn("supernode gave no TURN credentials", "supernode", ai.ID, "err", m.Error)
					continue
				}
				select {
				case turns <- m.TURN:
				default:
				}
			}
		}
	}()
	var wmu sync.Mutex
	write := func(m *relay.Message) error {
		wmu.Lock()
		defer wmu.Unlock()
		st.SetWriteDeadline(time.Now().Add(keep))
		return relay.WriteMessage(st, m)
	}
	if c.cfg.DirectPort > 0 {
		if err := write(&relay.Message{Type: relay.TypeDialBack, Port: c.cfg.DirectPort}); err != nil {
			return 0, fmt.Errorf("ask for a dial-back: %w", err)
		}
	}
	st.SetDeadline(time.Time{})
	t := time.NewTicker(keep)
	defer t.Stop()
	lastPong := time.Now()
	var probing <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return c.cfg.Now().Sub(since), ctx.Err()
		case err := <-errc:
			return c.cfg.Now().Sub(since), err
		case <-pongs:
			lastPong, probing = time.Now(), nil
		case <-probe:
			if err := write(&relay.Message{Type: relay.TypePing}); err != nil {
				return c.cfg.Now().Sub(since), fmt.Errorf("ping after a network change: %w", err)
			}
			probing = time.After(probeTimeout)
		case <-probing:
			dropConns(h, ai.ID)
			return c.cfg.Now().Sub(since), fmt.Errorf("no answer within %v after a network change", probeTimeout)
		case ti := <-turns:
			refreshTURN = c.setTURN(ai.ID, ti)
		case <-t.C:
			if time.Since(lastPong) > 3*keep {
				dropConns(h, ai.ID)
				return c.cfg.Now().Sub(since), errors.New("keep-alive: no answer")
			}
			if err := write(&relay.Message{Type: relay.TypePing}); err != nil {
				return c.cfg.Now().Sub(since), fmt.Errorf("ping: %w", err)
			}
			if !refreshTURN.IsZero() && !c.cfg.Now().Before(refreshTURN) {
				// Ask once per half-life; the answer sets the next time.
				refreshTURN = c.cfg.Now().Add(time.Minute)
				if err := write(&relay.Message{Type: relay.TypeTURN}); err != nil {
					return c.cfg.Now().Sub(since), fmt.Errorf("ask for TURN credentials: %w", err)
				}
			}
		}
	}
}

func (c *Client) setAttached(p peer.ID, on bool, since time.Time, ports map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.links[p]
	if l.attached == on {
		return
	}
	l.attached, l.since, l.ports = on, since, ports
	if on {
		l.lastErr = ""
	}
	c.notify()
}

// setTURN keeps a supernode's TURN credentials (nil: none) and returns
// when to ask for fresh ones: halfway to their expiry (zero: never).
func (c *Client) setTURN(p peer.ID, t *relay.TURNInfo) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.links[p].turn = t
	if t == nil {
		return time.Time{}
	}
	now := c.cfg.Now()
	return now.Add(time.Unix(t.Expires, 0).Sub(now) / 2)
}

// TURN returns the unexpired STUN/TURN credentials of the supernodes the
// node is attached to (for WebRTC and other UDP peers of the node).
func (c *Client) TURN() []relay.TURNInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now().Unix()
	var out []relay.TURNInfo
	for _, ai := range c.cfg.Supernodes {
		if l := c.links[ai.ID]; l.attached && l.turn != nil && l.turn.Expires > now {
			out = append(out, *l.turn)
		}
	}
	return out
}

// checkSTUN asks the first STUN server in uris for the node's reflexive
// address (the public address a NAT maps it to) and records whether the
// node is behind a NAT: whether that address is one of its own.
func (c *Client) checkSTUN(ctx context.Context, uris []string) {
	server := stunServer(uris)
	if server == "" {
		return
	}
	res := stunResult{server: server}
	addr, loopback, err := c.reflexive(ctx, server)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		res.err = err.Error()
	} else {
		res.reflexive = addr
		res.nat = true
		if own, err := c.cfg.LocalAddrs(); err == nil {
			for _, a := range own {
				// Loopback is the node's own address only towards a server
				// on loopback; from elsewhere it is a NAT's (QEMU's user
				// network forwards to the host's loopback).
				if a.Unmap() == addr.Addr() && (loopback || !a.IsLoopback()) {
					res.nat = false
				}
			}
		}
	}
	c.mu.Lock()
	changed := c.stun != res
	c.stun = res
	c.mu.Unlock()
	if changed {
		c.log.Info("STUN check", "server", server, "reflexive", res.reflexive, "behind_nat", res.nat, "err", res.err)
	}
}

// reflexive runs one STUN check against server; loopback tells whether
// the server is on loopback.
func (c *Client) reflexive(ctx context.Context, server string) (addr netip.AddrPort, loopback bool, err error) {
	ua, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return addr, false, fmt.Errorf("STUN server %s: %w", server, err)
	}
	network := "udp4"
	if ua.IP.To4() == nil {
		network = "udp6"
	}
	conn, err := c.cfg.ListenPacket(network, ":0")
	if err != nil {
		return addr, false, fmt.Errorf("STUN socket: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr, err = turn.Reflexive(ctx, conn, ua)
	return addr, ua.IP.IsLoopback(), err
}

// stunServer returns host:port of the first "stun:" URI ("" if none).
func stunServer(uris []string) string {
	for _, u := range uris {
		if hp, ok := strings.CutPrefix(u, "stun:"); ok {
			hp, _, _ = strings.Cut(hp, "?")
			if _, _, err := net.SplitHostPort(hp); err == nil {
				return hp
			}
		}
	}
	return ""
}

// interfaceAddrs is the default Config.LocalAddrs.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// dialBackResult records whether the relay reached the node directly.
func (c *Client) dialBackResult(p peer.ID, m *relay.Message) {
	direct := ""
	if m.OK {
		direct = m.Addr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dbDone, c.dbErr = true, m.Error
	if direct != c.direct {
		c.log.Info("dial-back", "supernode", p, "direct", m.OK, "addr", m.Addr, "err", m.Error)
		c.direct = direct
		c.notify()
	}
}

// Direct returns the node's direct addresses (empty: relayed only).
func (c *Client) Direct() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.direct == "" {
		return nil
	}
	return []string{c.direct}
}

func (c *Client) setAccepting(p peer.ID, on bool) {
	c.mu.Lock()
	c.links[p].accepting = on
	c.mu.Unlock()
}

// attachedTo reports whether p is a supernode the node is attached to (or
// attaching to): only those may open streams to it.
func (c *Client) attachedTo(p peer.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.links[p]
	return ok && l.accepting
}

func (c *Client) handleHTTP(st network.Stream) {
	if !c.cfg.AcceptDirect && !c.attachedTo(st.Conn().RemotePeer()) {
		st.Reset()
		return
	}
	if !c.ln.deliver(relay.StreamConn{Stream: st}) {
		st.Reset()
	}
}

func (c *Client) handleTCP(st network.Stream) {
	if !c.attachedTo(st.Conn().RemotePeer()) {
		st.Reset()
		return
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	name, err := readLine(st, 65)
	if err != nil {
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	addr, ok := c.cfg.TCP[name]
	if !ok {
		c.log.Warn("relay asked for a service this node does not expose", "service", name)
		st.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	local, err := c.cfg.Dial(ctx, "tcp", addr)
	cancel()
	if err != nil {
		c.log.Warn("exposed service unreachable", "service", name, "addr", addr, "err", err)
		st.Reset()
		return
	}
	defer local.Close()
	relay.Splice(local, st)
}

// readLine reads up to '\n' one byte at a time (nothing past it: the rest
// of the stream is the spliced connection's).
func readLine(r io.Reader, max int) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < max {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		if buf[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(buf[0])
	}
	return "", errors.New("tunnel: service line too long")
}

// Status is the tunnel's state as JSON for the node's status page.
type Status struct {
	// Mode is "direct" when a relay reached the node's own port,
	// "relayed" while attached to at least one supernode, else "offline".
	Mode   string `json:"mode"`
	Direct string `json:"direct,omitempty"`
	// DialBack is the last dial-back's outcome: "" (none yet), "ok" or
	// why it failed.
	DialBack string `json:"dial_back,omitempty"`
	// STUN is the last STUN check through a supernode's server.
	STUN       *STUNStatus  `json:"stun,omitempty"`
	Supernodes []LinkStatus `json:"supernodes"`
	LastError  string       `json:"last_error,omitempty"`
}

// STUNStatus is what a STUN check found.
type STUNStatus struct {
	Server string `json:"server"`
	// Reflexive is the address the server saw the node's packets come
	// from; BehindNAT says it is not one of the node's own addresses.
	Reflexive string `json:"reflexive,omitempty"`
	BehindNAT bool   `json:"behind_nat"`
	Error     string `json:"error,omitempty"`
}

// LinkStatus is one supernode's attachment.
type LinkStatus struct {
	ID        string         `json:"id"`
	Attached  bool           `json:"attached"`
	Since     time.Time      `json:"since,omitzero"`
	Ports     map[string]int `json:"ports,omitempty"`
	LastError string         `json:"last_error,omitempty"`
	// TURN is the supernode's STUN/TURN server and when the node's
	// credentials for it expire (the password stays out of the status).
	TURN *TURNStatus `json:"turn,omitempty"`
}

// TURNStatus describes a node's TURN credentials without the password.
type TURNStatus struct {
	URIs    []string  `json:"uris"`
	Expires time.Time `json:"expires"`
}

// Status returns the current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Mode: "offline", LastError: c.lastErr, Direct: c.direct}
	for _, ai := range c.cfg.Supernodes {
		l := c.links[ai.ID]
		ls := LinkStatus{ID: ai.ID.String(), Attached: l.attached, LastError: l.lastErr}
		if l.attached {
			ls.Since, ls.Ports = l.since, l.ports
			st.Mode = "relayed"
			if l.turn != nil {
				ls.TURN = &TURNStatus{URIs: l.turn.URIs, Expires: time.Unix(l.turn.Expires, 0).UTC()}
			}
		}
		st.Supernodes = append(st.Supernodes, ls)
	}
	if c.direct != "" {
		st.Mode = "direct"
	}
	if c.stun.server != "" {
		st.STUN = &STUNStatus{Server: c.stun.server, BehindNAT: c.stun.nat, Error: c.stun.err}
		if c.stun.reflexive.IsValid() {
			st.STUN.Reflexive = c.stun.reflexive.String()
		}
	}
	if c.dbDone {
		st.DialBack = "ok"
		if c.dbErr != "" {
			st.DialBack = c.dbErr
		}
	}
	return st
}
