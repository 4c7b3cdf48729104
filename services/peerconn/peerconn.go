// Package peerconn connects one node to another, authenticated end to
// end by their node keys: directly when the other node is reachable, or
// through the relay of a supernode it is attached to
// (relay.ProtocolConnect), which only carries the bytes. Inside the
// relay.ProtocolPeer stream the two nodes run libp2p's TLS 1.3 handshake
// with their node keys, so neither the relay's operator nor anyone else
// can read, change or pose as either side. Nodes use it for backups to a
// friend's node.
package peerconn

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/internal/chanlisten"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/relay"
)

// handshakeProtocol names the TLS handshake inside a peer stream.
const handshakeProtocol = "/pc2/peer-tls/1"

// HandshakeTimeout bounds the TLS handshake of a peer connection.
const HandshakeTimeout = 15 * time.Second

// maxHandshakes bounds the handshakes a Listener runs at once: anyone may
// open peer streams to a node.
const maxHandshakes = 16

// Conn is an authenticated connection to another node.
type Conn struct {
	sec.SecureConn
	stream net.Conn
}

// Peer is the other node's identity, proved by its key.
func (c *Conn) Peer() identity.ID {
	id, _ := dht.PeerToID(c.RemotePeer())
	return id
}

// Close closes the TLS session and the stream under it.
func (c *Conn) Close() error {
	err := c.SecureConn.Close()
	c.stream.Close()
	return err
}

func transport(key ed25519.PrivateKey) (*libp2ptls.Transport, error) {
	sk, err := crypto.UnmarshalEd25519PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("peerconn: node key: %w", err)
	}
	return libp2ptls.New(handshakeProtocol, sk, nil)
}

// Listener accepts the peer connections other nodes open to this node
// (relay.ProtocolPeer streams on its host: from its relays, or direct),
// after the handshake proved who they are and allow said yes.
type Listener struct {
	*chanlisten.Listener
	h     host.Host
	tr    *libp2ptls.Transport
	allow func(identity.ID) bool
	log   *slog.Logger
	slots chan struct{}
	once  sync.Once
}

// Listen handles relay.ProtocolPeer streams on h with the node key key;
// allow decides which nodes may connect (the others are closed after the
// handshake). Close removes the handler.
func Listen(h host.Host, key ed25519.PrivateKey, allow func(identity.ID) bool, log *slog.Logger) (*Listener, error) {
	tr, err := transport(key)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{Listener: chanlisten.New(relay.PeerAddr(h.ID())), h: h, tr: tr, allow: allow, log: log,
		slots: make(chan struct{}, maxHandshakes)}
	h.SetStreamHandler(relay.ProtocolPeer, l.handle)
	return l, nil
}

func (l *Listener) handle(st network.Stream) {
	select {
	case l.slots <- struct{}{}:
	default:
		st.Reset() // too many handshakes at once
		return
	}
	raw := relay.StreamConn{Stream: st}
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	st.SetDeadline(time.Now().Add(HandshakeTimeout))
	sc, err := l.tr.SecureInbound(ctx, raw, "")
	cancel()
	<-l.slots
	if err != nil {
		l.log.Debug("peer handshake failed", "via", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	st.SetDeadline(time.Time{})
	c := &Conn{SecureConn: sc, stream: raw}
	id, err := dht.PeerToID(sc.RemotePeer())
	if err != nil || !l.allow(id) {
		l.log.Info("peer connection refused: not allowed", "peer", id.DID())
		c.Close()
		return
	}
	if !l.Deliver(c) {
		c.Close()
	}
}

// Close stops accepting and removes the stream handler.
func (l *Listener) Close() error {
	l.once.Do(func() { l.h.RemoveStreamHandler(relay.ProtocolPeer) })
	return l.Listener.Close()
}

// Dial connects to node to, whose did record is rec: directly at its
// direct addresses, else through each supernode it lists, and proves
// both sides with the handshake (the answer comes from to's key, or the
// connection fails).
func Dial(ctx context.Context, h host.Host, key ed25519.PrivateKey, rec *records.DID) (*Conn, error) {
	tr, err := transport(key)
	if err != nil {
		return nil, err
	}
	target, err := dht.IDToPeer(rec.ID)
	if err != nil {
		return nil, err
	}
	var errs []error
	try := func(raw net.Conn) (*Conn, error) {
		hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
		defer cancel()
		if d, ok := hctx.Deadline(); ok {
			raw.SetDeadline(d)
		}
		sc, err := tr.SecureOutbound(hctx, raw, target)
		if err != nil {
			raw.Close()
			return nil, err
		}
		raw.SetDeadline(time.Time{})
		return &Conn{SecureConn: sc, stream: raw}, nil
	}
	if addrs := multiaddrs(rec.Direct); len(addrs) > 0 {
		if c, err := dialDirect(ctx, h, peer.AddrInfo{ID: target, Addrs: addrs}); err == nil {
			if sc, err := try(c); err == nil {
				return sc, nil
			} else {
				errs = append(errs, fmt.Errorf("direct: %w", err))
			}
		} else {
			errs = append(errs, fmt.Errorf("direct: %w", err))
		}
	}
	for _, sn := range rec.Supernodes {
		via, err := dht.IDToPeer(sn.ID)
		if err != nil {
			continue
		}
		c, err := relay.Connect(ctx, h, peer.AddrInfo{ID: via, Addrs: multiaddrs(sn.Addrs)}, rec.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sc, err := try(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("via %s: %w", sn.ID, err))
			continue
		}
		return sc, nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("peerconn: %s lists no direct address and no supernode", rec.ID.DID())
	}
	return nil, fmt.Errorf("peerconn: reach %s: %w", rec.ID.DID(), errors.Join(errs...))
}

func dialDirect(ctx context.Context, h host.Host, ai peer.AddrInfo) (net.Conn, error) {
	if err := h.Connect(ctx, ai); err != nil {
		return nil, err
	}
	st, err := h.NewStream(ctx, ai.ID, relay.ProtocolPeer)
	if err != nil {
		return nil, err
	}
	return relay.StreamConn{Stream: st}, nil
}

func multiaddrs(ss []string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range ss {
		if a, err := ma.NewMultiaddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}
