// Package stun is a STUN client: it asks a STUN server (RFC 8489; the
// supernode's services/turn answers STUN too) for the public address and
// port a NAT gives a UDP socket, which a node shows in its status and uses
// to tell whether it is behind a NAT.
package stun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	pionstun "github.com/pion/stun/v3"
)

// ErrNoResponse is returned by Reflexive when the server never answered.
var ErrNoResponse = errors.New("stun: no response")

// Retransmission schedule of RFC 8489 section 6.2.1: RTO 500 ms, doubled
// after each send, 7 sends, then 16 RTO for the last answer (39.5 s).
const (
	stunRTO      = 500 * time.Millisecond
	stunRequests = 7
	stunLastWait = 16 * stunRTO
)

// Reflexive asks the STUN server at server for the address conn's packets
// come from (its server-reflexive address: the public address and port a
// NAT gave conn) and returns it, IPv4 addresses unmapped.
//
// It retransmits the Binding request until an answer arrives, ctx ends, or
// the RFC 8489 schedule (39.5 s) runs out. It reads from conn meanwhile,
// discarding other packets, so nothing else may read from conn until it
// returns; it changes conn's read deadline and clears it on return.
func Reflexive(ctx context.Context, conn net.PacketConn, server net.Addr) (netip.AddrPort, error) {
	req, err := pionstun.Build(pionstun.TransactionID, pionstun.BindingRequest, pionstun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun binding %s: build request: %w", server, err)
	}

	if err := ctx.Err(); err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun binding %s: %w", server, err)
	}
	// When ctx ends, a past read deadline makes a blocked read return. mu
	// keeps the loop from overwriting that deadline, and the cancellation
	// from setting it after Reflexive has returned.
	var mu sync.Mutex
	canceled, finished := false, false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			canceled = true
			conn.SetReadDeadline(time.Unix(1, 0))
		}
	})
	defer func() {
		stop()
		mu.Lock()
		finished = true
		conn.SetReadDeadline(time.Time{})
		mu.Unlock()
	}()

	buf := make([]byte, 1500)
	rto := stunRTO
	for sent := 1; ; sent++ {
		if _, err := conn.WriteTo(req.Raw, server); err != nil {
			return netip.AddrPort{}, fmt.Errorf("stun binding %s: send: %w", server, err)
		}
		wait := rto
		if sent == stunRequests {
			wait = stunLastWait
		}
		rto *= 2
		mu.Lock()
		if canceled {
			mu.Unlock()
			return netip.AddrPort{}, fmt.Errorf("stun binding %s: %w", server, ctx.Err())
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		mu.Unlock()

		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return netip.AddrPort{}, fmt.Errorf("stun binding %s: %w", server, ctx.Err())
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // retransmit
				}
				return netip.AddrPort{}, fmt.Errorf("stun binding %s: read: %w", server, err)
			}
			addr, ok, err := parseBindingResponse(buf[:n], req.TransactionID)
			if !ok {
				continue // not ours
			}
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("stun binding %s: %w", server, err)
			}
			return addr, nil
		}
		if sent == stunRequests {
			return netip.AddrPort{}, fmt.Errorf("stun binding %s: %w after %d requests", server, ErrNoResponse, sent)
		}
	}
}

// parseBindingResponse decodes a packet that may answer the Binding
// request tid. ok is false when it does not (not STUN, another
// transaction, not a response), and such packets are to be ignored.
func parseBindingResponse(b []byte, tid [pionstun.TransactionIDSize]byte) (addr netip.AddrPort, ok bool, err error) {
	if !pionstun.IsMessage(b) {
		return netip.AddrPort{}, false, nil
	}
	m := &pionstun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return netip.AddrPort{}, false, nil
	}
	if m.TransactionID != tid || m.Type.Method != pionstun.MethodBinding {
		return netip.AddrPort{}, false, nil
	}
	switch m.Type.Class {
	case pionstun.ClassSuccessResponse:
	case pionstun.ClassErrorResponse:
		var code pionstun.ErrorCodeAttribute
		if err := code.GetFrom(m); err != nil {
			return netip.AddrPort{}, true, errors.New("binding error response without error code")
		}
		return netip.AddrPort{}, true, fmt.Errorf("binding refused: %d %s", code.Code, code.Reason)
	default:
		return netip.AddrPort{}, false, nil
	}
	var ip net.IP
	var port int
	var xor pionstun.XORMappedAddress
	if err := xor.GetFrom(m); err == nil {
		ip, port = xor.IP, xor.Port
	} else {
		// RFC 3489 servers send only MAPPED-ADDRESS.
		var mapped pionstun.MappedAddress
		if err := mapped.GetFrom(m); err != nil {
			return netip.AddrPort{}, true, errors.New("binding response without (XOR-)MAPPED-ADDRESS")
		}
		ip, port = mapped.IP, mapped.Port
	}
	a, okIP := netip.AddrFromSlice(ip)
	if !okIP || port <= 0 || port > 0xffff {
		return netip.AddrPort{}, true, fmt.Errorf("binding response with bad address %v port %d", ip, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true, nil
}
