package supernode

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/turn"
)

// startTURN starts the STUN/TURN server of cfg.TURNListen (nil, nil when
// it is off) on the listeners in opts, or on new ones. Its credentials go
// to attached nodes through the relay (TURNIssuer).
func startTURN(cfg *Config, opts Options, log *slog.Logger) (*turn.Server, error) {
	if cfg.TURNListen == "" {
		return nil, nil
	}
	udp, tcp := opts.TURNPacketConn, opts.TURNListener
	if udp == nil {
		pc, err := net.ListenPacket("udp4", cfg.TURNListen)
		if err != nil {
			return nil, fmt.Errorf("turn: %w", err)
		}
		udp = pc
	}
	tcp, err := listen(tcp, "tcp4", cfg.TURNListen)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("turn: %w", err)
	}
	relayIP, err := turnRelayIP(cfg, udp, net.InterfaceAddrs)
	if err != nil {
		udp.Close()
		tcp.Close()
		return nil, err
	}
	tc := turn.Config{UDP: udp, TCP: tcp, RelayAddress: relayIP,
		MinPort: uint16(cfg.TURNPortMin), MaxPort: uint16(cfg.TURNPortMax), Logger: log}
	if cfg.TURNAllowPrivatePeers {
		tc.AllowPeer = func(netip.Addr) bool { return true }
	}
	srv, err := turn.New(tc)
	if err != nil {
		udp.Close()
		tcp.Close()
		return nil, err
	}
	return srv, nil
}

// turnRelayIP picks the address TURN relays on: the configured one, the
// listener's own, or the best of the interfaces' (public before private,
// never loopback).
func turnRelayIP(cfg *Config, udp net.PacketConn, ifaceAddrs func() ([]net.Addr, error)) (net.IP, error) {
	if cfg.TURNRelayIP != "" {
		return net.ParseIP(cfg.TURNRelayIP), nil
	}
	if ua, ok := udp.LocalAddr().(*net.UDPAddr); ok && ua.IP.To4() != nil && !ua.IP.IsUnspecified() {
		return ua.IP, nil
	}
	addrs, err := ifaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("turn: relay address: %w", err)
	}
	var private net.IP
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().Is4() || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if turn.PublicPeer(p.Addr()) {
			return p.Addr().AsSlice(), nil
		}
		if private == nil {
			private = p.Addr().AsSlice()
		}
	}
	if private == nil {
		return nil, fmt.Errorf("turn: no IPv4 address to relay on; set turn_relay_ip")
	}
	return private, nil
}

// TURNIssuer is a relayserver.Config.TURN that hands out srv's
// credentials, valid for ttl (<= 0: turn.DefaultCredentialTTL), with the
// node's DID as the user. It lives here, where the relay and TURN are
// wired together, so that neither service imports the other.
func TURNIssuer(srv *turn.Server, ttl time.Duration) func(identity.ID) relay.TURNInfo {
	return func(id identity.ID) relay.TURNInfo {
		c := srv.Credentials(id.DID(), ttl)
		return relay.TURNInfo{Username: c.Username, Password: c.Password, Expires: c.Expires.Unix(), URIs: c.URIs}
	}
}
