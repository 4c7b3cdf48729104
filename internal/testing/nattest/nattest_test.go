package nattest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSetupTime(t *testing.T) {
	Require(t)
	start := time.Now()
	tp := New(t)
	t.Logf("setup took %v: %v", time.Since(start), tp)
}

// Each host reaches a public host, which sees the address of the
// outermost NAT in front of it.
func TestTCPThroughNAT(t *testing.T) {
	t.Parallel()
	tp := New(t)
	for _, tc := range []struct {
		from, to *Host
		want     netip.Addr
	}{
		{tp.Node1, tp.Client, tp.Home1.Addr()},
		{tp.Node1, tp.SupernodeA, tp.Home1.Addr()},
		{tp.Node2, tp.Client, tp.CGNAT.Addr()},
		{tp.Node2, tp.SupernodeB, tp.CGNAT.Addr()},
		{tp.Home2, tp.Client, tp.CGNAT.Addr()},
		{tp.Direct, tp.Client, tp.Direct.Addr()},
		{tp.Client, tp.Direct, tp.Client.Addr()},
		{tp.Node1, tp.Direct, tp.Home1.Addr()},
	} {
		got, err := ObservedAddr(timeout(t, 5*time.Second), tc.from, tc.to, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		if got.Addr() != tc.want {
			t.Errorf("%s -> %s: seen from %s, want %s", tc.from, tc.to, got.Addr(), tc.want)
		}
		if got.Addr() != tc.from.PublicAddr() {
			t.Errorf("%s.PublicAddr() = %s, but %s sees %s", tc.from, tc.from.PublicAddr(), tc.to, got.Addr())
		}
	}
}

// node1 reaches a public listener over UDP from home1's address and the
// reply comes back; one socket keeps its mapping whatever the destination
// (what STUN relies on).
func TestUDPThroughNAT(t *testing.T) {
	t.Parallel()
	tp := New(t)
	for _, tc := range []struct {
		from *Host
		want netip.Addr
	}{
		{tp.Node1, tp.Home1.Addr()},
		{tp.Node2, tp.CGNAT.Addr()},
		{tp.Direct, tp.Direct.Addr()},
	} {
		got, err := ObservedAddr(timeout(t, 5*time.Second), tc.from, tp.Client, "udp")
		if err != nil {
			t.Fatal(err)
		}
		if got.Addr() != tc.want {
			t.Errorf("%s -> client over UDP: seen from %s, want %s", tc.from, got.Addr(), tc.want)
		}
	}

	// By hand, with one socket on node2 talking to two public hosts.
	sock, err := tp.Node2.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	var seen []netip.AddrPort
	for _, srv := range []*Host{tp.SupernodeA, tp.SupernodeB} {
		pc, err := srv.ListenPacket("udp", srv.Addr().String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sock.WriteTo([]byte("hello"), pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, src, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("%s: ReadFrom: %q, %v", srv, buf[:n], err)
		}
		seen = append(seen, src.(*net.UDPAddr).AddrPort())
		if _, err := pc.WriteTo([]byte("reply"), src); err != nil {
			t.Fatal(err)
		}
		sock.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := sock.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "reply" {
			t.Fatalf("node2: reply from %s: %q, %v", srv, buf[:n], err)
		}
		if got := from.(*net.UDPAddr).AddrPort(); got.Addr().Unmap() != srv.Addr() {
			t.Errorf("node2: reply came from %s, want %s", got, srv.Addr())
		}
	}
	if seen[0] != seen[1] || seen[0].Addr() != tp.CGNAT.Addr() {
		t.Errorf("node2's socket seen as %s and %s, want one address of %s", seen[0], seen[1], tp.CGNAT.Addr())
	}
}

// Nothing reaches a NATed host from outside: the public segment has no
// route to private addresses and, given one, the router drops unsolicited
// traffic.
func TestPrivateUnreachable(t *testing.T) {
	t.Parallel()
	tp := New(t)
	target := netip.AddrPortFrom(tp.Node1.Addr(), 80)
	ln, err := tp.Node1.Listen("tcp", target.String())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	_, err = tp.Client.Dial(timeout(t, 5*time.Second), "tcp", target.String())
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("client -> node1's private address: got %v, want ENETUNREACH", err)
	}
	_, err = tp.Node1.Dial(timeout(t, 5*time.Second), "tcp", netip.AddrPortFrom(tp.Node2.Addr(), 80).String())
	if err == nil {
		t.Errorf("node1 -> node2's private address: connected, want an error")
	}
	// Even with a route to the LAN through home1's WAN address, the
	// router's firewall drops what is not a reply.
	l, err := tp.Client.nl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(home1LAN), Gw: tp.Home1.Addr().AsSlice()}
	if err := tp.Client.nl.RouteAdd(r); err != nil {
		t.Fatal(err)
	}
	_, err = tp.Client.Dial(timeout(t, 300*time.Millisecond), "tcp", target.String())
	if !isTimeout(err) {
		t.Errorf("client -> node1 routed through home1: got %v, want a timeout", err)
	}
	// The listener is there: node1 reaches it itself.
	c, err := tp.Node1.Dial(timeout(t, 5*time.Second), "tcp", target.String())
	if err != nil {
		t.Fatalf("node1 -> its own listener: %v", err)
	}
	c.Close()
}

func TestSetLink(t *testing.T) {
	t.Parallel()
	tp := New(t)
	ln, err := tp.Client.Listen("tcp", tp.Client.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	dial := func(h *Host, d time.Duration) error {
		c, err := h.Dial(timeout(t, d), "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, tc := range []struct {
		down *Host   // whose link goes down
		cut  []*Host // who loses the client
		keep []*Host // who keeps it
	}{
		{tp.Home1, []*Host{tp.Home1, tp.Node1}, []*Host{tp.Node2, tp.Direct}},
		{tp.Node1, []*Host{tp.Node1}, []*Host{tp.Home1}},
		{tp.CGNAT, []*Host{tp.Node2, tp.Home2}, []*Host{tp.Node1}},
		{tp.Home2, []*Host{tp.Node2}, []*Host{tp.Node1}},
		{tp.Client, []*Host{tp.Node1, tp.Direct}, nil},
	} {
		if err := tc.down.SetLink(false); err != nil {
			t.Fatal(err)
		}
		for _, h := range tc.cut {
			if err := dial(h, 100*time.Millisecond); err == nil { // short: the dial is to fail anyway
				t.Errorf("%s link down: %s still reaches the client", tc.down, h)
			}
		}
		for _, h := range tc.keep {
			if err := dial(h, 5*time.Second); err != nil {
				t.Errorf("%s link down: %s cannot reach the client: %v", tc.down, h, err)
			}
		}
		if err := tc.down.SetLink(true); err != nil {
			t.Fatal(err)
		}
		for _, h := range tc.cut {
			if err := dial(h, 5*time.Second); err != nil {
				t.Errorf("%s link up again: %s cannot reach the client: %v", tc.down, h, err)
			}
		}
	}
}

// A connection outlives a short outage of the home link.
func TestConnSurvivesOutage(t *testing.T) {
	t.Parallel()
	tp := New(t)
	ln, err := tp.SupernodeA.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := tp.Node1.Dial(timeout(t, 5*time.Second), "tcp", netip.AddrPortFrom(tp.SupernodeA.Addr(), uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()

	if err := tp.Home1.SetLink(false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("sent during the outage")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the outage itself, not a wait for a condition
	if err := tp.Home1.SetLink(true); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(s, buf, len("sent during the outage"))
	if err != nil || string(buf[:n]) != "sent during the outage" {
		t.Fatalf("after the outage: read %q, %v", buf[:n], err)
	}
}

func TestHTTPClient(t *testing.T) {
	t.Parallel()
	tp := New(t)
	ln, err := tp.Direct.Listen("tcp", tp.Direct.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	req, err := http.NewRequestWithContext(timeout(t, 5*time.Second), "GET", "http://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tp.Node2.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := netip.ParseAddrPort(string(body))
	if err != nil || got.Addr() != tp.CGNAT.Addr() {
		t.Errorf("server saw node2 as %q, want %s", body, tp.CGNAT.Addr())
	}

	if _, err := tp.Node2.HTTPClient().Get("http://example.com/"); err == nil || !strings.Contains(err.Error(), "not an IP address") {
		t.Errorf("GET by name: got %v, want a refusal to resolve outside the namespace", err)
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()
	tp := New(t)
	for _, h := range []*Host{tp.Node1, tp.Home2} {
		ino, err := netnsInode(h.ns)
		if err != nil {
			t.Fatal(err)
		}
		out, err := h.Command(t.Context(), "readlink", "/proc/self/ns/net").Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("net:[%d]", ino); got != want {
			t.Errorf("%s: command runs in %s, want %s", h, got, want)
		}
	}
	// A program, rather than in-process sockets, reaching the public side.
	ln, err := tp.Client.Listen("tcp", tp.Client.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err.Error()
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String()
		c.Close()
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	cmd := tp.Node1.Command(t.Context(), "bash", "-c", `exec 3<>"/dev/tcp/$0/$1"`, host, port)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash /dev/tcp from node1: %v: %s", err, out)
	}
	if got := <-seen; got != tp.Home1.Addr().String() {
		t.Errorf("client saw bash on node1 as %s, want %s", got, tp.Home1.Addr())
	}
}

func TestDialRefusesNames(t *testing.T) {
	for _, addr := range []string{"localhost:80", "example.com:443"} {
		if err := checkLiteral("tcp", addr); err == nil {
			t.Errorf("checkLiteral(tcp, %s): got nil, want an error", addr)
		}
	}
	for _, c := range [][2]string{{"tcp", ":0"}, {"udp4", "1.2.3.4:5"}, {"tcp", "[fe80::1%eth0]:80"}, {"ip4:icmp", "1.2.3.4"}, {"unix", "/tmp/x"}} {
		if err := checkLiteral(c[0], c[1]); err != nil {
			t.Errorf("checkLiteral(%s, %s): %v", c[0], c[1], err)
		}
	}
}

// Teardown kills what runs in the topology, closes its listeners and
// leaves nothing holding its namespaces.
func TestCleanup(t *testing.T) {
	Require(t) // here, not only in the subtests, which would skip alone
	var inodes []string
	var sleeper interface{ Wait() error }
	var sleeperPid, orphan int
	var ln net.Listener
	t.Run("topology", func(t *testing.T) {
		tp := New(t)
		for _, h := range append(tp.Hosts(), tp.public) {
			ino, err := netnsInode(h.ns)
			if err != nil {
				t.Fatal(err)
			}
			inodes = append(inodes, fmt.Sprintf("net:[%d]", ino))
		}
		cmd := tp.Node2.Command(context.Background(), "sleep", "1000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sleeper, sleeperPid = cmd, cmd.Process.Pid
		// A process that escapes its parent: started from a shell that exits.
		cmd = tp.Home1.Command(context.Background(), "sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!")
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if orphan, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
			t.Fatalf("pid of the orphaned sleep: %q", out)
		}
		if ln, err = tp.Direct.Listen("tcp", ":0"); err != nil {
			t.Fatal(err)
		}
		go http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		resp, err := tp.Node1.HTTPClient().Get("http://" + netip.AddrPortFrom(tp.Direct.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port)).String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // the connection stays open, idle, until teardown
	})
	if err := sleeper.Wait(); err == nil {
		t.Errorf("sleep in node2 (pid %d) exited cleanly, want it killed", sleeperPid)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after teardown: got %v, want net.ErrClosed", err)
	}
	// Nothing of this process holds the namespaces: no descriptor, no
	// thread left switched into one, no child process. (Other processes'
	// namespaces may reuse the inode numbers once these are freed, so look
	// only at our own.)
	held := func(link string) bool {
		for _, ino := range inodes {
			if link == ino {
				return true
			}
		}
		return false
	}
	for _, pattern := range []string{"/proc/self/fd/*", "/proc/self/task/*/ns/net"} {
		paths, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if l, err := os.Readlink(p); err == nil && held(l) {
				t.Errorf("%s -> %s: a topology namespace is still held", p, l)
			}
		}
	}
	for _, pid := range []int{sleeperPid, orphan} {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && held(l) {
			t.Errorf("sleep (pid %d) still in %s", pid, l)
		}
	}
	// And a torn-down host refuses to be used.
	var h *Host
	t.Run("closed", func(t *testing.T) {
		h = New(t).Node1
	})
	if _, err := h.Listen("tcp", ":0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Listen after teardown: got %v, want ErrClosed", err)
	}
	if err := h.SetLink(false); !errors.Is(err, ErrClosed) {
		t.Errorf("SetLink after teardown: got %v, want ErrClosed", err)
	}
	if err := h.Command(context.Background(), "true").Run(); err == nil {
		t.Errorf("Command after teardown: ran, want an error")
	}
}

// TestIPv6Home: node6 (IPv6 only, behind home6 without NAT) reaches the
// public hosts from its own global address; they reach it on its open
// port 8090, and a new connection to any other port is dropped by
// home6's firewall.
func TestIPv6Home(t *testing.T) {
	t.Parallel()
	tp := New(t)
	if a := tp.Node6.Addr(); !a.Is6() || a != netip.MustParseAddr("2001:db8:6::2") {
		t.Fatalf("node6's address %s", a)
	}
	got, err := ObservedAddr(timeout(t, 5*time.Second), tp.Node6, tp.SupernodeA, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	if got.Addr() != tp.Node6.Addr() {
		t.Errorf("node6 -> supernode-a: seen from %s, want its own global address", got.Addr())
	}
	for _, port := range []int{8090, 8091} {
		ln, err := tp.Node6.Listen("tcp", netip.AddrPortFrom(tp.Node6.Addr(), uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		c, err := tp.Client.Dial(timeout(t, 500*time.Millisecond), "tcp", netip.AddrPortFrom(tp.Node6.Addr(), uint16(port)).String())
		switch {
		case port == 8090 && err != nil:
			t.Errorf("client -> node6's open port: %v", err)
		case port != 8090 && !isTimeout(err):
			t.Errorf("client -> node6 port %d: got %v, want a timeout (dropped)", port, err)
		}
		if c != nil {
			c.Close()
		}
	}
}
