package avahitest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testlog"
)

// TestPublishedServiceSeenFromOtherHost publishes a service with
// avahi-publish through the daemon in namespace A and finds it, and A's
// host name, through the daemon in namespace B across a veth.
func TestPublishedServiceSeenFromOtherHost(t *testing.T) {
	Require(t)
	nsA, nsB := fmt.Sprintf("avahitest-a-%d", os.Getpid()), fmt.Sprintf("avahitest-b-%d", os.Getpid())
	ip(t, "netns", "add", nsA)
	t.Cleanup(func() { ip(t, "netns", "del", nsA) })
	ip(t, "netns", "add", nsB)
	t.Cleanup(func() { ip(t, "netns", "del", nsB) })
	ip(t, "link", "add", "eth0", "netns", nsA, "type", "veth", "peer", "name", "eth0", "netns", nsB)
	for ns, addr := range map[string]string{nsA: "10.77.0.1/24", nsB: "10.77.0.2/24"} {
		ip(t, "-n", ns, "addr", "add", addr, "dev", "eth0")
		ip(t, "-n", ns, "link", "set", "eth0", "up")
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}

	alpha := Start(t, nsA, Config{HostName: "alpha"})
	pub := alpha.Command(t.Context(), "avahi-publish", "-s", "Test Service", "_http._tcp", "8080", "path=/")
	pub.Stdout, pub.Stderr = testlog.Writer(t), testlog.Writer(t)
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Wait() })
	b := Start(t, nsB, Config{})

	got, err := b.ResolveHost(t, "alpha.local", 20*time.Second)
	if want := netip.MustParseAddr("10.77.0.1"); err != nil || got != want {
		t.Errorf("ResolveHost(alpha.local) = %v, %v; want %v", got, err, want)
	}
	es, err := b.Browse(t, "_http._tcp", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{Interface: "eth0", Protocol: "IPv4", Name: "Test Service", Type: "_http._tcp", Domain: "local",
		HostName: "alpha.local", Addr: netip.MustParseAddr("10.77.0.1"), Port: 8080, TXT: []string{"path=/"}}
	for _, e := range es {
		if reflect.DeepEqual(e, want) {
			return
		}
	}
	t.Errorf("Browse(_http._tcp) = %+v; want it to hold %+v", es, want)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

func TestParseEntry(t *testing.T) {
	line := `=;vb;IPv6;Odd\059Na\.me\\x\034y\032\195\169;_xy._tcp;local;alpha.local;fe80::1;1;"bs=\\z" "q=\"x\"" "a=b c"`
	got, err := parseEntry(line)
	want := Entry{Interface: "vb", Protocol: "IPv6", Name: `Odd;Na.me\x"y é`, Type: "_xy._tcp", Domain: "local",
		HostName: "alpha.local", Addr: netip.MustParseAddr("fe80::1"), Port: 1, TXT: []string{`bs=\z`, `q="x"`, "a=b c"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseEntry = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseEntry(`+;vb;IPv4;x;_xy._tcp;local`); err == nil {
		t.Errorf("parseEntry(+ line) succeeded; want an error")
	}
}
