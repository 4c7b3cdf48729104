package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/pc2/pc2/internal/testing/dhcptest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
)

// TestLeaseFromDnsmasq: a real DHCP server (dnsmasq) in another network
// namespace: the client gets a lease with the router and name server,
// renews it (the server's T1 of 2 s) without a new update, and when the
// server comes back with another range (it refuses the old address: NAK)
// reports the loss and gets an address in the new range.
func TestLeaseFromDnsmasq(t *testing.T) {
	p := dhcptest.NewPair(t)
	p.Up(t)
	slog := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	srvLog, stop := p.Dnsmasq(t, "192.0.2.50", "192.0.2.59")
	leases := make(chan *Lease, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Interface: "veth0", Hostname: "pc2-test", Logger: slog, Retry: 200 * time.Millisecond,
			Open: func(iface string) (c Client, err error) {
				err = dhcptest.In(p.Client, func() error {
					c, err = nclient4.New(iface, nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
					return err
				})
				return c, err
			}}, func(l *Lease) { leases <- l })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	next := func(what string) *Lease {
		t.Helper()
		select {
		case l := <-leases:
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s within 30 s; dnsmasq:\n%s", what, srvLog)
			return nil
		}
	}
	l := next("lease")
	want := netip.MustParsePrefix("192.0.2.50/24")
	if l == nil || !netip.MustParsePrefix("192.0.2.48/28").Contains(l.Address.Addr()) || l.Address.Bits() != want.Bits() ||
		l.Router != netip.MustParseAddr("192.0.2.1") || fmt.Sprint(l.DNS) != "[192.0.2.53]" ||
		l.Time != 2*time.Minute || l.Renew < 2*time.Second || l.Renew >= l.Rebind || l.Rebind != 4*time.Second || l.Server != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("lease %+v", l)
	}
	if !strings.Contains(srvLog.String(), "pc2-test") {
		t.Errorf("the host name did not reach the server:\n%s", srvLog)
	}
	// Renewals: the server acknowledges again, the interface stays as it is.
	testenv.WaitFor(t, 30*time.Second, "two renewals", func() bool { return strings.Count(srvLog.String(), "DHCPACK") >= 3 })
	select {
	case l2 := <-leases:
		t.Fatalf("a renewal changed the lease: %+v", l2)
	default:
	}

	// The server again, with another range: it refuses the old address.
	stop()
	srvLog, _ = p.Dnsmasq(t, "192.0.2.100", "192.0.2.109")
	if l := next("loss of the refused lease"); l != nil {
		t.Fatalf("after the NAK: %+v, want the loss", l)
	}
	l = next("new lease")
	if l == nil || !netip.MustParsePrefix("192.0.2.96/28").Contains(l.Address.Addr()) {
		t.Fatalf("new lease %+v, want one in the new range", l)
	}
}

// FuzzConvert: whatever a server on the LAN answers, reading the lease
// from it does not panic, and a lease it accepts is one the device can
// apply: a unicast address in a prefix, a router inside it, times in
// order and long enough not to make a storm of renewals.
func FuzzConvert(f *testing.F) {
	ack, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 50)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithRouter(net.IPv4(192, 0, 2, 1)), dhcpv4.WithDNS(net.IPv4(192, 0, 2, 53)),
		dhcpv4.WithLeaseTime(120), dhcpv4.WithServerIP(net.IPv4(192, 0, 2, 1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ack.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		l, err := convert(&nclient4.Lease{ACK: m}, time.Unix(1e9, 0))
		if err != nil {
			return
		}
		if !l.Address.Addr().IsGlobalUnicast() || l.Address.Bits() == 0 || (l.Router.IsValid() && !l.Address.Contains(l.Router)) {
			t.Fatalf("lease %+v", l)
		}
		if l.Time < minLease || l.Renew <= 0 || l.Renew >= l.Rebind || l.Rebind >= l.Time {
			t.Fatalf("times %+v", l)
		}
	})
}
