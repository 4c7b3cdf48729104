package nattest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// ObservedAddr connects from one host to a fresh listener on another and
// returns the source address and port that the listener sees: through
// NAT, the router's public address and the port it mapped. network is
// "tcp" or "udp"; for "udp" it also checks that the listener's reply gets
// back through the NAT. Without a deadline in ctx, it gives up after 10s.
func ObservedAddr(ctx context.Context, from, to *Host, network string) (netip.AddrPort, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	target := to.Addr()
	if from.Addr().Is6() { // an IPv6-only host
		target = to.Addr6()
	}
	listen := net.JoinHostPort(target.String(), "0")
	var got netip.AddrPort
	var err error
	switch network {
	case "tcp":
		got, err = observeTCP(ctx, from, to, listen)
	case "udp":
		got, err = observeUDP(ctx, from, to, listen)
	default:
		err = fmt.Errorf("network %q: want tcp or udp", network)
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("nattest: observe %s from %s at %s: %w", network, from, to, err)
	}
	return got, nil
}

func observeTCP(ctx context.Context, from, to *Host, listen string) (netip.AddrPort, error) {
	ln, err := to.Listen("tcp", listen)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	accepted := make(chan net.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c.RemoteAddr()
		c.Close()
	}()
	c, err := from.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	a := <-accepted
	if a == nil {
		return netip.AddrPort{}, fmt.Errorf("accept: %w", context.Cause(ctx))
	}
	return unmap(a.(*net.TCPAddr).AddrPort()), nil
}

func observeUDP(ctx context.Context, from, to *Host, listen string) (netip.AddrPort, error) {
	pc, err := to.ListenPacket("udp", listen)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer pc.Close()
	c, err := from.Dial(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	ping, pong := []byte("nattest ping"), []byte("nattest pong")
	// The listener answers every ping with a pong to where it came from.
	seen := make(chan netip.AddrPort, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if !bytes.Equal(buf[:n], ping) {
				continue
			}
			select {
			case seen <- unmap(src.(*net.UDPAddr).AddrPort()):
			default:
			}
			pc.WriteTo(pong, src)
		}
	}()
	// Ping until a pong is back: UDP may drop the first datagrams.
	buf := make([]byte, 64)
	for {
		if _, err := c.Write(ping); err != nil {
			return netip.AddrPort{}, err
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		if d, _ := ctx.Deadline(); d.Before(deadline) {
			deadline = d
		}
		c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], pong) {
			return <-seen, nil
		}
		if err != nil && !isTimeout(err) {
			return netip.AddrPort{}, err
		}
		if ctx.Err() != nil {
			select {
			case a := <-seen:
				return netip.AddrPort{}, fmt.Errorf("no reply came back (the listener saw %s): %w", a, ctx.Err())
			default:
				return netip.AddrPort{}, fmt.Errorf("nothing arrived: %w", ctx.Err())
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
