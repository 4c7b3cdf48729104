// Package nattest builds a real NAT topology out of Linux network
// namespaces, for tests of the relay, the tunnel client and NAT traversal.
// Each call to New makes its own anonymous namespaces, so topologies of
// tests running in parallel (in any package) never meet, and the kernel
// frees them once the test has closed its handles, even if the test
// binary dies.
//
//	public segment 203.0.113.0/24: a bridge in a switch namespace
//	 |- supernode-a 203.0.113.10
//	 |- supernode-b 203.0.113.11
//	 |- client      203.0.113.20   (the user's device)
//	 |- direct      203.0.113.30   (a node with a public address)
//	 |- home1       203.0.113.2    NAT router; LAN 192.168.1.1/24
//	 |   `- node1   192.168.1.2
//	 `- cgnat       203.0.113.3    carrier-grade NAT; ISP side 100.64.0.1/24
//	     `- home2   100.64.0.2     NAT router; LAN 192.168.2.1/24
//	         `- node2 192.168.2.2
//
// The public segment is IPv6 too (2001:db8::/64: the hosts above have
// 2001:db8::<the last byte of their IPv4 address>), and holds a home
// router with IPv6 only, home6 (2001:db8::6), which routes its LAN
// 2001:db8:6::/64 without NAT, as IPv6 homes are: its node6
// (2001:db8:6::2, no IPv4) has a global address and, as its firewall lets
// in new connections to TCP 8090 only (a port its owner opened), is
// reachable there.
//
// The three routers masquerade what leaves their "wan" interface
// (nftables) and, like a home router without port forwards, forward
// nothing inbound that is not a reply. Linux's NAT keeps a flow's source
// port when it can and maps one socket to the same public address and
// port whatever the destination (endpoint-independent mapping), while
// letting in only replies from the exact remote address and port. Public
// hosts have no default route: private addresses are unreachable from the
// public segment, as on the Internet.
package nattest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// Require skips the test unless it can build a Topology: root and the nft
// and nsenter programs. Under CI=true it fails instead, so that CI cannot
// pass by skipping. New calls it.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "nattest: needs root to create network namespaces")
	}
	for _, p := range []struct{ cmd, pkg string }{{"nft", "nftables"}, {"nsenter", "util-linux"}} {
		if _, err := exec.LookPath(p.cmd); err != nil {
			testenv.SkipOrFail(t, "nattest: %s missing (apt-get install %s, or scripts/deps.sh)", p.cmd, p.pkg)
		}
	}
}

// Topology is the set of namespaces described in the package comment.
// Routers are hosts too: their Addr is their public (WAN) address.
type Topology struct {
	SupernodeA, SupernodeB *Host
	Client                 *Host // the user's device on the public segment
	Direct                 *Host // a node with a public address
	Home1, Node1           *Host // NAT router and a node on its LAN
	CGNAT, Home2, Node2    *Host // carrier-grade NAT, the home router behind it, and its LAN node
	Home6, Node6           *Host // an IPv6-only router without NAT and its node, on 2001:db8:6::/64

	t       testing.TB
	public  *Host // the switch; not a host anyone talks to
	hosts   []*Host
	ctx     context.Context // ends when the topology is torn down
	cancel  context.CancelFunc
	mu      sync.Mutex
	closers []func() // listeners, HTTP transports

	nsMu   sync.RWMutex // held to use the namespace handles; closed guards them
	closed bool
}

var (
	publicNet = netip.MustParsePrefix("203.0.113.0/24")
	public6   = netip.MustParsePrefix("2001:db8::/64")
	home6LAN  = netip.MustParsePrefix("2001:db8:6::/64")
	home1LAN  = netip.MustParsePrefix("192.168.1.0/24")
	ispNet    = netip.MustParsePrefix("100.64.0.0/24")
	home2LAN  = netip.MustParsePrefix("192.168.2.0/24")
)

// host returns the address with the given last octet in the /24 p.
func host(p netip.Prefix, last byte) netip.Addr {
	a := p.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

// routerRules masquerades what leaves "wan" and forwards only lan->wan
// flows and their replies.
const routerRules = `table ip nattest {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan" oifname "wan" accept
	}
}
`

// New builds the topology and tears it down in t.Cleanup (after the
// cleanups the test registers later): processes still running in its
// namespaces are killed, listeners made by Listen and ListenPacket and
// idle HTTPClient connections are closed, and the namespaces are released.
// Connections from Dial are the caller's to close. Setup takes some tens
// of milliseconds.
func New(t testing.TB) *Topology {
	t.Helper()
	Require(t)
	tp := &Topology{t: t}
	tp.ctx, tp.cancel = context.WithCancel(context.Background())
	t.Cleanup(tp.close)

	names := []string{"public", "supernode-a", "supernode-b", "client", "direct", "home1", "node1", "cgnat", "home2", "node2", "home6", "node6"}
	nss, err := newNamespaces(len(names))
	if err != nil {
		testenv.SkipOrFail(t, "nattest: %v", err)
	}
	pid := os.Getpid()
	for i, name := range names {
		// Released by tp.close, even if setup fails below.
		tp.hosts = append(tp.hosts, &Host{name: name, ns: nss[i], topo: tp, path: fmt.Sprintf("/proc/%d/fd/%d", pid, nss[i])})
	}
	for _, h := range tp.hosts {
		if h.nl, err = netlink.NewHandleAt(h.ns, unix.NETLINK_ROUTE); err != nil {
			t.Fatalf("nattest: netlink handle in %s: %v", h.name, err)
		}
		tp.must(h.setUp("lo"))
	}
	tp.public = tp.hosts[0]
	tp.SupernodeA, tp.SupernodeB, tp.Client, tp.Direct = tp.hosts[1], tp.hosts[2], tp.hosts[3], tp.hosts[4]
	tp.Home1, tp.Node1, tp.CGNAT, tp.Home2, tp.Node2 = tp.hosts[5], tp.hosts[6], tp.hosts[7], tp.hosts[8], tp.hosts[9]
	tp.Home6, tp.Node6 = tp.hosts[10], tp.hosts[11]
	tp.hosts = tp.hosts[1:]

	// The public segment.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	tp.must(wrap("public: add bridge", tp.public.nl.LinkAdd(br)))
	tp.must(tp.public.setUp("br0"))
	for _, c := range []struct {
		h     *Host
		port  string
		iface string
		last  byte
	}{
		{tp.SupernodeA, "sn-a", "eth0", 10},
		{tp.SupernodeB, "sn-b", "eth0", 11},
		{tp.Client, "client", "eth0", 20},
		{tp.Direct, "direct", "eth0", 30},
		{tp.Home1, "home1", "wan", 2},
		{tp.CGNAT, "cgnat", "wan", 3},
	} {
		tp.must(tp.public.veth(c.port, c.h, c.iface))
		tp.must(tp.public.enslave(c.port, br))
		tp.must(tp.public.setUp(c.port))
		tp.must(c.h.configure(c.iface, netip.PrefixFrom(host(publicNet, c.last), 24), netip.Addr{}))
		tp.must(c.h.configure(c.iface, netip.PrefixFrom(host6(public6, c.last), 64), netip.Addr{}))
		c.h.nic, c.h.uplink = link{c.h, c.iface}, link{tp.public, c.port}
	}
	tp.must(tp.public.veth("home6", tp.Home6, "wan"))
	tp.must(tp.public.enslave("home6", br))
	tp.must(tp.public.setUp("home6"))
	tp.must(tp.Home6.configure("wan", netip.PrefixFrom(host6(public6, 6), 64), netip.Addr{}))
	tp.Home6.nic, tp.Home6.uplink = link{tp.Home6, "wan"}, link{tp.public, "home6"}
	tp.lan6(tp.Home6, home6LAN, tp.Node6, "eth0")

	// Behind NAT.
	tp.lan(tp.Home1, home1LAN, tp.Node1, "eth0")
	tp.lan(tp.CGNAT, ispNet, tp.Home2, "wan")
	tp.lan(tp.Home2, home2LAN, tp.Node2, "eth0")
	for _, h := range tp.hosts {
		h.public = h.addrs[0]
	}
	// The public hosts reach home6's LAN through it.
	for _, h := range []*Host{tp.SupernodeA, tp.SupernodeB, tp.Client, tp.Direct, tp.Home1, tp.CGNAT} {
		tp.must(h.route(home6LAN, host6(public6, 6)))
	}
	tp.Node1.public = tp.Home1.Addr()
	tp.Home2.public, tp.Node2.public = tp.CGNAT.Addr(), tp.CGNAT.Addr()

	// Routers: forwarding and NAT, the three at once (nft is the slow part).
	routers := []*Host{tp.Home1, tp.CGNAT, tp.Home2, tp.Home6}
	errs := make(chan error, len(routers))
	for _, r := range routers {
		go func() {
			if r == tp.Home6 {
				errs <- r.makeRouter(ipv6Forwarding, router6Rules)
				return
			}
			errs <- r.makeRouter(ipv4Forwarding, routerRules)
		}()
	}
	for range routers {
		if err := <-errs; err != nil {
			testenv.SkipOrFail(t, "nattest: %v", err) // most likely a kernel without nf_tables or NAT
		}
	}
	return tp
}

// AddPublic adds a host to the public segment at 203.0.113.<last> (and
// 2001:db8::<last>), reaching home6's LAN through it as the others do:
// a scenario that needs more public machines than the fixed ones (a mesh
// of supernodes). last must not be taken.
func (tp *Topology) AddPublic(name string, last byte) *Host {
	tp.t.Helper()
	return tp.addPublic(name, last, "eth0")
}

// addPublic is AddPublic with the name of the host's uplink interface.
func (tp *Topology) addPublic(name string, last byte, iface string) *Host {
	tp.t.Helper()
	h := tp.newHost(name)
	port := fmt.Sprintf("pub%d", last)
	tp.must(tp.public.veth(port, h, iface))
	br, err := tp.public.nl.LinkByName("br0")
	tp.must(wrap("public: bridge", err))
	tp.must(tp.public.enslave(port, br))
	tp.must(tp.public.setUp(port))
	tp.must(h.configure(iface, netip.PrefixFrom(host(publicNet, last), 24), netip.Addr{}))
	tp.must(h.configure(iface, netip.PrefixFrom(host6(public6, last), 64), netip.Addr{}))
	h.nic, h.uplink = link{h, iface}, link{tp.public, port}
	tp.must(h.route(home6LAN, host6(public6, 6)))
	h.public = h.addrs[0]
	return h
}

// AddHome adds a home behind NAT: a router on the public segment at
// 203.0.113.<last> that masquerades its LAN 192.168.<last>.0/24, and a
// node on that LAN (192.168.<last>.2) that reaches the internet only
// through it, as home1 and node1.
func (tp *Topology) AddHome(name string, last byte) (router, node *Host) {
	tp.t.Helper()
	router = tp.addPublic(name+"-router", last, "wan")
	node = tp.newHost(name)
	lanNet := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, last, 0}), 24)
	tp.lan(router, lanNet, node, "eth0")
	node.public = router.Addr()
	if err := router.makeRouter(ipv4Forwarding, routerRules); err != nil {
		tp.t.Fatalf("nattest: %v", err)
	}
	return router, node
}

// newHost makes a host in a namespace of its own, torn down with the
// topology.
func (tp *Topology) newHost(name string) *Host {
	tp.t.Helper()
	nss, err := newNamespaces(1)
	if err != nil {
		tp.t.Fatalf("nattest: %v", err)
	}
	h := &Host{name: name, ns: nss[0], topo: tp, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), nss[0])}
	tp.nsMu.Lock()
	tp.hosts = append(tp.hosts, h)
	tp.nsMu.Unlock()
	if h.nl, err = netlink.NewHandleAt(h.ns, unix.NETLINK_ROUTE); err != nil {
		tp.t.Fatalf("nattest: netlink handle in %s: %v", name, err)
	}
	tp.must(h.setUp("lo"))
	return h
}

// lan connects router's "lan" interface (first address of p) to h's iface
// (second address of p, default route via the router).
func (tp *Topology) lan(router *Host, p netip.Prefix, h *Host, iface string) {
	tp.t.Helper()
	tp.must(router.veth("lan", h, iface))
	tp.must(router.configure("lan", netip.PrefixFrom(host(p, 1), 24), netip.Addr{}))
	tp.must(h.configure(iface, netip.PrefixFrom(host(p, 2), 24), host(p, 1)))
	h.nic, h.uplink = link{h, iface}, link{router, "lan"}
}

// lan6 connects router's "lan" interface (::1 of the IPv6 /64 p) to h's
// iface (::2, default route via the router): IPv6 only.
func (tp *Topology) lan6(router *Host, p netip.Prefix, h *Host, iface string) {
	tp.t.Helper()
	tp.must(router.veth("lan", h, iface))
	tp.must(router.configure("lan", netip.PrefixFrom(host6(p, 1), 64), netip.Addr{}))
	tp.must(h.configure(iface, netip.PrefixFrom(host6(p, 2), 64), host6(p, 1)))
	h.nic, h.uplink = link{h, iface}, link{router, "lan"}
}

// host6 returns the address ::last in the IPv6 /64 p.
func host6(p netip.Prefix, last byte) netip.Addr {
	a := p.Addr().As16()
	a[15] = last
	return netip.AddrFrom16(a)
}

func (tp *Topology) must(err error) {
	tp.t.Helper()
	if err != nil {
		tp.t.Fatalf("nattest: %v", err)
	}
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Hosts returns every host of the topology, routers included: the
// public ones, then home1, node1, cgnat, home2, node2, home6, node6.
func (tp *Topology) Hosts() []*Host { return tp.hosts }

func (tp *Topology) String() string {
	var b strings.Builder
	for i, h := range tp.hosts {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%s", h.name, h.addrs[0])
	}
	return b.String()
}

// addCloser registers f to run when the topology is torn down.
func (tp *Topology) addCloser(f func()) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.closers = append(tp.closers, f)
}

func (tp *Topology) close() {
	tp.cancel() // kills processes started by Command
	tp.mu.Lock()
	closers := tp.closers
	tp.closers = nil
	tp.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	all := tp.hosts
	if tp.public != nil {
		all = append([]*Host{tp.public}, all...)
	}
	if err := killAll(all, 10*time.Second); err != nil {
		tp.t.Errorf("nattest: %v", err)
	}
	tp.nsMu.Lock()
	defer tp.nsMu.Unlock()
	tp.closed = true
	for _, h := range all {
		if h.nl != nil {
			h.nl.Close()
		}
	}
	for _, h := range all {
		h.ns.Close() // the namespace goes with its last reference
	}
}

// NewNamespace creates one network namespace, held by the returned handle
// (it goes with its last reference), without moving the caller into it.
// Tests that need a bare namespace rather than the whole topology use it.
func NewNamespace() (netns.NsHandle, error) {
	nss, err := newNamespaces(1)
	if err != nil {
		return netns.None(), err
	}
	return nss[0], nil
}

// newNamespaces creates n network namespaces. It switches a locked thread
// and switches back; if that fails, the thread stays locked and dies with
// its goroutine rather than run other code in the wrong namespace.
func newNamespaces(n int) ([]netns.NsHandle, error) {
	type result struct {
		nss []netns.NsHandle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			res <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		var nss []netns.NsHandle
		fail := func(err error) {
			for _, ns := range nss {
				ns.Close()
			}
			res <- result{err: err}
		}
		for range n {
			ns, err := netns.New()
			if err != nil {
				if err := netns.Set(orig); err != nil {
					fail(fmt.Errorf("switch back to the original netns: %w", err))
					return
				}
				runtime.UnlockOSThread()
				fail(fmt.Errorf("create netns: %w", err))
				return
			}
			nss = append(nss, ns)
		}
		if err := netns.Set(orig); err != nil {
			fail(fmt.Errorf("switch back to the original netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		res <- result{nss: nss}
	}()
	r := <-res
	return r.nss, r.err
}

// netnsInode is the inode number that identifies ns while it lives, as
// in /proc/PID/ns/net ("net:[INODE]").
func netnsInode(ns netns.NsHandle) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// killAll kills every process (other than this one) in the namespaces of
// hosts, then waits until none is left: processes the test started and
// did not stop, and anything they started in turn.
func killAll(hosts []*Host, timeout time.Duration) error {
	want := map[string]string{}
	for _, h := range hosts {
		ino, err := netnsInode(h.ns)
		if err != nil {
			return fmt.Errorf("stat netns of %s: %w", h.name, err)
		}
		want[fmt.Sprintf("net:[%d]", ino)] = h.name
	}
	deadline := time.Now().Add(timeout)
	for {
		left, err := processesIn(want)
		if err != nil || len(left) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still running in the topology after %v: %s", timeout, strings.Join(left, ", "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processesIn sends SIGKILL to each process whose network namespace is a
// key of want, and describes them.
func processesIn(want map[string]string) ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var found []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		// Through a pidfd, so that a reused pid is never signalled.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && want[ns] != "" {
			found = append(found, fmt.Sprintf("pid %d in %s", pid, want[ns]))
			unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	}
	return found, nil
}

// ipNet converts p for netlink.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
