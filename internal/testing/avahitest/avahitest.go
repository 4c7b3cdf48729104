// Package avahitest checks mDNS/DNS-SD announcements with a client nobody
// here wrote: avahi's avahi-resolve and avahi-browse. It needs the Debian
// packages avahi-daemon, avahi-utils and dbus (and ip and unshare, from
// iproute2 and util-linux). The clients talk over D-Bus to an
// avahi-daemon, so Start runs a private system bus and daemon in a test's
// network namespace: no systemd, system bus or host avahi needed, and
// several can run at once.
package avahitest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// Config is how Start sets up the daemon; the zero value is usable.
type Config struct {
	// HostName is the daemon's own name ("avahitest" if empty): keep it
	// apart from the names a test looks up.
	HostName string
}

// Avahi is an avahi-daemon with its own D-Bus system bus, in a network
// namespace.
type Avahi struct {
	netns, bus string
}

// Entry is one resolved service ("=" line) as avahi-browse reports it.
type Entry struct {
	Interface, Protocol string // "eth0", "IPv4" or "IPv6"
	Name, Type, Domain  string // "Test Service", "_http._tcp", "local"
	HostName            string // "alpha.local"
	Addr                netip.Addr
	Port                uint16
	TXT                 []string // in the order avahi-browse prints them
}

const busConf = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`

const daemonConf = `[server]
host-name=%s
use-ipv4=yes
use-ipv6=yes
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
`

// Require skips the test (fails it under CI=true) unless it runs as root
// with the programs Start needs. Start calls it.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "avahitest: needs root to run avahi-daemon in a network namespace")
	}
	for _, p := range []struct{ cmd, pkg string }{{"avahi-daemon", "avahi-daemon"}, {"avahi-resolve", "avahi-utils"}, {"dbus-daemon", "dbus"}, {"ip", "iproute2"}, {"unshare", "util-linux"}} {
		if _, err := exec.LookPath(p.cmd); err != nil {
			testenv.SkipOrFail(t, "avahitest: %s missing (apt-get install %s, or scripts/deps.sh)", p.cmd, p.pkg)
		}
	}
}

// Start runs a private D-Bus system bus and an avahi-daemon in netns (as
// made by `ip netns add`), both stopped when the test ends, and returns
// once the daemon has probed its host name. The namespace's loopback must
// be up, and mDNS needs an interface with MULTICAST (a veth has it). Run
// one per namespace and put the announcer under test in another one: two
// mDNS stacks in one namespace hear each other's probes as conflicts.
func Start(t testing.TB, netns string, cfg Config) *Avahi {
	t.Helper()
	Require(t)
	if cfg.HostName == "" {
		cfg.HostName = "avahitest"
	}
	dir := t.TempDir()
	a := &Avahi{netns: netns, bus: "unix:path=" + filepath.Join(dir, "bus")}
	write := func(name, format string, args ...any) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, fmt.Appendf(nil, format, args...), 0o644); err != nil {
			t.Fatalf("avahitest: %v", err)
		}
		return p
	}

	// --print-address answers once the bus listens: avahi-daemon exits if
	// it cannot reach D-Bus.
	run(t, "dbus-daemon", exec.Command("dbus-daemon", "--nofork", "--nosyslog", "--print-address",
		"--config-file="+write("bus.conf", busConf, filepath.Join(dir, "bus"))), "unix:path=")
	// avahi-daemon writes /run/avahi-daemon/{pid,socket}, fixed paths: a
	// tmpfs over /run in a mount namespace of its own keeps each daemon's
	// apart, and the host's /run untouched.
	run(t, "avahi-daemon in "+netns, a.Command(context.Background(), "unshare", "-m", "sh", "-c",
		`mount -t tmpfs avahitest /run && mkdir /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f "$0"`,
		write("avahi-daemon.conf", daemonConf, cfg.HostName)), "Server startup complete")
	return a
}

// run starts cmd, stopped with SIGTERM when the test ends, and waits for a
// line containing ready in its output, which the test shows if it fails.
func run(t testing.TB, name string, cmd *exec.Cmd, ready string) {
	t.Helper()
	out := &proc.TailBuffer{Max: 64 << 10}
	r, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("avahitest: %s: %v", name, err)
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = proc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("avahitest: start %s: %v", name, err)
	}
	seen, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc, found := bufio.NewScanner(r), false
		for sc.Scan() {
			out.Write(append(sc.Bytes(), '\n'))
			if !found && strings.Contains(sc.Text(), ready) {
				found = true
				close(seen)
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out)
		}
	})
	select {
	case <-seen:
	case <-done:
		t.Fatalf("avahitest: %s exited before it was ready:\n%s", name, out)
	case <-time.After(20 * time.Second):
		t.Fatalf("avahitest: %s not ready after 20s:\n%s", name, out)
	}
}

// Command runs name in the daemon's namespace, as a client of its bus:
// avahi-publish, say. Clients must run there for avahi-browse to name
// interfaces.
func (a *Avahi) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", a.netns, name}, args...)...)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+a.bus)
	cmd.SysProcAttr = proc.SysProcAttr()
	return cmd
}

// poll runs the client argv until parse accepts its output or deadline
// passes. A client waits for mDNS answers itself (about 5 s for
// avahi-resolve), so a failed attempt is retried after a short pause.
func poll[T any](t testing.TB, a *Avahi, deadline time.Duration, argv []string, parse func(string) (T, bool)) (T, error) {
	t.Helper()
	t.Logf("$ %s", strings.Join(argv, " "))
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for {
		out, err := a.Command(ctx, argv[0], argv[1:]...).CombinedOutput()
		if v, ok := parse(string(out)); ok {
			return v, nil
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("avahitest: %s: no answer within %v (%v): %s", strings.Join(argv, " "), deadline, err, strings.TrimSpace(string(out)))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ResolveHost looks up name's IPv4 address with avahi-resolve until it
// answers or deadline passes.
func (a *Avahi) ResolveHost(t testing.TB, name string, deadline time.Duration) (netip.Addr, error) {
	t.Helper()
	return poll(t, a, deadline, []string{"avahi-resolve", "-4", "-n", name}, func(out string) (netip.Addr, bool) {
		// "alpha.local\t10.77.0.1"
		_, addr, ok := strings.Cut(strings.TrimSpace(out), "\t")
		ip, err := netip.ParseAddr(addr)
		return ip, ok && err == nil
	})
}

// Browse lists the services of serviceType ("_http._tcp") with
// avahi-browse until it resolves at least one or deadline passes. Each
// instance comes once per interface and protocol.
func (a *Avahi) Browse(t testing.TB, serviceType string, deadline time.Duration) ([]Entry, error) {
	t.Helper()
	return poll(t, a, deadline, []string{"avahi-browse", "-r", "-t", "-p", "-k", serviceType}, func(out string) ([]Entry, bool) {
		var es []Entry
		for line := range strings.Lines(out) {
			if e, err := parseEntry(strings.TrimSuffix(line, "\n")); err == nil {
				es = append(es, e)
			}
		}
		return es, len(es) > 0
	})
}

// parseEntry parses a resolved line of avahi-browse -p:
// =;eth0;IPv4;Test\032Service;_http._tcp;local;alpha.local;10.77.0.1;8080;"path=/"
func parseEntry(line string) (Entry, error) {
	f := strings.SplitN(line, ";", 10)
	if len(f) != 10 || f[0] != "=" {
		return Entry{}, errors.New("not a resolved entry")
	}
	addr, err := netip.ParseAddr(f[7])
	if err != nil {
		return Entry{}, err
	}
	port, err := strconv.ParseUint(f[8], 10, 16)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Interface: f[1], Protocol: f[2], Name: unescape(f[3]), Type: f[4], Domain: f[5],
		HostName: f[6], Addr: addr, Port: uint16(port), TXT: parseTXT(f[9])}, nil
}

// unescape undoes avahi_escape_label: `\.` and `\\`, and `\DDD` (decimal) for
// any other byte but letters, digits, '-' and '_'.
func unescape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
		} else if n, err := strconv.ParseUint(s[i+1:min(i+4, len(s))], 10, 8); err == nil && i+4 <= len(s) {
			b, i = append(b, byte(n)), i+3
		} else {
			b, i = append(b, s[i+1]), i+1
		}
	}
	return string(b)
}

// parseTXT splits avahi's `"a=b" "c=\"d\""` into its strings.
func parseTXT(s string) []string {
	var txt []string
	var cur []byte
	in := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case !in && c == '"':
			in, cur = true, cur[:0]
		case in && c == '"':
			in, txt = false, append(txt, string(cur))
		case in && c == '\\' && i+1 < len(s):
			cur, i = append(cur, s[i+1]), i+1
		case in:
			cur = append(cur, c)
		}
	}
	return txt
}
