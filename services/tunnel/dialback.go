package tunnel

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/services/relay"
)

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

// askDialBack asks the relay to dial the node back at port, at the
// address it sees the node at; the answer comes to dialBackResult.
func (s *session) askDialBack(port int) error {
	if err := s.ask(&relay.Message{Type: relay.TypeDialBack, Port: port}); err != nil {
		return fmt.Errorf("ask for a dial-back: %w", err)
	}
	return nil
}
