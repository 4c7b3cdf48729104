package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/internal/testing/avahitest"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestMDNS: the booted image is found on its local network by name, with
// avahi (avahi-resolve, avahi-browse) as the client. QEMU's user network
// carries no multicast, so the VM gets a second network card on a tap
// interface that the test moves into a network namespace of its own, with
// an avahi daemon there; the image's settings give that card a static
// address. avahi resolves <hostname>.local to it and lists the cloud's
// _http._tcp service on port 4200, whose page answers there; the console
// names the URL.
func TestMDNS(t *testing.T) {
	qemutest.Require(t)
	avahitest.Require(t)
	ns := fmt.Sprintf("pc2mdns%d", os.Getpid())
	tap := fmt.Sprintf("pc2tap%d", os.Getpid()%1000000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
	t.Cleanup(func() {
		// Deleting the namespace took it along, unless the test stopped
		// before moving it.
		exec.Command("ip", "link", "del", tap).Run()
	})

	const host = "pc2-mdns"
	img := buildBoardImage(t, qemu.Board, settings.Settings{Profile: profile.Personal, Hostname: host,
		Supernodes: []string{placeholderSupernode(t)},
		Network: &settings.Network{Interfaces: []settings.Interface{
			{Name: "eth1", Mode: settings.ModeStatic, Addresses: []string{"10.89.0.2/24"}},
		}}}, nil)
	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Tap: tap})
	// QEMU holds the tap once the guest's kernel runs; then the card
	// moves to the namespace (QEMU keeps its file descriptor).
	vm.WaitSerial(t, "Linux version", 2*time.Minute)
	run("ip", "link", "set", tap, "netns", ns)
	run("ip", "-n", ns, "link", "set", "lo", "up")
	run("ip", "-n", ns, "addr", "add", "10.89.0.1/24", "dev", tap)
	run("ip", "-n", ns, "link", "set", tap, "up")
	av := avahitest.Start(t, ns, avahitest.Config{})

	waitStatus(t, vm, 3*time.Minute, "in the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	addr, err := av.ResolveHost(t, host+".local", time.Minute)
	if err != nil || addr.String() != "10.89.0.2" {
		t.Fatalf("avahi-resolve %s.local: %v %v, want 10.89.0.2", host, addr, err)
	}
	t.Logf("avahi resolved %s.local to %v", host, addr)
	var found bool
	for end := time.Now().Add(time.Minute); !found && time.Now().Before(end); {
		entries, err := av.Browse(t, "_http._tcp", 30*time.Second)
		if err != nil {
			t.Fatalf("avahi-browse _http._tcp: %v", err)
		}
		for _, e := range entries {
			t.Logf("avahi-browse: %+v", e)
			if e.Name == "PC2 "+host && e.Port == 4200 && e.HostName == host+".local" {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("avahi-browse does not list the cloud's _http._tcp service on port 4200 at %s.local", host)
	}
	// The page answers at the announced address, from the namespace.
	out, err := av.Command(t.Context(), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://10.89.0.2:4200/").Output()
	if err != nil || string(out) != "303" {
		t.Errorf("GET http://10.89.0.2:4200/ from the namespace: %q %v, want the wizard's 303", out, err)
	}
	if want := "open http://" + host + ".local:4200 "; !strings.Contains(vm.Serial(), want) {
		t.Errorf("the console does not name %s", want)
	}
}
