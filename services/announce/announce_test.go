package announce

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestConfigErrors: a host name that is not a DNS label, or a bad port, is
// refused before anything listens. (The announcements themselves are
// checked with avahi against the booted image: qemu-tests' TestMDNS.)
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{HostName: "", Port: 4200}, "not a DNS label"},
		{Config{HostName: "pc2.local", Port: 4200}, "not a DNS label"},
		{Config{HostName: "-pc2", Port: 4200}, "not a DNS label"},
		{Config{HostName: strings.Repeat("a", 64), Port: 4200}, "not a DNS label"},
		{Config{HostName: "pc2", Port: 0}, "port"},
		{Config{HostName: "pc2", Port: 70000}, "port"},
	} {
		if err := Run(context.Background(), c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestNoInterfaces: without an interface to announce on (here: only a
// loopback), Run starts nothing and returns when ctx ends.
func TestNoInterfaces(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	lo := func() ([]net.Interface, error) {
		return []net.Interface{{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback | net.FlagMulticast}}, nil
	}
	if err := Run(ctx, Config{HostName: "pc2", Port: 4200, Interfaces: lo}); err != nil {
		t.Fatal(err)
	}
	if ifaces, _, key := current(lo); len(ifaces) != 0 || key != "" {
		t.Errorf("loopback counted: %v %q", ifaces, key)
	}
}
