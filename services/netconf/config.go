package netconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Mode says who configures an interface's addresses.
type Mode string

const (
	// ModeDHCP leaves addressing to a DHCP client (package keep runs one,
	// package dhcp) and the kernel's IPv6 autoconfiguration. Apply only brings
	// the link up, sets the MTU and, if DNS servers are given, writes
	// resolv.conf; package keep applies the lease on top.
	ModeDHCP Mode = "dhcp"
	// ModeStatic configures the addresses, gateways and routes listed in
	// the Interface.
	ModeStatic Mode = "static"
)

// Config is the network part of the device settings file.
//
// The zero value means DHCP on the first Ethernet-like interface: netconf
// brings that link up and leaves addressing and resolv.conf to the DHCP
// client (package keep's).
type Config struct {
	// Interfaces lists the interfaces netconf manages. Interfaces not
	// listed are left alone (apart from removing what netconf itself
	// added to them earlier).
	Interfaces []Interface `json:"interfaces,omitempty"`
}

// Interface is the configuration of one network interface.
type Interface struct {
	// Name is the kernel's interface name, e.g. "eth0". Empty means the
	// first Ethernet-like interface (lowest index, not Wi-Fi); at most one
	// interface may leave it empty.
	Name string `json:"name,omitempty"`

	// Mode is ModeDHCP (the default when empty) or ModeStatic.
	Mode Mode `json:"mode,omitempty"`

	// Addresses are the static IPv4 and IPv6 addresses with their prefix
	// length, e.g. "192.168.1.10/24" or "2001:db8::10/64". Static mode only.
	Addresses []string `json:"addresses,omitempty"`

	// Gateway4 and Gateway6 are the default gateways. Each must lie in the
	// prefix of one of Addresses of its family (IPv6 gateways may also be
	// link-local). Static mode only. The IPv6 default route gets metric
	// Gateway6Metric, so it wins over (and does not collide with) the
	// metric-1024 default route the kernel learns from router
	// advertisements.
	Gateway4 string `json:"gateway4,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`

	// Routes are extra routes through this interface. Static mode only.
	Routes []Route `json:"routes,omitempty"`

	// DNS lists name servers (IPv4 or IPv6) and Search the search
	// domains. When any interface lists DNS servers, netconf owns
	// resolv.conf, also in DHCP mode (package keep then leaves the lease's name
	// servers out).
	DNS    []string `json:"dns,omitempty"`
	Search []string `json:"search,omitempty"`

	// MTU, when not zero, is set on the link.
	MTU int `json:"mtu,omitempty"`
}

// Route is an extra static route.
type Route struct {
	// To is the destination network, e.g. "10.20.0.0/16" or "fd00:1::/48".
	To string `json:"to"`
	// Via is the next hop. Empty means the destination is on-link.
	Via string `json:"via,omitempty"`
	// Metric is the route priority; 0 means the kernel's default (0 for
	// IPv4, 1024 for IPv6).
	Metric int `json:"metric,omitempty"`
}

// Gateway6Metric is the metric of the IPv6 default route via Gateway6.
const Gateway6Metric = 512

// maxNameservers is the number of name servers the C library and Go's
// resolver read from resolv.conf; more would be silently ignored.
const maxNameservers = 3

// Parse decodes a Config from JSON and validates it. Unknown fields are an
// error, so a typo in the settings file does not go unnoticed.
func Parse(data []byte) (Config, error) {
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("netconf: parse config: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("netconf: parse config: trailing data after JSON object")
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks the configuration and reports the first problem found.
func (c Config) Validate() error {
	_, err := c.compile()
	return err
}

// plan is a validated Config in the form Apply works with.
type plan struct {
	ifaces []ifacePlan
	dns    []netip.Addr
	search []string
}

type ifacePlan struct {
	name   string // "" = first Ethernet-like interface
	mode   Mode
	addrs  []netip.Prefix
	routes []routePlan
	mtu    int
}

type routePlan struct {
	dst    netip.Prefix
	gw     netip.Addr // invalid = on-link
	metric int
}

func (c Config) compile() (plan, error) {
	var p plan
	seenIface := make(map[string]bool)
	seenAddr := make(map[netip.Addr]string)
	seenDNS := make(map[string]bool)
	seenSearch := make(map[string]bool)
	for i, in := range c.Interfaces {
		label := in.Name
		if label == "" {
			label = "(first Ethernet)"
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("netconf: interface %s: %s", label, fmt.Sprintf(format, args...))
		}
		if err := checkIfname(in.Name); err != nil {
			return plan{}, fmt.Errorf("netconf: interface %d: %w", i, err)
		}
		if seenIface[in.Name] {
			if in.Name == "" {
				return plan{}, fmt.Errorf("netconf: interface %d: more than one interface without a name", i)
			}
			return plan{}, fail("duplicate interface")
		}
		seenIface[in.Name] = true

		ip := ifacePlan{name: in.Name, mode: in.Mode, mtu: in.MTU}
		switch in.Mode {
		case "", ModeDHCP:
			ip.mode = ModeDHCP
			if len(in.Addresses) > 0 || in.Gateway4 != "" || in.Gateway6 != "" || len(in.Routes) > 0 {
				return plan{}, fail(`addresses, gateways and routes need mode "static"`)
			}
		case ModeStatic:
			if len(in.Addresses) == 0 {
				return plan{}, fail("mode static needs at least one address")
			}
		default:
			return plan{}, fail("unknown mode %q (want %q or %q)", in.Mode, ModeDHCP, ModeStatic)
		}

		hasV6 := false
		for _, s := range in.Addresses {
			pfx, err := parseAddr(s)
			if err != nil {
				return plan{}, fail("address %q: %v", s, err)
			}
			if other, dup := seenAddr[pfx.Addr()]; dup {
				return plan{}, fail("address %s already configured on %s", pfx.Addr(), other)
			}
			seenAddr[pfx.Addr()] = label
			hasV6 = hasV6 || pfx.Addr().Is6()
			ip.addrs = append(ip.addrs, pfx)
		}

		if in.MTU != 0 {
			switch {
			case in.MTU < 68 || in.MTU > 65535:
				return plan{}, fail("MTU %d out of range 68..65535", in.MTU)
			case hasV6 && in.MTU < 1280:
				return plan{}, fail("MTU %d below IPv6's minimum 1280", in.MTU)
			}
		}

		for _, gw := range []struct {
			s    string
			name string
			v4   bool
		}{{in.Gateway4, "gateway4", true}, {in.Gateway6, "gateway6", false}} {
			if gw.s == "" {
				continue
			}
			a, err := parseGateway(gw.s, gw.v4)
			if err != nil {
				return plan{}, fail("%s %q: %v", gw.name, gw.s, err)
			}
			if err := onLink(a, ip.addrs); err != nil {
				return plan{}, fail("%s %s: %v", gw.name, a, err)
			}
			rp := routePlan{dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), gw: a}
			if !gw.v4 {
				rp.dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				rp.metric = Gateway6Metric
			}
			ip.routes = append(ip.routes, rp)
		}

		for _, r := range in.Routes {
			rp, err := compileRoute(r, ip.addrs)
			if err != nil {
				return plan{}, fail("route to %q: %v", r.To, err)
			}
			for _, have := range ip.routes {
				if have.dst == rp.dst && have.metric == rp.metric {
					return plan{}, fail("route to %s (metric %d) listed twice (gateways count as routes to the default network)", rp.dst, rp.metric)
				}
			}
			ip.routes = append(ip.routes, rp)
		}

		for _, s := range in.DNS {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return plan{}, fail("DNS server %q: not an IP address", s)
			}
			if a.Zone() != "" && !a.IsLinkLocalUnicast() {
				return plan{}, fail("DNS server %q: zone only allowed on link-local addresses", s)
			}
			if a.IsUnspecified() || a.IsMulticast() {
				return plan{}, fail("DNS server %q: not a unicast address", s)
			}
			if seenDNS[a.String()] {
				continue
			}
			seenDNS[a.String()] = true
			p.dns = append(p.dns, a)
		}
		for _, s := range in.Search {
			d := strings.TrimSuffix(strings.ToLower(s), ".")
			if err := checkDomain(d); err != nil {
				return plan{}, fail("search domain %q: %v", s, err)
			}
			if seenSearch[d] {
				continue
			}
			seenSearch[d] = true
			p.search = append(p.search, d)
		}
		p.ifaces = append(p.ifaces, ip)
	}
	if len(p.dns) > maxNameservers {
		return plan{}, fmt.Errorf("netconf: %d DNS servers configured, resolv.conf supports at most %d", len(p.dns), maxNameservers)
	}
	if len(p.search) > 0 && len(p.dns) == 0 {
		return plan{}, errors.New("netconf: search domains need at least one DNS server (netconf only writes resolv.conf when DNS servers are configured)")
	}
	return p, nil
}

func parseAddr(s string) (netip.Prefix, error) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, errors.New("missing prefix length (want CIDR, e.g. 192.168.1.10/24)")
		}
		return netip.Prefix{}, errors.New("not a CIDR address (e.g. 192.168.1.10/24 or 2001:db8::10/64)")
	}
	a := pfx.Addr()
	switch {
	case a.Zone() != "":
		return netip.Prefix{}, errors.New("zones are not allowed")
	case a.Is4In6():
		return netip.Prefix{}, errors.New("IPv4-mapped IPv6 addresses are not allowed")
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback():
		return netip.Prefix{}, errors.New("not a unicast host address")
	case pfx.Bits() == 0:
		return netip.Prefix{}, errors.New("prefix length 0")
	}
	if a.Is4() && pfx.Bits() < 31 {
		// /31 and /32 have no network or broadcast address (RFC 3021).
		masked := pfx.Masked().Addr()
		if a == masked {
			return netip.Prefix{}, fmt.Errorf("%s is the network address of %s", a, pfx.Masked())
		}
		if a == lastAddr(pfx) {
			return netip.Prefix{}, fmt.Errorf("%s is the broadcast address of %s", a, pfx.Masked())
		}
	}
	return pfx, nil
}

// lastAddr returns the highest address in pfx (the IPv4 broadcast address).
func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Masked().Addr().As4()
	host := 32 - pfx.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}

func parseGateway(s string, v4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New("not an IP address")
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("zones are not allowed (the gateway is on this interface)")
	}
	if v4 && !a.Is4() {
		return netip.Addr{}, errors.New("not an IPv4 address")
	}
	if !v4 && !a.Is6() || !v4 && a.Is4In6() {
		return netip.Addr{}, errors.New("not an IPv6 address")
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return netip.Addr{}, errors.New("not a unicast address")
	}
	return a, nil
}

// onLink checks that gw is reachable directly: inside one of the
// interface's prefixes of the same family, or IPv6 link-local.
func onLink(gw netip.Addr, addrs []netip.Prefix) error {
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		return nil
	}
	for _, p := range addrs {
		if p.Addr() == gw {
			return errors.New("is the interface's own address")
		}
	}
	for _, p := range addrs {
		if p.Contains(gw) {
			return nil
		}
	}
	return errors.New("not on-link (not inside any of the interface's address prefixes)")
}

func compileRoute(r Route, addrs []netip.Prefix) (routePlan, error) {
	dst, err := netip.ParsePrefix(r.To)
	if err != nil {
		return routePlan{}, errors.New("not a CIDR network (e.g. 10.20.0.0/16)")
	}
	if dst.Addr().Zone() != "" || dst.Addr().Is4In6() {
		return routePlan{}, errors.New("not a plain IPv4 or IPv6 network")
	}
	if dst != dst.Masked() {
		return routePlan{}, fmt.Errorf("host bits set (did you mean %s?)", dst.Masked())
	}
	if r.Metric < 0 || r.Metric > 1<<31-1 {
		return routePlan{}, fmt.Errorf("metric %d out of range", r.Metric)
	}
	rp := routePlan{dst: dst, metric: r.Metric}
	if r.Via == "" {
		return rp, nil
	}
	gw, err := parseGateway(r.Via, dst.Addr().Is4())
	if err != nil {
		return routePlan{}, fmt.Errorf("via %q: %v", r.Via, err)
	}
	if err := onLink(gw, addrs); err != nil {
		return routePlan{}, fmt.Errorf("via %s: %v", gw, err)
	}
	rp.gw = gw
	return rp, nil
}

func checkIfname(name string) error {
	if name == "" {
		return nil
	}
	// IFNAMSIZ is 16 including the terminating NUL.
	if len(name) > 15 {
		return fmt.Errorf("name %q longer than 15 bytes", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("invalid name %q", name)
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == ':' || r > '~' {
			return fmt.Errorf("invalid character %q in name %q", r, name)
		}
	}
	return nil
}

func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty")
	}
	if len(d) > 253 {
		return errors.New("longer than 253 bytes")
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		for _, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_'
			if !ok {
				return fmt.Errorf("invalid character %q", r)
			}
		}
	}
	return nil
}
