package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/provisioning/identity"
)

// ProtocolForward lets another supernode's gateway reach a node attached
// here: the gateway sends a "forward" message naming the node; this relay
// opens a /pc2/http/1 stream to it, answers "forwarded" and splices the
// two streams, or answers "refused" and closes.
const ProtocolForward protocol.ID = "/pc2/forward/1"

// Forward messages.
const (
	TypeForward   = "forward"   // gateway -> relay: DID
	TypeForwarded = "forwarded" // relay -> gateway: the stream is the node's
)

// ErrForwardRefused is returned by Forward when the relay could not reach
// the node (not attached there, at its limit).
var ErrForwardRefused = errors.New("relay: forward refused")

// handleForward serves one forwarded HTTP connection. Only HTTP is
// forwarded: a node's mapped TCP services stay on the relay that maps
// them.
func (r *Relay) handleForward(st network.Stream) {
	st.SetReadDeadline(r.cfg.Now().Add(10 * time.Second))
	m, err := ReadMessage(st)
	if err != nil || m.Type != TypeForward {
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	id, err := identity.ParseDID(m.DID)
	if err != nil {
		WriteMessage(st, &Message{Type: TypeRefused, Error: err.Error()})
		st.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	node, err := r.OpenStream(ctx, id, ProtocolHTTP)
	cancel()
	if err != nil {
		WriteMessage(st, &Message{Type: TypeRefused, Error: err.Error()})
		st.Close()
		return
	}
	if err := WriteMessage(st, &Message{Type: TypeForwarded}); err != nil {
		node.Reset()
		st.Reset()
		return
	}
	Splice(st, node)
	st.Close()
	node.Close()
}

// Forward opens an HTTP connection to node id through the relay of the
// supernode via (another gateway's side of ProtocolForward).
func Forward(ctx context.Context, h host.Host, via peer.AddrInfo, id identity.ID) (net.Conn, error) {
	if len(via.Addrs) > 0 {
		if err := h.Connect(ctx, via); err != nil {
			return nil, fmt.Errorf("relay: forward via %s: %w", via.ID, err)
		}
	}
	st, err := h.NewStream(ctx, via.ID, ProtocolForward)
	if err != nil {
		return nil, fmt.Errorf("relay: forward via %s: %w", via.ID, err)
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if err := WriteMessage(st, &Message{Type: TypeForward, DID: id.DID()}); err != nil {
		st.Reset()
		return nil, fmt.Errorf("relay: forward via %s: %w", via.ID, err)
	}
	m, err := ReadMessage(st)
	if err != nil {
		st.Reset()
		return nil, fmt.Errorf("relay: forward via %s: %w", via.ID, err)
	}
	if m.Type != TypeForwarded {
		st.Reset()
		return nil, fmt.Errorf("%w via %s: %s", ErrForwardRefused, via.ID, m.Error)
	}
	st.SetDeadline(time.Time{})
	return StreamConn{st}, nil
}
