package relayserver

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

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

// handleForward serves one forwarded HTTP or TLS connection (the server
// side of relay.Forward): it opens a /pc2/http/1 or /pc2/tls/1 stream to
// the node, answers "forwarded" and splices the two streams, or answers
// "refused" and closes. Only the domains' gateways (Config.Forwarders)
// may forward, each within its share of the node's streams. Only these
// two are forwarded: a node's mapped TCP services stay on the relay that
// maps them.
func (r *Relay) handleForward(st network.Stream) {
	r.spliceTo(st, relay.TypeForward, relay.TypeForwarded, []protocol.ID{relay.ProtocolHTTP, relay.ProtocolTLS},
		func(ctx context.Context, from peer.ID, id identity.ID) (func(), string) {
			if r.cfg.Forwarders == nil || !r.cfg.Forwarders(ctx, from) {
				r.log.Debug("forward refused: not a gateway of a domain this supernode serves", "peer", from)
				return nil, "not a gateway of a domain this supernode serves"
			}
			release, ok := r.forwarding.Take(forwardKey{from, id}, r.forwardShare())
			if !ok {
				return nil, fmt.Sprintf("%v: this gateway holds its share (%d) of %s's streams", relay.ErrBusy, r.forwardShare(), id.DID())
			}
			return release, ""
		})
}

// connectShare is how many of a node's streams one other peer may hold
// through Connect, and connectTotal how many all of them together may:
// anyone may connect (a node's friends are the node's business), so
// strangers together cannot take the streams its visitors need.
func (r *Relay) connectShare() int { return max(1, r.cfg.Limits.Streams/32) }
func (r *Relay) connectTotal() int { return max(1, r.cfg.Limits.Streams/4) }

// handleConnect serves one node-to-node connection (the server side of
// relay.Connect): any peer may ask for a ProtocolPeer stream to a node
// attached here, within its share and the total share of such streams.
// The relay only splices the bytes; the nodes authenticate each other
// inside.
func (r *Relay) handleConnect(st network.Stream) {
	r.spliceTo(st, relay.TypeConnect, relay.TypeConnected, []protocol.ID{relay.ProtocolPeer},
		func(_ context.Context, from peer.ID, id identity.ID) (func(), string) {
			mine, ok := r.connecting.Take(forwardKey{from, id}, r.connectShare())
			if !ok {
				return nil, fmt.Sprintf("%v: this peer holds its share (%d) of %s's streams", relay.ErrBusy, r.connectShare(), id.DID())
			}
			all, ok := r.connectingAll.Take(id, r.connectTotal())
			if !ok {
				mine()
				return nil, fmt.Sprintf("%v: other nodes hold their share (%d) of %s's streams", relay.ErrBusy, r.connectTotal(), id.DID())
			}
			return func() { mine(); all() }, ""
		})
}

// spliceTo reads a request of type req naming a node, asks admit (which
// returns a release, or why not), opens a stream to the node of the
// request's protocol (one of protos; "": the first), answers ok and
// splices the two; or answers "refused" and closes.
func (r *Relay) spliceTo(st network.Stream, req, ok string, protos []protocol.ID,
	admit func(ctx context.Context, from peer.ID, id identity.ID) (release func(), why string)) {
	from := st.Conn().RemotePeer()
	refuse := func(why string) {
		relay.WriteMessage(st, &relay.Message{Type: relay.TypeRefused, Error: why})
		st.Close()
	}
	st.SetReadDeadline(r.cfg.Now().Add(10 * time.Second))
	m, err := relay.ReadMessage(st)
	if err != nil || m.Type != req {
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := identity.ParseDID(m.DID)
	if err != nil {
		refuse(err.Error())
		return
	}
	proto := protos[0]
	if m.Proto != "" {
		if !slices.Contains(protos, protocol.ID(m.Proto)) {
			refuse("no such stream here: " + m.Proto)
			return
		}
		proto = protocol.ID(m.Proto)
	}
	release, why := admit(ctx, from, id)
	if why != "" {
		refuse(why)
		return
	}
	defer release()
	node, err := r.OpenStream(ctx, id, proto)
	cancel()
	if err != nil {
		refuse(err.Error())
		return
	}
	if err := relay.WriteMessage(st, &relay.Message{Type: ok}); err != nil {
		node.Reset()
		st.Reset()
		return
	}
	relay.Splice(st, node)
	st.Close()
	node.Close()
}
