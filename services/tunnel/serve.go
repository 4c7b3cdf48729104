package tunnel

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/internal/chanlisten"
	"github.com/pc2/pc2/services/relay"
)

// setAccepting opens (attaching or attached) or closes the gate of the
// streams p opens to the node.
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

// handleStream hands an HTTP or spliced TLS stream to ln if its opener
// may send the node visitors (and their addresses): a supernode it is
// attached to, or, when it takes direct streams, a gateway of its domain.
func (c *Client) handleStream(st network.Stream, ln *chanlisten.Listener) {
	p := st.Conn().RemotePeer()
	if !c.attachedTo(p) && !(c.cfg.AcceptDirect && allowedGateway(c.cfg.DirectFrom, p)) {
		c.log.Debug("stream refused: neither an attached supernode nor a gateway of the node's domain", "peer", p, "protocol", st.Protocol())
		st.Reset()
		return
	}
	if !ln.Deliver(relay.StreamConn{Stream: st}) {
		st.Reset()
	}
}

func (c *Client) handleTCP(st network.Stream) {
	if !c.attachedTo(st.Conn().RemotePeer()) {
		st.Reset()
		return
	}
	defer st.Close()
	// Wall clock: the stream compares its deadlines with time.Now.
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

// allowedGateway asks allow (nil: nobody) whether p may send the node
// HTTP streams, within the time a stream waits for its first bytes.
func allowedGateway(allow func(context.Context, peer.ID) bool, p peer.ID) bool {
	if allow == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return allow(ctx, p)
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
