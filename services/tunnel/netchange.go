package tunnel

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/pc2/pc2/services/relay"
)

// probeTimeout is how long a connection may take to answer the ping sent
// after a network change before it counts as dead and is replaced.
const probeTimeout = 2 * time.Second

// Reconnect checks the connections to the supernodes after a network
// change: those that lost their local address or do not answer a ping
// within probeTimeout are replaced at once (checkConns).
func (c *Client) Reconnect() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// checkConns follows a network change. Connections to the supernodes
// whose local address is gone are closed at once; the others are asked
// to answer a ping within probeTimeout (session.probe), so a request or an
// upload in flight on a connection that still works is not cut, while a
// connection the change broke (a new route, a NAT that forgot it) is
// replaced within seconds instead of after the missed keep-alives.
func (c *Client) checkConns(h host.Host) {
	// Dials that failed on the old network say nothing of the new one:
	// libp2p's dial backoff would hold the next ones back, and dials in
	// flight or waiting to retry start again at once (loop, openAttach).
	supernodes := c.Supernodes()
	if sw, ok := h.Network().(*swarm.Swarm); ok {
		for _, ai := range supernodes {
			sw.Backoff().Clear(ai.ID)
		}
	}
	c.mu.Lock()
	close(c.netGen)
	c.netGen = make(chan struct{})
	c.mu.Unlock()
	local := map[netip.Addr]bool{}
	if addrs, err := c.cfg.LocalAddrs(); err == nil {
		for _, a := range addrs {
			local[a.Unmap()] = true
		}
	}
	closed := 0
	for _, ai := range supernodes {
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

// watchProbe registers the channel on which checkConns asks the attached
// session with p to prove its connection.
func (c *Client) watchProbe(p peer.ID) <-chan struct{} {
	probe := make(chan struct{}, 1)
	c.mu.Lock()
	c.links[p].probe = probe
	c.mu.Unlock()
	return probe
}

func (c *Client) unwatchProbe(p peer.ID) {
	c.mu.Lock()
	c.links[p].probe = nil
	c.mu.Unlock()
}

// probe pings at once after a network change; keepAlive gives up if no
// pong comes within probeTimeout. While the link is down it does not
// ping: the ping would wait in TCP's resend backoff and, once the link
// is back, hold up whatever follows it on the connection (a visitor's
// answer) until TCP resends it, seconds later; and a ping that left
// during the outage may be answered only after its time is up, though
// the connection survived. The link-up's network change pings.
func (s *session) probe() error {
	if s.c.linkDown(s.peer) {
		s.probing = nil
		return nil
	}
	if err := s.ask(&relay.Message{Type: relay.TypePing}); err != nil {
		return fmt.Errorf("ping after a network change: %w", err)
	}
	s.probing = time.After(probeTimeout)
	return nil
}

// linkDown reports whether every connection to p goes out of a link
// without carrier (Config.LinkDown).
func (c *Client) linkDown(p peer.ID) bool {
	conns := c.cfg.Host.Network().ConnsToPeer(p)
	for _, conn := range conns {
		ip, err := manet.ToIP(conn.RemoteMultiaddr())
		if err != nil {
			return false
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok || !c.cfg.LinkDown(a.Unmap()) {
			return false
		}
	}
	return len(conns) > 0
}

// dropConns closes the connections to a supernode that stopped
// answering, so the next attach dials a new one instead of opening its
// stream on a dead connection.
func dropConns(h host.Host, p peer.ID) {
	for _, conn := range h.Network().ConnsToPeer(p) {
		conn.Close()
	}
}
