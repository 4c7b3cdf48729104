package relayserver

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
)

// forwardKey is one forwarding gateway's streams to one node.
type forwardKey struct {
	from peer.ID
	to   identity.ID
}

// forwardShare is the part of a node's streams (Limits.Streams) one
// forwarding gateway may hold: the rest stays for this supernode's own
// gateway and the others.
func (r *Relay) forwardShare() int { return max(1, r.cfg.Limits.Streams/2) }

// handleForward serves one forwarded HTTP connection (the server side of
// relay.Forward): it opens a /pc2/http/1 stream to the node, answers
// "forwarded" and splices the two streams, or answers "refused" and
// closes. Only the domains' gateways (Config.Forwarders) may forward, each
// within its share of the node's streams. Only HTTP is forwarded: a
// node's mapped TCP services stay on the relay that maps them.
func (r *Relay) handleForward(st network.Stream) {
	from := st.Conn().RemotePeer()
	refuse := func(why string) {
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: why})
		st.Close()
	}
	st.SetReadDeadline(r.cfg.Now().Add(10 * time.Second))
	m, err := relay.ReadMessage(st)
	if err != nil || m.Type != relay.TypeForward {
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r.cfg.Forwarders == nil || !r.cfg.Forwarders(ctx, from) {
		r.log.Debug("forward refused: not a gateway of a domain this supernode serves", "peer", from)
		refuse("not a gateway of a domain this supernode serves")
		return
	}
	id, err := identity.ParseDID(m.DID)
	if err != nil {
		refuse(err.Error())
		return
	}
	release, ok := r.forwarding.Take(forwardKey{from, id}, r.forwardShare())
	if !ok {
		refuse(fmt.Sprintf("%v: this gateway holds its share (%d) of %s's streams", relay.ErrBusy, r.forwardShare(), id.DID()))
		return
	}
	defer release()
	node, err := r.OpenStream(ctx, id, relay.ProtocolHTTP)
	cancel()
	if err != nil {
		refuse(err.Error())
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
