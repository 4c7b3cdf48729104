package dht

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/x/rate"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultServerPeers is how many peers a server's host is sized for: twice
// issue 4's 2,000 nodes attached to one supernode, so that a supernode can
// take over the nodes of a failed neighbour.
const DefaultServerPeers = 4096

// yamuxWindow is what yamux reserves with the resource manager for every
// stream it opens or accepts on a TCP connection: the stream's initial
// receive window (256 KiB; go-yamux refuses a smaller one). The memory is
// only allocated when data waits to be read, but the reservation counts at
// once. When a reservation for an incoming stream fails, go-yamux closes
// the whole connection (v5.1.0), so the limits below let the stream counts,
// which only refuse the stream, bind before the memory.
const yamuxWindow = 256 << 10

// Limits size a node's libp2p host: its resource manager (connections,
// streams and buffer memory it admits) and its connection manager (how
// many connections it keeps before trimming). The zero value takes the
// mode's defaults.
type Limits struct {
	// Peers is how many connected peers the host is sized for. On a
	// supernode each attached node holds one connection and two streams:
	// its control stream, and the DHT stream kad-dht keeps open for a
	// minute after each request. 0: DefaultServerPeers for servers.
	// Clients with 0 keep libp2p's defaults, which scale with the
	// machine's memory (about 96 inbound connections on a 4 GB Pi): plenty
	// for a personal node's two supernodes and its DHT lookups.
	Peers int
	// Memory bounds what the resource manager lets the host reserve,
	// almost all of it yamux receive windows (see yamuxWindow): the most
	// that data waiting in libp2p's buffers can take. 0: three windows per
	// peer, Peers x 768 KiB (3 GiB for DefaultServerPeers): the control
	// and DHT streams of every node, which hold no data for long, and one
	// window of data waiting in relayed streams. An idle attached node
	// really costs far less (docs/benchmarks.md, "Relay").
	Memory int64
	// Relayed is how many streams one peer may open to this host at once
	// on top of its own: a personal node accepts a supernode's relayed
	// HTTP and TCP streams (up to the relay's 256 per node, from each of
	// its two supernodes). 0: none (servers).
	Relayed int
}

// NodeLimits are a personal node's: a few dozen peers (its supernodes,
// DHT lookups, gateways that reach it directly) and the relays' streams.
// libp2p's defaults, which scale with RAM, admit 64-75 inbound streams
// per protocol and peer, fewer than a relay sends (502s beyond them).
func NodeLimits() Limits { return Limits{Peers: 64, Relayed: 256} }

// withDefaults fills l's zero fields for mode. ok is false when the host
// keeps libp2p's own defaults (a client without explicit limits).
func (l Limits) withDefaults(mode Mode) (_ Limits, ok bool) {
	if l.Peers <= 0 {
		if mode == ModeClient {
			return l, false
		}
		l.Peers = DefaultServerPeers
	}
	if l.Memory <= 0 {
		// Two relaying supernodes' streams on top of the peers'.
		l.Memory = int64(3*l.Peers+2*l.Relayed) * yamuxWindow
	}
	return l, true
}

// inboundConns is how many inbound connections l admits: one per peer,
// plus a quarter for reconnects (a node that comes back on a new
// connection before the old one timed out) and DHT clients.
func (l Limits) inboundConns() int { return l.Peers + l.Peers/4 }

// Descriptors is how many file descriptors the host's connections may
// take with l (one per TCP connection, inbound and outbound): the
// process's open-file limit must be above it, with room for its other
// files and sockets.
func (l Limits) Descriptors(mode Mode) int {
	l, ok := l.withDefaults(mode)
	if !ok {
		return 0
	}
	return l.inboundConns() + outboundConns
}

// PeersFor is the most peers a server's host can be sized for with fds
// descriptors for its connections (Descriptors' inverse; at least 1).
func PeersFor(fds int) int { return max(1, (fds-outboundConns)*4/5) }

// outboundConns covers the DHT's own dials (routing table refreshes,
// lookups, replication): a few hundred peers even in a large network.
const outboundConns = 1024

// limitConfig is the resource manager's configuration for l.
//
// Where PC2 does not set a limit, libp2p's default applies, scaled as for
// a machine that gives libp2p l.Memory (not the RAM of the machine it runs
// on, so a supernode's limits are the same on a Pi and on a server).
// Those are the limits of libp2p's own services (identify, ping) and of
// each single connection and stream.
func (l Limits) limitConfig() rcmgr.ConcreteLimitConfig {
	scaling := rcmgr.DefaultLimits // a copy: its maps are nil
	libp2p.SetDefaultServiceLimits(&scaling)
	conns := l.inboundConns() + outboundConns
	defaults := scaling.Scale(l.Memory, conns)
	lim := func(n int) rcmgr.LimitVal { return rcmgr.LimitVal(n) }
	p := l.Peers
	// Streams that fit in the memory at their initial windows.
	streams := int(l.Memory / yamuxWindow)
	return rcmgr.PartialLimitConfig{
		// The whole host. Inbound streams: the control and DHT streams of
		// every node (2 per peer); outbound: the streams the relay opens
		// to nodes and DHT requests. In all, as many as the memory holds
		// at initial windows (3 per peer by default). FD: one per TCP
		// connection; the process needs RLIMIT_NOFILE above it.
		System: rcmgr.ResourceLimits{
			ConnsInbound: lim(l.inboundConns()), ConnsOutbound: lim(outboundConns), Conns: lim(conns),
			StreamsInbound: lim(min(2*p+2*l.Relayed, streams)), StreamsOutbound: lim(min(p, streams)), Streams: lim(streams),
			FD: lim(conns), Memory: rcmgr.LimitVal64(l.Memory),
		},
		// Connections in their handshake and streams before their protocol
		// is negotiated: an attach storm after a supernode restart (every
		// node redials within a second or so) passes through here.
		Transient: rcmgr.ResourceLimits{
			ConnsInbound: 512, ConnsOutbound: 256, Conns: 768,
			StreamsInbound: 1024, StreamsOutbound: 1024, Streams: 2048,
			FD: 768, Memory: 64 << 20,
		},
		// One protocol across all peers: /pc2/attach/1 and /pc2/kad/1.0.0
		// hold a stream per node, /pc2/http/1 carries relayed requests.
		ProtocolDefault: rcmgr.ResourceLimits{
			StreamsInbound: lim(p + p/4 + 2*l.Relayed), StreamsOutbound: lim(p), Streams: lim(2*p + 2*l.Relayed),
		},
		// One peer, so that no node takes more than a small share. A node
		// needs one connection (8 allow for reconnects over TCP and QUIC at
		// once). Outbound streams: the relay's own limit of 256 relayed
		// streams per node (relay.DefaultLimits) with room for DHT
		// requests; inbound: its control and DHT streams, or a gateway's
		// forwarded connections when the peer is a supernode. Memory: 512
		// streams at their initial windows take 128 MiB, and yamux grows
		// windows only while the peer holds less than half of its limit,
		// so with 256 MiB (1/12 of the default total) the counts bind
		// first.
		PeerDefault: rcmgr.ResourceLimits{
			ConnsInbound: 8, ConnsOutbound: 8, Conns: 8,
			StreamsInbound: 256, StreamsOutbound: 384, Streams: 512,
			FD: 8, Memory: 256 << 20,
		},
		// One protocol of one peer: as for the peer. libp2p's default (64
		// inbound, 128 outbound) is below the relay's 256 streams per node.
		ProtocolPeerDefault: rcmgr.ResourceLimits{
			StreamsInbound: 256, StreamsOutbound: 384, Streams: 512,
		},
	}.Build(defaults)
}

// Per-IP limits. libp2p admits 8 connections per IPv4 address (and per
// IPv6 /56) and 0.2 new ones a second after a burst of 16: too few for
// nodes behind a carrier-grade NAT, where many subscribers share one
// public address. Loopback stays unlimited, as in libp2p.
var (
	connsPerIPv4 = []rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: 64}}
	connsPerIPv6 = []rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: 64}, {PrefixLength: 48, ConnCount: 512}}
)

// connRate limits new connections per address; a Limiter holds state,
// so each host gets its own.
func connRate() *rate.Limiter {
	return &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8")},
			{Prefix: netip.MustParsePrefix("::1/128")},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 1, Burst: 64}}},
			IPv6SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 56, Limit: rate.Limit{RPS: 1, Burst: 64}},
				{PrefixLength: 48, Limit: rate.Limit{RPS: 4, Burst: 512}},
			},
			GracePeriod: time.Minute,
		},
	}
}

// hostOptions are the libp2p options that size a host for l; with reg,
// the resource manager reports to it (connections, streams, memory and
// descriptors by scope, and what it blocked).
func (l Limits) hostOptions(reg prometheus.Registerer) ([]libp2p.Option, error) {
	opts := []rcmgr.Option{rcmgr.WithLimitPerSubnet(connsPerIPv4, connsPerIPv6), rcmgr.WithConnRateLimiters(connRate())}
	if reg != nil {
		rcmgr.MustRegisterWith(reg)
		str, err := rcmgr.NewStatsTraceReporter()
		if err != nil {
			return nil, fmt.Errorf("resource manager metrics: %w", err)
		}
		opts = append(opts, rcmgr.WithTraceReporter(str))
	} else {
		opts = append(opts, rcmgr.WithMetricsDisabled())
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(l.limitConfig()), opts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	// Trim only above the inbound connection limit, down to one
	// connection per peer. Attached nodes are never trimmed: the relay
	// protects their connections. Grace: libp2p's minute.
	cm, err := connmgr.NewConnManager(l.Peers, l.inboundConns(), connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	return []libp2p.Option{libp2p.ResourceManager(rm), libp2p.ConnectionManager(cm)}, nil
}
