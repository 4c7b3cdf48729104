// Package dnstest runs a real DNS server for tests: Debian's dnsmasq,
// answering authoritatively from the records a test gives it (A and TXT)
// on a loopback port, and nothing else (no upstream, no hosts file).
// Changing the records restarts it on the same port.
package dnstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// Server is a running dnsmasq.
type Server struct {
	// Addr is its address, 127.0.0.1:<port>, UDP and TCP.
	Addr string

	t   testing.TB
	bin string
	dir string
	mu  sync.Mutex
	cmd *exec.Cmd
	log proc.TailBuffer // dnsmasq's output
}

// Records are the server's contents: the zones it answers for (a name
// under one that has no record of the type asked gets NXDOMAIN or an
// empty answer; anything else is refused), A records (name -> IPv4
// address) and TXT records (name -> values, one record each, without
// commas or quotes).
type Records struct {
	Zones []string
	A     map[string]string
	TXT   map[string][]string
}

// Start runs dnsmasq with recs until the test ends; it skips (fails on
// CI) without dnsmasq.
func Start(t testing.TB, recs Records) *Server {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		testenv.SkipOrFail(t, "dnsmasq (Debian dnsmasq-base) is not installed: %v", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	s.Addr = freePort(t)
	s.Set(recs)
	t.Cleanup(s.stop)
	return s
}

// freePort finds a loopback port free for both UDP and TCP (dnsmasq
// binds both itself) in 10000-19999, below Linux's ephemeral range
// (32768 and up) and the relays' mapped ports (20000 and up): Set
// restarts dnsmasq on the same port, and an ephemeral one could be taken
// meanwhile by any socket of a test running beside it (seen in CI).
func freePort(t testing.TB) string {
	for range 1000 {
		tl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(10000))))
		if err != nil {
			continue
		}
		addr := tl.Addr().String()
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err == nil {
			ul.Close()
			return addr
		}
	}
	t.Fatal("dnstest: no loopback port free for both UDP and TCP")
	return ""
}

// Set replaces the records (dnsmasq restarts on the same port).
func (s *Server) Set(recs Records) {
	s.t.Helper()
	s.stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--keep-in-foreground", "--log-facility=-", "--log-queries", "--conf-file=/dev/null",
		"--no-resolv", "--no-hosts", "--port=" + port, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--user=root", "--pid-file=" + filepath.Join(s.dir, "pid"), "--local-ttl=0"}
	for _, z := range recs.Zones {
		args = append(args, "--local=/"+z+"/")
	}
	names := make([]string, 0, len(recs.A))
	for n := range recs.A {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		args = append(args, "--host-record="+n+","+recs.A[n])
	}
	names = names[:0]
	for n := range recs.TXT {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		// One record per value (the strings of one record are read
		// back joined).
		for _, v := range recs.TXT[n] {
			if strings.ContainsAny(v, ",\"") {
				s.t.Fatalf("dnstest: TXT value %q: commas and quotes are not supported", v)
			}
			args = append(args, "--txt-record="+n+","+v)
		}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = &s.log, &s.log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start dnsmasq: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	// Up when it answers on TCP.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", s.Addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			s.t.Fatalf("dnsmasq on %s did not come up: %v\n%s", s.Addr, err, s.Log())
		}
	}
}

// Log is dnsmasq's log so far.
func (s *Server) Log() string { return s.log.String() }

func (s *Server) stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// String names the server in test logs.
func (s *Server) String() string { return fmt.Sprintf("dnsmasq at %s", s.Addr) }
