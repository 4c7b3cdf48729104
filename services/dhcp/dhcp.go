// Package dhcp keeps a DHCPv4 lease on a network interface, inside the
// device service: the appliance's one DHCP client, in place of one
// gokrazy DHCP process per interface (each a Go program of about 11 MB).
//
// Run asks for a lease (DISCOVER, OFFER, REQUEST, ACK: nclient4 of
// github.com/insomniacslk/dhcp does the exchange on a raw socket, since
// the interface has no address yet), hands it to its caller, renews it
// from half its time on, asks anew once the renewals have failed until
// seven eighths of it (RFC 2131's T1 and T2), and says the lease is gone
// when it expires or the server refuses it (NAK). Kick makes it ask again
// at once, for a link that came back (maybe on another network). It does
// not touch the interface: the caller applies the lease (the device hands
// it to netconf as the interface's address, gateway and name servers).
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// Lease is what a DHCP server gave.
type Lease struct {
	// Address is the interface's address with the network's prefix.
	Address netip.Prefix
	// Router is the default gateway (invalid: none given).
	Router netip.Addr
	// DNS are the name servers.
	DNS []netip.Addr
	// Server is the DHCP server.
	Server netip.Addr
	// Time is the lease's length and Renew, Rebind when to renew it and
	// when to ask any server (from Acquired).
	Time, Renew, Rebind time.Duration
	Acquired            time.Time
}

// Same reports whether l and o configure the interface the same way
// (the times aside).
func (l *Lease) Same(o *Lease) bool {
	if l == nil || o == nil {
		return l == o
	}
	if l.Address != o.Address || l.Router != o.Router || len(l.DNS) != len(o.DNS) {
		return false
	}
	for i := range l.DNS {
		if l.DNS[i] != o.DNS[i] {
			return false
		}
	}
	return true
}

// Client is what Run needs of a DHCP client (nclient4.Client).
type Client interface {
	Request(ctx context.Context, modifiers ...dhcpv4.Modifier) (*nclient4.Lease, error)
	Renew(ctx context.Context, lease *nclient4.Lease, modifiers ...dhcpv4.Modifier) (*nclient4.Lease, error)
	Close() error
}

// Config configures Run.
type Config struct {
	// Interface is the network interface's name.
	Interface string
	// Hostname is sent to the server (routers list devices by it).
	Hostname string
	// Logger; nil discards.
	Logger *slog.Logger
	// Open returns a client on the interface; nil: nclient4 on a raw
	// socket in this process's network namespace.
	Open func(iface string) (Client, error)
	// Kick, if set, makes Run ask for a lease again at once (a link that
	// came back up).
	Kick <-chan struct{}
	// Retry is the first wait after a failed request, doubled up to 64
	// times that (default 2 s).
	Retry time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Defaults when a server leaves them out.
const (
	defaultLease = time.Hour
	// minLease guards against a server's tiny lease making a storm of
	// renewals.
	minLease = 30 * time.Second
)

// Run keeps a lease on cfg.Interface until ctx ends, calling update with
// each lease that configures the interface differently from the last and
// with nil when the lease is lost. It returns when ctx ends, or an error
// when no client can be opened on the interface.
func Run(ctx context.Context, cfg Config, update func(*Lease)) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("interface", cfg.Interface)
	open := cfg.Open
	if open == nil {
		open = func(iface string) (Client, error) {
			return nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
		}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	retry := cfg.Retry
	if retry == 0 {
		retry = 2 * time.Second
	}
	c, err := open(cfg.Interface)
	if err != nil {
		return fmt.Errorf("dhcp: %s: %w", cfg.Interface, err)
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue)}
	if cfg.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(cfg.Hostname)))
	}

	var (
		raw     *nclient4.Lease // the lease held (nil: none)
		applied *Lease
		wait    = retry
	)
	set := func(l *Lease) {
		if !l.Same(applied) {
			update(l)
		}
		applied = l
	}
	// sleep waits d, or less for a kick (true) or ctx's end.
	sleep := func(d time.Duration) (kicked bool) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-cfg.Kick:
			return true
		case <-t.C:
		}
		return false
	}
	for ctx.Err() == nil {
		if raw == nil {
			l, err := c.Request(ctx, mods...)
			if err == nil {
				var lease *Lease
				if lease, err = convert(l, now()); err == nil {
					raw, wait = l, retry
					log.Info("dhcp: leased", "address", lease.Address, "router", lease.Router, "dns", lease.DNS, "lease", lease.Time)
					set(lease)
					continue
				}
			}
			if ctx.Err() != nil {
				break
			}
			if applied != nil && !now().Before(applied.Acquired.Add(applied.Time)) {
				// Asked again after a kick, and the old lease ran out.
				log.Warn("dhcp: lease expired", "address", applied.Address)
				set(nil)
			}
			log.Warn("dhcp: no lease yet", "err", err, "again_in", wait)
			sleep(wait)
			wait = min(2*wait, 64*retry)
			continue
		}
		// Holding a lease: renew from T1 on, until T2; then ask anyone.
		lease := applied
		at := func(d time.Duration) time.Duration { return lease.Acquired.Add(d).Sub(now()) }
		if d := at(lease.Renew); d > 0 {
			if sleep(d) {
				log.Info("dhcp: link changed; asking again")
				raw = nil // ask again, keeping the lease applied until answered
				continue
			}
			continue
		}
		if at(lease.Time) <= 0 {
			log.Warn("dhcp: lease expired", "address", lease.Address)
			raw = nil
			set(nil)
			continue
		}
		var l *nclient4.Lease
		var err error
		if at(lease.Rebind) > 0 {
			l, err = c.Renew(ctx, raw, mods...)
		} else {
			l, err = c.Request(ctx, mods...)
		}
		var nak *nclient4.ErrNak
		switch {
		case ctx.Err() != nil:
		case errors.As(err, &nak):
			log.Warn("dhcp: the server refused the lease", "address", lease.Address)
			raw = nil
			set(nil)
		case err != nil:
			// Again after half the time left to T2 (or to the end), at
			// least a minute apart (RFC 2131 4.4.5).
			left := at(lease.Rebind)
			if left <= 0 {
				left = at(lease.Time)
			}
			d := max(left/2, min(time.Minute, left))
			log.Warn("dhcp: renewal failed", "err", err, "again_in", d.Round(time.Second))
			if sleep(d) {
				raw = nil
			}
		default:
			nl, err := convert(l, now())
			if err != nil {
				log.Warn("dhcp: renewal answered without a usable lease", "err", err)
				raw = nil
				continue
			}
			if !nl.Same(lease) {
				log.Info("dhcp: lease changed", "address", nl.Address, "router", nl.Router, "dns", nl.DNS)
			}
			raw = l
			set(nl) // also when the same: the new times
		}
	}
	if raw != nil {
		// The next start asks again; a release would make the server
		// hand the address to someone else meanwhile.
		log.Info("dhcp: stopped", "address", applied.Address)
	}
	return nil
}

// convert reads a lease from the server's ACK.
func convert(l *nclient4.Lease, now time.Time) (*Lease, error) {
	ack := l.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsGlobalUnicast() {
		return nil, fmt.Errorf("dhcp: the server offered no usable address (%v)", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = net.IP(ip.AsSlice()).DefaultMask() // classful, as RFC 2132 leaves it
	}
	ones, bits := mask.Size()
	if bits != 32 || ones == 0 {
		return nil, fmt.Errorf("dhcp: subnet mask %v is not a prefix", mask)
	}
	out := &Lease{Address: netip.PrefixFrom(ip, ones), Acquired: now}
	for _, r := range ack.Router() {
		if a, ok := netip.AddrFromSlice(r.To4()); ok && out.Address.Contains(a) {
			out.Router = a
			break
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			out.DNS = append(out.DNS, a)
		}
	}
	out.Server, _ = netip.AddrFromSlice(ack.ServerIdentifier().To4())
	out.Time = max(ack.IPAddressLeaseTime(defaultLease), minLease)
	out.Renew = ack.IPAddressRenewalTime(out.Time / 2)
	out.Rebind = ack.IPAddressRebindingTime(out.Time * 7 / 8)
	if out.Renew <= 0 || out.Renew >= out.Time {
		out.Renew = out.Time / 2
	}
	if out.Rebind <= out.Renew || out.Rebind >= out.Time {
		out.Rebind = out.Time * 7 / 8
	}
	return out, nil
}
