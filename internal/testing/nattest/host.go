package nattest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/internal/testing/proc"
)

// ErrClosed is returned by a Host's methods once its topology is torn down.
var ErrClosed = errors.New("nattest: topology torn down")

// Host is one network namespace of a Topology: a machine with its own
// interfaces, addresses and routes.
//
// Sockets made by Dial, Listen, ListenPacket and HTTPClient belong to the
// host's namespace for their whole life, whichever goroutine uses them.
// Goroutines themselves do not: code that opens its own sockets (net.Dial,
// a libp2p host) opens them in the test's namespace, not the host's, unless
// it is handed a Host's Dial or listeners, or runs as a process through
// Command.
type Host struct {
	name   string
	ns     netns.NsHandle
	path   string // /proc/PID/fd/N of ns
	nl     *netlink.Handle
	addrs  []netip.Addr
	public netip.Addr
	nic    link // the host's uplink interface
	uplink link // its far end
	topo   *Topology
}

// link names an interface in a host's namespace.
type link struct {
	h    *Host
	name string
}

// Name is the host's name in the topology, e.g. "node1".
func (h *Host) Name() string { return h.name }

func (h *Host) String() string { return h.name }

// Addr is the host's address on its uplink: for a router, its WAN address.
func (h *Host) Addr() netip.Addr { return h.addrs[0] }

// Addr6 is the host's IPv6 address (the zero Addr if it has none).
func (h *Host) Addr6() netip.Addr {
	for _, a := range h.addrs {
		if a.Is6() {
			return a
		}
	}
	return netip.Addr{}
}

// Addrs returns all of the host's addresses, Addr first (a router's LAN
// address second).
func (h *Host) Addrs() []netip.Addr { return slices.Clone(h.addrs) }

// PublicAddr is the source address that hosts on the public segment see
// in h's connections: Addr for public hosts, home1's for node1, the CGNAT
// router's for home2 and node2.
func (h *Host) PublicAddr() netip.Addr { return h.public }

// NetnsPath is a file naming the host's namespace while the test runs,
// for tools: `nsenter --net=PATH tcpdump -ni any`.
func (h *Host) NetnsPath() string { return h.path }

// Command returns a command that runs name in the host's namespace (through
// nsenter, which execs it: cmd.Process is the program; its filesystem,
// users and processes are the test's). Use it like exec.CommandContext:
// set Stdout, Env and so on, then Start or Run. It is killed when ctx ends
// or the topology is torn down, whichever comes first; teardown also kills
// anything else still running in the topology's namespaces. If the test
// binary dies without tearing down, the kernel kills the program
// (SysProcAttr.Pdeathsig: keep it if you replace SysProcAttr) but not
// what the program started.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(h.topo.ctx, cancel)
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.path, "--", name}, args...)...)
	cmd.SysProcAttr = proc.SysProcAttr()
	return cmd
}

// Dial connects from the host, like net.Dialer.DialContext. The address
// must be an IP literal: resolving a name would happen outside the
// namespace. Its signature fits http.Transport.DialContext and other
// injectable dialers.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, fmt.Errorf("nattest: %s: dial %s %s: %w", h.name, network, addr, err)
	}
	var c net.Conn
	var err error
	if nsErr := h.do(func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	}); nsErr != nil {
		return nil, nsErr
	}
	if err != nil {
		return nil, fmt.Errorf("nattest: %s: %w", h.name, err)
	}
	return c, nil
}

// Listen listens on the host, like net.Listen ("tcp", ":0" or
// h.Addr().String()+":0"). The listener is closed at teardown.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, fmt.Errorf("nattest: %s: listen %s %s: %w", h.name, network, addr, err)
	}
	var ln net.Listener
	var err error
	if nsErr := h.do(func() {
		var lc net.ListenConfig
		ln, err = lc.Listen(context.Background(), network, addr)
	}); nsErr != nil {
		return nil, nsErr
	}
	if err != nil {
		return nil, fmt.Errorf("nattest: %s: %w", h.name, err)
	}
	h.topo.addCloser(func() { ln.Close() })
	return ln, nil
}

// ListenPacket opens a packet socket on the host, like net.ListenPacket
// ("udp", ":0"). It is closed at teardown.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, fmt.Errorf("nattest: %s: listen %s %s: %w", h.name, network, addr, err)
	}
	var pc net.PacketConn
	var err error
	if nsErr := h.do(func() {
		var lc net.ListenConfig
		pc, err = lc.ListenPacket(context.Background(), network, addr)
	}); nsErr != nil {
		return nil, nsErr
	}
	if err != nil {
		return nil, fmt.Errorf("nattest: %s: %w", h.name, err)
	}
	h.topo.addCloser(func() { pc.Close() })
	return pc, nil
}

// HTTPClient returns a client whose connections are dialed from the host,
// with no proxy. URLs must name IP addresses (see Dial); for TLS, set the
// server name in the transport's TLSClientConfig. Idle connections are
// closed at teardown.
func (h *Host) HTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext:           h.Dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	h.topo.addCloser(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// SetLink pulls the host's cable (up=false) or plugs it back in, and
// returns once both ends of the link agree. It acts on the far end (the
// switch port of a public host or router, the upstream router's LAN port
// for a host behind NAT), so the host's own interface only loses carrier:
// its addresses and routes and the routers' NAT state survive, as when a
// line drops and comes back. Traffic in the meantime is lost and TCP
// retransmits. Home1.SetLink(false) cuts node1 off as well.
func (h *Host) SetLink(up bool) error {
	tp := h.topo
	tp.nsMu.RLock()
	defer tp.nsMu.RUnlock()
	if tp.closed {
		return ErrClosed
	}
	far := h.uplink
	l, err := far.h.nl.LinkByName(far.name)
	if err == nil {
		if up {
			err = far.h.nl.LinkSetUp(l)
		} else {
			err = far.h.nl.LinkSetDown(l)
		}
	}
	if err == nil {
		// The kernel applies carrier changes asynchronously.
		err = waitOper(up, far, h.nic)
	}
	if err == nil && up {
		err = tp.forgetUnresolved()
	}
	if err != nil {
		return fmt.Errorf("nattest: %s: set uplink (%s in %s) up=%v: %w", h.name, far.name, far.h.name, up, err)
	}
	return nil
}

// waitOper waits until the links' operational state is up, or not up.
func waitOper(up bool, links ...link) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		done := true
		for _, k := range links {
			l, err := k.h.nl.LinkByName(k.name)
			if err != nil {
				return err
			}
			if (l.Attrs().OperState == netlink.OperUp) != up {
				done = false
			}
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link state did not change within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// forgetUnresolved deletes the neighbor (ARP) entries that failed or are
// still resolving, which packets sent during an outage leave behind: their
// last probe may fail after the link is back (failing the connections
// waiting on it), or the next one come a second later. New packets start
// a fresh resolution, which succeeds at once.
func (tp *Topology) forgetUnresolved() error {
	for _, h := range tp.hosts {
		ns, err := h.nl.NeighList(0, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("%s: list neighbors: %w", h.name, err)
		}
		for _, n := range ns {
			if n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
				continue
			}
			if err := h.nl.NeighDel(&n); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("%s: delete neighbor %s: %w", h.name, n.IP, err)
			}
		}
	}
	return nil
}

// checkLiteral refuses host names in IP networks' addresses.
func checkLiteral(network, addr string) error {
	var host string
	switch {
	case strings.HasPrefix(network, "tcp"), strings.HasPrefix(network, "udp"):
		var err error
		if host, _, err = net.SplitHostPort(addr); err != nil {
			return err
		}
	case strings.HasPrefix(network, "ip"):
		host = addr
	default:
		return nil
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%q is not an IP address (a name would be resolved outside the namespace)", host)
	}
	return nil
}

// do runs f on a thread switched into the host's namespace, so that the
// sockets f creates are created there. If switching back fails, the thread
// stays locked and dies with its goroutine rather than run other code in
// the wrong namespace.
func (h *Host) do(f func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- fmt.Errorf("nattest: %s: get current netns: %w", h.name, err)
			return
		}
		defer orig.Close()
		if err := h.enter(); err != nil {
			runtime.UnlockOSThread() // a failed setns leaves the thread as it was
			done <- err
			return
		}
		f()
		if err := netns.Set(orig); err != nil {
			done <- fmt.Errorf("nattest: %s: switch back to the original netns: %w", h.name, err)
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	return <-done
}

// enter switches the calling thread into the host's namespace, unless
// the topology is torn down (its file descriptor may be reused by then).
func (h *Host) enter() error {
	h.topo.nsMu.RLock()
	defer h.topo.nsMu.RUnlock()
	if h.topo.closed {
		return ErrClosed
	}
	if err := netns.Set(h.ns); err != nil {
		return fmt.Errorf("nattest: %s: enter netns: %w", h.name, err)
	}
	return nil
}

// Setup, used by New.

// veth creates a veth pair: name in h, peer in other.
func (h *Host) veth(name string, other *Host, peer string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(other.ns)}
	return wrap(fmt.Sprintf("%s: add veth %s to %s's %s", h.name, name, other.name, peer), h.nl.LinkAdd(v))
}

func (h *Host) setUp(name string) error {
	l, err := h.nl.LinkByName(name)
	if err == nil {
		err = h.nl.LinkSetUp(l)
	}
	return wrap(fmt.Sprintf("%s: set %s up", h.name, name), err)
}

func (h *Host) enslave(name string, master netlink.Link) error {
	l, err := h.nl.LinkByName(name)
	if err == nil {
		err = h.nl.LinkSetMaster(l, master)
	}
	return wrap(fmt.Sprintf("%s: add %s to %s", h.name, name, master.Attrs().Name), err)
}

// configure gives iface the address p, brings it up and, with a valid gw,
// adds a default route through it.
func (h *Host) configure(iface string, p netip.Prefix, gw netip.Addr) error {
	l, err := h.nl.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", h.name, iface, err)
	}
	// No duplicate address detection: an IPv6 address is usable at once.
	if err := h.nl.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("%s: add %s to %s: %w", h.name, p, iface, err)
	}
	if err := h.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: set %s up: %w", h.name, iface, err)
	}
	if gw.IsValid() {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}
		if gw.Is6() {
			r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := h.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("%s: add default route via %s: %w", h.name, gw, err)
		}
	}
	h.addrs = append(h.addrs, p.Addr())
	return nil
}

// route adds a route to dst through gw (on the link to gw's subnet).
func (h *Host) route(dst netip.Prefix, gw netip.Addr) error {
	if err := h.nl.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("%s: add route to %s via %s: %w", h.name, dst, gw, err)
	}
	return nil
}

// router6Rules: home6 routes its LAN without NAT and lets in, besides
// replies, only new connections to TCP 8090 (the node's libp2p port, the
// one its owner opened) and ICMPv6 (which IPv6 needs).
const router6Rules = `table ip6 nattest6 {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		meta l4proto ipv6-icmp accept
		iifname "lan" oifname "wan" accept
		iifname "wan" oifname "lan" tcp dport 8090 accept
	}
}
`

// Nft loads an nftables script in h's namespace (a firewall rule, a
// table deleted again): the test's own rules beside the routers' NAT.
func (h *Host) Nft(script string) error {
	cmd := h.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft: %v: %s", h.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// FlushConntrack forgets every flow h's connection tracking knows (a home
// router restarting): replies to the flows its NAT made are dropped from
// then on.
func (h *Host) FlushConntrack() error {
	var err error
	if nsErr := h.do(func() { err = netlink.ConntrackTableFlush(netlink.ConntrackTable) }); nsErr != nil {
		return nsErr
	}
	if err != nil {
		return fmt.Errorf("%s: flush conntrack: %w", h.name, err)
	}
	return nil
}

// makeRouter turns on forwarding (the sysctl file forwarding, IPv4's or
// IPv6's) and loads the nftables rules.
func (h *Host) makeRouter(forwarding, rules string) error {
	var err error
	if nsErr := h.do(func() { err = os.WriteFile(forwarding, []byte("1\n"), 0o644) }); nsErr != nil {
		return nsErr
	}
	if err != nil {
		return fmt.Errorf("%s: enable forwarding: %w", h.name, err)
	}
	if err := h.Nft(rules); err != nil {
		return fmt.Errorf("load router rules: %w", err)
	}
	return nil
}

// Forwarding sysctls of makeRouter.
const (
	ipv4Forwarding = "/proc/sys/net/ipv4/ip_forward"
	ipv6Forwarding = "/proc/sys/net/ipv6/conf/all/forwarding"
)
