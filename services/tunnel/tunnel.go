// Package tunnel is the personal node's side of the Active Proxy: it keeps
// the node attached to one or more supernodes' relays (relay/relayserver;
// the protocol is in package relay) over the node's own outbound libp2p
// connections, and serves what the relays send back: /pc2/http/1 streams
// become connections of the node's HTTP server (Listener), /pc2/tcp/1
// streams are spliced to the local services the node exposes.
//
// Attachment: one loop per supernode, up to MaxAttached at a time (the
// first ones of the list at start; the rest wait as spares, tried when an
// attached one fails), so losing a supernode leaves the node reachable
// through another at once. Each loop connects, answers the relay's
// challenge with the node key (attach/2, or attach/1 at an older relay),
// then keeps the attachment alive: on attach/2 the relay pings every
// KeepAlive and the node's requests go on control streams, on attach/1
// the node pings; 3 keep-alives without a ping or pong, a closed stream
// or a "detached" message end the attachment and the loop
// retries with jittered exponential backoff capped at MaxBackoff (default
// 1 s, so a supernode that comes back is used again within a second).
// Reconnect (called on network changes) closes the connections that lost
// their local address and pings the others, replacing within seconds
// those that do not answer.
package tunnel

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/internal/chanlisten"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backoff"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/relay"
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
	// AcceptDirect takes /pc2/http/1 streams from gateways that find the
	// node direct and connect to it themselves, not only from the
	// supernodes the node is attached to; DirectFrom says which peers
	// those gateways are (nil: none). Every stream carries client
	// addresses the node's login limits count, so a stranger's streams
	// are refused.
	AcceptDirect bool
	DirectFrom   func(ctx context.Context, p peer.ID) bool
	// TLS offers relay.ProtocolTLS: gateways splice visitors' TLS to
	// the node, which serves TLSListener. Off, the protocol is not
	// offered and gateways terminate TLS themselves at once.
	TLS bool
	// MaxBackoff caps the retry wait (default 1 s).
	MaxBackoff time.Duration
	// Dial opens local TCP connections (default net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket opens the UDP socket of a STUN check (default
	// net.ListenPacket).
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// LocalAddrs lists the node's own addresses (default: the
	// interfaces' addresses): a STUN answer that shows one of them means
	// no NAT, and after a network change a connection from an address
	// not among them is closed.
	LocalAddrs func() ([]netip.Addr, error)
	// LinkDown reports whether the route to dst goes out of a link that
	// has lost its carrier (default: the kernel's routing table, on
	// Linux). A connection that does not answer the ping after a network
	// change is kept while its link is down: the next change (the link
	// back) pings it again, and a connection that survived a short flap
	// goes on instead of being replaced by a dial made during the outage.
	LinkDown func(dst netip.Addr) bool
	// Logger receives the client's logs (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now): attachment times, keep-alive
	// and TURN refresh deadlines, the backoff's reset. Timers wait on the
	// runtime's clock; deadlines handed to streams are wall-clock.
	Now func() time.Time

	// attachProtocols are asked for in order (default attach/2, then
	// attach/1 for relays that do not speak it; tests set attach/1 alone).
	attachProtocols []protocol.ID
}

// Client keeps a node attached.
type Client struct {
	cfg   Config
	log   *slog.Logger
	did   string
	ln    *chanlisten.Listener // relayed HTTP
	tlsLn *chanlisten.Listener // spliced TLS
	kick  chan struct{}        // Reconnect

	mu      sync.Mutex
	order   []peer.AddrInfo // the supernodes, in preference order (SetSupernodes)
	run     *running        // set while Run runs
	links   map[peer.ID]*link
	changed chan struct{} // closed and replaced on every attachment change
	netGen  chan struct{} // closed and replaced on every network change (Reconnect)
	lastErr string
	direct  string // the address a dial-back reached, "" if none
	dbErr   string // why the last dial-back failed
	dbDone  bool   // a dial-back has answered
	stun    stunResult
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
	probe     chan struct{}      // Reconnect: ping now, give up without a pong
	stop      context.CancelFunc // ends its loop; nil when none runs
	leaving   bool               // its loop was stopped (no longer listed) and is ending
	restart   bool               // listed again while leaving: start a loop when it has ended
}

// running is what Run shares with the loops SetSupernodes starts.
type running struct {
	ctx   context.Context
	slots chan struct{}
	wg    sync.WaitGroup
}

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
	if cfg.attachProtocols == nil {
		cfg.attachProtocols = []protocol.ID{relay.ProtocolAttach2, relay.ProtocolAttach}
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
	if cfg.LinkDown == nil {
		cfg.LinkDown = routeLinkDown
	}
	id, err := identity.IDFromPublicKey(cfg.Key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger, did: id.DID(), ln: chanlisten.New(relay.PeerAddr(cfg.Host.ID())),
		tlsLn: chanlisten.New(relay.PeerAddr(cfg.Host.ID())),
		kick:  make(chan struct{}, 1), links: map[peer.ID]*link{}, changed: make(chan struct{}),
		netGen: make(chan struct{})}
	for _, ai := range cfg.Supernodes {
		c.links[ai.ID] = &link{info: ai}
	}
	c.order = slices.Clone(cfg.Supernodes)
	return c, nil
}

// Listener returns the listener of the HTTP connections relays open to the
// node; serve the node's HTTP handler on it.
func (c *Client) Listener() net.Listener { return c.ln }

// TLSListener returns the listener of the spliced TLS connections
// (relay.ProtocolTLS) relays and gateways open to the node: each starts
// with its header (relay.ReadTLSHeader).
func (c *Client) TLSListener() net.Listener { return c.tlsLn }

// Changed returns a channel closed at the next change of the attachments.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// WaitAttached waits until the node is attached to a supernode, or ctx
// ends (its error).
func (c *Client) WaitAttached(ctx context.Context) error {
	for {
		ch := c.Changed()
		if len(c.Attached()) > 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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
	h.SetStreamHandler(relay.ProtocolHTTP, func(st network.Stream) { c.handleStream(st, c.ln) })
	if c.cfg.TLS {
		h.SetStreamHandler(relay.ProtocolTLS, func(st network.Stream) { c.handleStream(st, c.tlsLn) })
		defer h.RemoveStreamHandler(relay.ProtocolTLS)
	}
	h.SetStreamHandler(relay.ProtocolTCP, c.handleTCP)
	defer h.RemoveStreamHandler(relay.ProtocolHTTP)
	defer h.RemoveStreamHandler(relay.ProtocolTCP)
	defer c.ln.Close()
	defer c.tlsLn.Close()

	run := &running{ctx: ctx, slots: make(chan struct{}, c.cfg.MaxAttached)}
	c.mu.Lock()
	c.run = run
	for i, ai := range c.order {
		c.startLoop(ai, c.spareWait(i))
	}
	c.mu.Unlock()
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
	<-ctx.Done()
	run.wg.Wait()
	return nil
}

// spareWait is how long the loop of the supernode at index i of the
// order waits before it asks for a slot: the first MaxAttached at once;
// the spares a moment later, each after the one before, so the
// preferred supernodes get the slots when they answer (a slot that
// frees goes to the loop that has waited longest).
func (c *Client) spareWait(i int) time.Duration {
	if i < c.cfg.MaxAttached {
		return 0
	}
	return spareDelay + time.Duration(i-c.cfg.MaxAttached)*spareStep
}

// spareStep separates the spares' starts.
const spareStep = 20 * time.Millisecond

// startLoop runs ai's attach loop after wait (c.mu held, c.run set).
func (c *Client) startLoop(ai peer.AddrInfo, wait time.Duration) {
	run, l := c.run, c.links[ai.ID]
	if run.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(run.ctx)
	l.stop = cancel
	run.wg.Add(1)
	go func() {
		defer run.wg.Done()
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() == nil {
			c.loop(ctx, ai, run.slots)
		}
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		l.stop, l.leaving = nil, false
		if l.restart {
			l.restart = false
			c.startLoop(l.info, spareDelay)
		}
	}()
}

// SetSupernodes replaces the supernodes the node may attach to, in
// order of preference (a node's discovery, from its operators' domain
// records): new ones start as spares, those no longer listed are
// detached from. An empty list is ignored: the node keeps what it has.
func (c *Client) SetSupernodes(list []peer.AddrInfo) {
	if len(list) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := map[peer.ID]bool{}
	for i, ai := range list {
		keep[ai.ID] = true
		l, ok := c.links[ai.ID]
		if !ok {
			l = &link{}
			c.links[ai.ID] = l
		}
		l.info = ai
		switch {
		case c.run == nil:
		case l.stop == nil:
			c.startLoop(ai, max(c.spareWait(i), spareDelay))
		case l.leaving:
			l.restart = true // listed again while its old loop ends
		}
	}
	for id, l := range c.links {
		if !keep[id] && l.stop != nil && !l.leaving {
			c.log.Info("supernode no longer listed; leaving it", "supernode", id)
			l.stop()
			l.leaving, l.restart = true, false
		}
	}
	// The order is not in the did record (the attachments are, and
	// setAttached signals them): no change to signal here.
	c.order = slices.Clone(list)
}

// Supernodes returns the supernodes the node may attach to now, in order
// of preference.
func (c *Client) Supernodes() []peer.AddrInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.order)
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
		// A network change (the link back, a new address) ends the
		// wait: what failed on the old network may work on the new one.
		select {
		case <-time.After(wait):
		case <-c.netChange():
			failures = 0
		case <-ctx.Done():
			return
		}
	}
}

// netChange returns a channel closed at the next network change.
func (c *Client) netChange() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.netGen
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
