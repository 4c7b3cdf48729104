package tunnel

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/services/relay"
)

// turnRetry is how long to wait for fresh TURN credentials before asking
// again.
const turnRetry = time.Minute

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
	for _, ai := range c.order {
		if l := c.links[ai.ID]; l.attached && l.turn != nil && l.turn.Expires > now {
			out = append(out, *l.turn)
		}
	}
	return out
}

// refreshTURN asks for fresh TURN credentials once turnDue has passed.
func (s *session) refreshTURN() error {
	if s.turnDue.IsZero() || s.c.cfg.Now().Before(s.turnDue) {
		return nil
	}
	// Ask once per half-life; the answer sets the next time.
	s.turnDue = s.c.cfg.Now().Add(turnRetry)
	if err := s.ask(&relay.Message{Type: relay.TypeTURN}); err != nil {
		return fmt.Errorf("ask for TURN credentials: %w", err)
	}
	return nil
}
