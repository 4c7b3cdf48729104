// Package dhcptest runs a real DHCP server for tests: Debian's dnsmasq in
// a network namespace of its own, joined by a veth pair to a client
// namespace.
package dhcptest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// Pair is two network namespaces joined by a veth pair: the client's
// veth0 (down, for the code under test to bring up, or up with Up) and
// the server's veth1 (192.0.2.1/24, up).
type Pair struct{ Client, Server netns.NsHandle }

// NewPair makes a Pair that goes when the test ends; it skips (fails on
// CI) without root.
func NewPair(t testing.TB) Pair {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "needs root to create network namespaces")
	}
	var p Pair
	for _, ns := range []*netns.NsHandle{&p.Client, &p.Server} {
		h, err := nattest.NewNamespace()
		if err != nil {
			testenv.SkipOrFail(t, "%v", err)
		}
		*ns = h
		t.Cleanup(func() { h.Close() })
	}
	p.Link(t)
	return p
}

// Link joins the namespaces with a new veth pair (NewPair does; after
// Unlink, again).
func (p Pair) Link(t testing.TB) {
	t.Helper()
	hc, err := netlink.NewHandleAt(p.Client)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hs, err := netlink.NewHandleAt(p.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	if err := hc.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}); err != nil {
		testenv.SkipOrFail(t, "create veth pair: %v", err)
	}
	peer, err := hc.LinkByName("veth1")
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.LinkSetNsFd(peer, int(p.Server)); err != nil {
		t.Fatal(err)
	}
	if peer, err = hs.LinkByName("veth1"); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("192.0.2.1/24")
	if err := hs.AddrAdd(peer, addr); err != nil {
		t.Fatal(err)
	}
	if err := hs.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
}

// Unlink removes the veth pair, as a pulled-out adapter goes.
func (p Pair) Unlink(t testing.TB) { p.veth0(t, (*netlink.Handle).LinkDel) }

// Up sets the client's veth0 up.
func (p Pair) Up(t testing.TB) { p.veth0(t, (*netlink.Handle).LinkSetUp) }

// veth0 applies f to the client's veth0.
func (p Pair) veth0(t testing.TB, f func(*netlink.Handle, netlink.Link) error) {
	t.Helper()
	h, err := netlink.NewHandleAt(p.Client)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	dev, err := h.LinkByName("veth0")
	if err == nil {
		err = f(h, dev)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// In runs f on a thread in ns: sockets and processes it makes are there.
func In(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	return f()
}

// Log is a dnsmasq's log.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Log) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *Log) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Dnsmasq runs Debian's dnsmasq as the DHCP server on veth1 (no DNS),
// handing out from..to with 2-minute leases renewed after 2 s and
// rebound after 4 s, the router 192.0.2.1 and the name server
// 192.0.2.53; it stops when stop is called or the test ends.
func (p Pair) Dnsmasq(t testing.TB, from, to string) (log *Log, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		testenv.SkipOrFail(t, "dnsmasq (Debian dnsmasq-base) is not installed: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--keep-in-foreground", "--log-facility=-", "--log-dhcp", "--conf-file=/dev/null",
		"--port=0", "--interface=veth1", "--bind-interfaces", "--dhcp-authoritative", "--user=root",
		"--pid-file="+filepath.Join(dir, "pid"), "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--dhcp-range="+from+","+to+",255.255.255.0,2m",
		"--dhcp-option=option:router,192.0.2.1", "--dhcp-option=option:dns-server,192.0.2.53",
		"--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4")
	log = &Log{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := In(p.Server, cmd.Start); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return log, stop
}
