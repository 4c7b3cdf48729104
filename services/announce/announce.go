// Package announce makes the device findable on its local network with
// multicast DNS (RFC 6762) and DNS service discovery (RFC 6763): its host
// name answers as <host>.local (A and AAAA), and its web page is
// announced as an _http._tcp service, so that `http://pc2.local:4200`
// opens the setup wizard of a box nobody has looked up in the router, and
// a browser or file manager that browses for web services lists it.
//
// Two kept libraries do the work, because neither does both: the host
// name answers come from github.com/pion/mdns/v2 (the responder WebRTC
// stacks use for .local names), the service from
// github.com/libp2p/zeroconf/v2 (libp2p's DNS-SD responder, whose own
// server answers only questions about the service, not the host name).
// Both bind their sockets to the interfaces and take the addresses that
// exist when they start, so Run restarts them whenever the set of
// interfaces or addresses changes (a DHCP lease, a cable, Wi-Fi joining),
// which it checks every Config.Check.
//
// Who may call it: anyone on the local network, as for any mDNS
// responder. What they learn is what the device announces anyway (its
// name, addresses and port); the answers are fixed records, not derived
// from the question, and both libraries bound the packets they parse.
package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/zeroconf/v2"
	"github.com/pion/logging"
	"github.com/pion/mdns/v2"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ServiceHTTP is the DNS-SD type of a web page.
const ServiceHTTP = "_http._tcp"

// Config says what to announce.
type Config struct {
	// HostName is the device's name without ".local" (e.g. "pc2").
	HostName string
	// Instance is the service's human-readable name (e.g. "PC2 pc2").
	Instance string
	// Service is the DNS-SD type (default ServiceHTTP).
	Service string
	// Port is the service's TCP port.
	Port int
	// Text is the service's TXT record, e.g. "path=/".
	Text []string
	// Check is how often the interfaces are compared (0: 5 s).
	Check time.Duration
	// Interfaces lists the candidate interfaces (nil: net.Interfaces).
	Interfaces func() ([]net.Interface, error)
	Logger     *slog.Logger
}

// Run announces until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := checkLabel(cfg.HostName); err != nil {
		return err
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return fmt.Errorf("announce: port %d", cfg.Port)
	}
	if cfg.Service == "" {
		cfg.Service = ServiceHTTP
	}
	if cfg.Instance == "" {
		cfg.Instance = cfg.HostName
	}
	if cfg.Check <= 0 {
		cfg.Check = 5 * time.Second
	}
	if cfg.Interfaces == nil {
		cfg.Interfaces = net.Interfaces
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cur *responders
	var last string
	var retry time.Time // after a failed start: when to try again
	defer func() { cur.close() }()
	t := time.NewTicker(cfg.Check)
	defer t.Stop()
	for {
		ifaces, addrs, key := current(cfg.Interfaces)
		failed := cur == nil && len(ifaces) > 0 && !retry.IsZero()
		if key != last || failed && time.Now().After(retry) {
			cur.close()
			cur, last, retry = nil, key, time.Time{}
			if len(ifaces) > 0 {
				var err error
				if cur, err = start(cfg, ifaces, addrs); err != nil {
					// Again at the next change, or in a minute (the
					// port may be taken for a while).
					log.Warn("mDNS: not announcing", "err", err)
					retry = time.Now().Add(time.Minute)
				} else {
					log.Info("mDNS: announcing", "host", cfg.HostName+".local", "service", cfg.Service, "port", cfg.Port, "addresses", addrs)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// checkLabel accepts a DNS label: the host name becomes <label>.local.
func checkLabel(h string) error {
	if h == "" || len(h) > 63 || strings.HasPrefix(h, "-") || strings.HasSuffix(h, "-") {
		return fmt.Errorf("announce: host name %q is not a DNS label", h)
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("announce: host name %q is not a DNS label", h)
		}
	}
	return nil
}

// current returns the interfaces to announce on (up, multicast, not
// loopback, with an address), their addresses, and a key that changes
// when either does.
func current(list func() ([]net.Interface, error)) ([]net.Interface, [][]string, string) {
	all, err := list()
	if err != nil {
		return nil, nil, ""
	}
	var ifaces []net.Interface
	var addrs [][]string
	var key []string
	for _, ifc := range all {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagMulticast == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		var mine []string
		for _, a := range as {
			p, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			mine = append(mine, p.Addr().String())
		}
		if len(mine) == 0 {
			continue
		}
		slices.Sort(mine)
		ifaces = append(ifaces, ifc)
		addrs = append(addrs, mine)
		key = append(key, fmt.Sprintf("%d/%s=%s", ifc.Index, ifc.Name, strings.Join(mine, ",")))
	}
	return ifaces, addrs, strings.Join(key, ";")
}

// responders are the two libraries' servers for one set of interfaces.
type responders struct {
	names *mdns.Conn
	sd    []*zeroconf.Server
}

// start starts the responders on ifaces, whose addresses are addrs (one
// list per interface).
func start(cfg Config, ifaces []net.Interface, addrs [][]string) (*responders, error) {
	host := cfg.HostName + ".local"
	// The host name: pion's responder on the mDNS port of both families.
	// Shared with the service's responder (and any other on the host).
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	var l4, l6 *net.UDPConn
	c4, err4 := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:5353")
	if err4 == nil {
		l4 = c4.(*net.UDPConn)
	}
	c6, err6 := lc.ListenPacket(context.Background(), "udp6", "[::]:5353")
	if err6 == nil {
		l6 = c6.(*net.UDPConn)
	}
	if err4 != nil && err6 != nil {
		return nil, fmt.Errorf("announce: mDNS port: %w", errors.Join(err4, err6))
	}
	var p4 *ipv4.PacketConn
	var p6 *ipv6.PacketConn
	if err4 == nil {
		p4 = ipv4.NewPacketConn(l4)
	}
	if err6 == nil {
		p6 = ipv6.NewPacketConn(l6)
	}
	quiet := logging.NewDefaultLoggerFactory()
	quiet.DefaultLogLevel = logging.LogLevelDisabled
	names, err := mdns.Server(p4, p6, &mdns.Config{LocalNames: []string{host}, Interfaces: ifaces, LoggerFactory: quiet})
	if err != nil {
		if l4 != nil {
			l4.Close()
		}
		if l6 != nil {
			l6.Close()
		}
		return nil, fmt.Errorf("announce: %s: %w", host, err)
	}
	// The service, whose SRV record points at the host name: one server
	// per interface, because zeroconf sends the host's addresses with
	// the service, and each link must get only its own (a client on one
	// link would cache another link's address for the name).
	r := &responders{names: names}
	for i, ifc := range ifaces {
		sd, err := zeroconf.RegisterProxy(cfg.Instance, cfg.Service, "local.", cfg.Port, cfg.HostName, addrs[i], cfg.Text, []net.Interface{ifc})
		if err != nil {
			r.close()
			return nil, fmt.Errorf("announce: %s service on %s: %w", cfg.Service, ifc.Name, err)
		}
		r.sd = append(r.sd, sd)
	}
	return r, nil
}

func (r *responders) close() {
	if r == nil {
		return
	}
	for _, sd := range r.sd {
		sd.Shutdown()
	}
	r.names.Close()
}
