// Package coturntest runs coturn's TURN test client, turnutils_uclient
// (Debian package coturn), against a TURN server under test, with a UDP
// echo peer for it to relay to. The TURN server's own tests and the
// supernode's use it: a TURN client nobody here wrote must allocate and
// relay through ours.
package coturntest

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// Require skips the test (fails it under CI) when turnutils_uclient is
// missing.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("turnutils_uclient"); err != nil {
		testenv.SkipOrFail(t, "turnutils_uclient missing (apt-get install coturn, or scripts/deps.sh)")
	}
}

// Result is what turnutils_uclient reports at the end of a run.
type Result struct {
	Sent, Received int
	Lost           int // -1 when uclient did not report it
	Output         string
}

var (
	totals = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	lost   = regexp.MustCompile(`Total lost packets (\d+)`)
)

// Run runs turnutils_uclient with args (the server address goes last).
// uclient exits 0 even when every packet was lost, so the result carries
// its own counters.
//
// Its flags: -u/-w credentials, -W a shared secret instead, -p server
// port, -t TCP to the server, -e/-r peer address and port, -y client to
// client (two clients, each the other's peer), -n messages per client,
// -l message length, -c no extra RTCP allocation, -X an IPv4 relayed
// address. The realm comes from the server.
func Run(t testing.TB, args ...string) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "turnutils_uclient", args...)
	t.Logf("$ turnutils_uclient %s", strings.Join(args, " "))
	out, err := cmd.CombinedOutput()
	res := Result{Output: string(out), Lost: -1}
	if m := totals.FindAllStringSubmatch(res.Output, -1); len(m) > 0 {
		last := m[len(m)-1]
		res.Sent, _ = strconv.Atoi(last[1])
		res.Received, _ = strconv.Atoi(last[2])
	}
	if m := lost.FindStringSubmatch(res.Output); m != nil {
		res.Lost, _ = strconv.Atoi(m[1])
	}
	return res, err
}

// EchoPeer is a UDP peer on loopback that sends every datagram back and
// counts where datagrams came from.
type EchoPeer struct {
	conn net.PacketConn
	mu   sync.Mutex
	from map[string]int
}

// NewEchoPeer starts an echo peer closed at the end of the test.
func NewEchoPeer(t testing.TB) *EchoPeer {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &EchoPeer{conn: c, from: make(map[string]int)}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := p.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.from[from.String()]++
			p.mu.Unlock()
			p.conn.WriteTo(buf[:n], from)
		}
	}()
	return p
}

// Addr is the peer's address.
func (p *EchoPeer) Addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

// Received is how many datagrams the peer has had.
func (p *EchoPeer) Received() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.from {
		n += c
	}
	return n
}

// Senders is how many distinct source addresses sent to the peer.
func (p *EchoPeer) Senders() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.from))
	for k, v := range p.from {
		out[k] = v
	}
	return out
}
