package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/provisioning/identity"
)

// ErrForwardRefused is returned by Forward and Connect when the relay
// could not reach the node (not attached there, at its limit).
var ErrForwardRefused = errors.New("relay: forward refused")

// Forward opens a proto stream (ProtocolHTTP or ProtocolTLS) to node id
// through the relay of the supernode via (another gateway's side of
// ProtocolForward).
func Forward(ctx context.Context, h host.Host, via peer.AddrInfo, id identity.ID, proto protocol.ID) (net.Conn, error) {
	req := &Message{Type: TypeForward, DID: id.DID()}
	if proto != ProtocolHTTP {
		req.Proto = string(proto)
	}
	return open(ctx, h, via, ProtocolForward, req, TypeForwarded)
}

// Connect opens a ProtocolPeer connection to node id through the relay of
// the supernode via, which the node is attached to (another node's side
// of ProtocolConnect). The relay only carries it: authenticate the node
// inside it.
func Connect(ctx context.Context, h host.Host, via peer.AddrInfo, id identity.ID) (net.Conn, error) {
	return open(ctx, h, via, ProtocolConnect, &Message{Type: TypeConnect, DID: id.DID()}, TypeConnected)
}

// open asks the relay of via for a stream to a node with req and returns
// it once the relay answers ok.
func open(ctx context.Context, h host.Host, via peer.AddrInfo, proto protocol.ID, req *Message, ok string) (net.Conn, error) {
	what := string(proto)
	if len(via.Addrs) > 0 {
		if err := h.Connect(ctx, via); err != nil {
			return nil, fmt.Errorf("relay: %s via %s: %w", what, via.ID, err)
		}
	}
	st, err := h.NewStream(ctx, via.ID, proto)
	if err != nil {
		return nil, fmt.Errorf("relay: %s via %s: %w", what, via.ID, AsBusy(err))
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if err := WriteMessage(st, req); err != nil {
		st.Reset()
		return nil, fmt.Errorf("relay: %s via %s: %w", what, via.ID, err)
	}
	m, err := ReadMessage(st)
	if err != nil {
		st.Reset()
		return nil, fmt.Errorf("relay: %s via %s: %w", what, via.ID, err)
	}
	if m.Type != ok {
		st.Reset()
		if strings.HasPrefix(m.Error, ErrBusy.Error()) {
			// Refused for the node's stream limits: busy, not offline.
			return nil, fmt.Errorf("%w, %w via %s: %s", ErrForwardRefused, ErrBusy, via.ID, m.Error)
		}
		return nil, fmt.Errorf("%w via %s: %s", ErrForwardRefused, via.ID, m.Error)
	}
	st.SetDeadline(time.Time{})
	return StreamConn{st}, nil
}
