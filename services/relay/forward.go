package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/provisioning/identity"
)

// ErrForwardRefused is returned by Forward when the relay could not reach
// the node (not attached there, at its limit).
var ErrForwardRefused = errors.New("relay: forward refused")

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
