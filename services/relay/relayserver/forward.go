package relayserver

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
)

// handleForward serves one forwarded HTTP connection (the server side of
// relay.Forward): it opens a /pc2/http/1 stream to the node, answers
// "forwarded" and splices the two streams, or answers "refused" and
// closes. Only HTTP is forwarded: a node's mapped TCP services stay on the
// relay that maps them.
func (r *Relay) handleForward(st network.Stream) {
	st.SetReadDeadline(r.cfg.Now().Add(10 * time.Second))
	m, err := relay.ReadMessage(st)
	if err != nil || m.Type != relay.TypeForward {
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	id, err := identity.ParseDID(m.DID)
	if err != nil {
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: err.Error()})
		st.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	node, err := r.OpenStream(ctx, id, relay.ProtocolHTTP)
	cancel()
	if err != nil {
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: err.Error()})
		st.Close()
		return
	}
	if err := relay.WriteMessage(st, &relay.Message{Type: relay.TypeForwarded}); err != nil {
		node.Reset()
		st.Reset()
		return
	}
	relay.Splice(st, node)
	st.Close()
	node.Close()
}
