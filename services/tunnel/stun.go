package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pc2/pc2/services/stun"
)

// stunResult is the last STUN check's outcome.
type stunResult struct {
	server    string
	reflexive netip.AddrPort // zero: none yet or failed
	nat       bool           // reflexive is not one of the node's addresses
	err       string
}

// checkSTUN asks the first STUN server in uris for the node's reflexive
// address (the public address a NAT maps it to) and records whether the
// node is behind a NAT: whether that address is one of its own.
func (c *Client) checkSTUN(ctx context.Context, uris []string) {
	server := stunServer(uris)
	if server == "" {
		return
	}
	res := stunResult{server: server}
	addr, loopback, err := c.reflexive(ctx, server)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		res.err = err.Error()
	} else {
		res.reflexive = addr
		res.nat = true
		if own, err := c.cfg.LocalAddrs(); err == nil {
			for _, a := range own {
				// Loopback is the node's own address only towards a server
				// on loopback; from elsewhere it is a NAT's (QEMU's user
				// network forwards to the host's loopback).
				if a.Unmap() == addr.Addr() && (loopback || !a.IsLoopback()) {
					res.nat = false
				}
			}
		}
	}
	c.mu.Lock()
	changed := c.stun != res
	c.stun = res
	c.mu.Unlock()
	if changed {
		c.log.Info("STUN check", "server", server, "reflexive", res.reflexive, "behind_nat", res.nat, "err", res.err)
	}
}

// reflexive runs one STUN check against server; loopback tells whether
// the server is on loopback.
func (c *Client) reflexive(ctx context.Context, server string) (addr netip.AddrPort, loopback bool, err error) {
	ua, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return addr, false, fmt.Errorf("STUN server %s: %w", server, err)
	}
	network := "udp4"
	if ua.IP.To4() == nil {
		network = "udp6"
	}
	conn, err := c.cfg.ListenPacket(network, ":0")
	if err != nil {
		return addr, false, fmt.Errorf("STUN socket: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr, err = stun.Reflexive(ctx, conn, ua)
	return addr, ua.IP.IsLoopback(), err
}

// stunServer returns host:port of the first "stun:" URI ("" if none).
func stunServer(uris []string) string {
	for _, u := range uris {
		if hp, ok := strings.CutPrefix(u, "stun:"); ok {
			hp, _, _ = strings.Cut(hp, "?")
			if _, _, err := net.SplitHostPort(hp); err == nil {
				return hp
			}
		}
	}
	return ""
}
