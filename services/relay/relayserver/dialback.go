package relayserver

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"

	"github.com/pc2/pc2/services/relay"
)

// dialBackTimeout bounds one check.
const dialBackTimeout = 5 * time.Second

// dialBack checks whether node p accepts a new libp2p connection at
// (the address its connection comes from, port): a fresh TCP connection,
// multistream-select of Noise, and a Noise handshake that must prove p's
// key. Nothing else proves a direct address: a NAT forwards nothing
// unasked, and a different machine at that address fails the handshake.
func (r *Relay) dialBack(ctx context.Context, s *session, port int) *relay.Message {
	res := &relay.Message{Type: relay.TypeDialBackResult}
	remote := s.stream.Conn().RemoteMultiaddr()
	ip, err := manet.ToIP(remote)
	if err != nil || port < 1 || port > 65535 {
		res.Error = fmt.Sprintf("no dial-back address from %s port %d", remote, port)
		return res
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	maddr, _ := manet.FromNetAddr(&net.TCPAddr{IP: ip, Port: port})
	res.Addr = maddr.String()
	ctx, cancel := context.WithTimeout(ctx, dialBackTimeout)
	defer cancel()
	if err := r.handshake(ctx, addr, s.peer); err != nil {
		res.Error = err.Error()
		return res
	}
	res.OK = true
	return res
}

func (r *Relay) handshake(ctx context.Context, addr string, p peer.ID) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := mss.SelectProtoOrFail(noise.ID, c); err != nil {
		return fmt.Errorf("%s: no libp2p Noise listener: %w", addr, err)
	}
	key := r.cfg.Host.Peerstore().PrivKey(r.cfg.Host.ID())
	tpt, err := noise.New(noise.ID, key, nil)
	if err != nil {
		return err
	}
	sc, err := tpt.SecureOutbound(ctx, c, p)
	if err != nil {
		return fmt.Errorf("%s: handshake with %s: %w", addr, p, err)
	}
	sc.Close()
	return nil
}
