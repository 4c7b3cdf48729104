package turn

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testenv"
)

// uclientResult is what turnutils_uclient reports at the end of a run.
type uclientResult struct {
	sent, received, lost int
	output               string
}

var (
	uclientTotals = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	uclientLost   = regexp.MustCompile(`Total lost packets (\d+)`)
)

// runUclient runs coturn's TURN test client against our server. The
// server address goes last. uclient exits 0 even when every packet was
// lost, so the result carries its own counters.
func runUclient(t *testing.T, args ...string) (uclientResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "turnutils_uclient", args...)
	t.Logf("$ turnutils_uclient %s", strings.Join(args, " "))
	out, err := cmd.CombinedOutput()
	res := uclientResult{output: string(out)}
	if m := uclientTotals.FindAllStringSubmatch(res.output, -1); len(m) > 0 {
		last := m[len(m)-1]
		res.sent, _ = strconv.Atoi(last[1])
		res.received, _ = strconv.Atoi(last[2])
	}
	if m := uclientLost.FindStringSubmatch(res.output); m != nil {
		res.lost, _ = strconv.Atoi(m[1])
	} else {
		res.lost = -1
	}
	return res, err
}

// coturn's turnutils_uclient, a TURN client nobody here wrote, allocates
// and relays through our server with credentials from Credentials(), over
// UDP and TCP to the server, to an echo peer and client to client.
func TestCoturnUclient(t *testing.T) {
	if _, err := exec.LookPath("turnutils_uclient"); err != nil {
		testenv.SkipOrFail(t, "turnutils_uclient missing (apt-get install coturn, or scripts/deps.sh)")
	}
	const n = 20 // messages per client

	s := newTestServer(t, nil)
	cred := s.Credentials("alice", time.Hour)
	port := func(transport string) string {
		if transport == "tcp" {
			return strconv.Itoa(s.tcpAddr.Port)
		}
		return strconv.Itoa(s.udpAddr.Port)
	}
	// Flags: -u/-w credentials, -p server port, -t TCP to the server,
	// -e/-r peer address and port, -y client to client (two clients,
	// each the other's peer, through their relayed addresses), -n messages
	// per client, -l message length, -c no extra RTCP allocation, -X ask
	// for an IPv4 relayed address. The realm comes from the server.
	for _, tc := range []struct {
		name      string
		transport string
		toPeer    bool
	}{
		{"udp to peer", "udp", true},
		{"tcp to peer", "tcp", true},
		{"udp client to client", "udp", false},
		{"tcp client to client", "tcp", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"-u", cred.Username, "-w", cred.Password, "-p", port(tc.transport),
				"-n", strconv.Itoa(n), "-l", "120", "-c", "-X"}
			if tc.transport == "tcp" {
				args = append(args, "-t")
			}
			var peer *echoPeer
			clients := 2
			if tc.toPeer {
				peer = newEchoPeer(t)
				clients = 1
				args = append(args, "-e", "127.0.0.1", "-r", strconv.Itoa(peer.addr().Port))
			} else {
				args = append(args, "-y")
			}
			args = append(args, "127.0.0.1")

			res, err := runUclient(t, args...)
			if err != nil || res.sent != clients*n || res.received != clients*n || res.lost != 0 {
				t.Fatalf("uclient: err %v, sent %d, received %d, lost %d; want nil, %d, %d, 0. Output:\n%s",
					err, res.sent, res.received, res.lost, clients*n, clients*n, res.output)
			}
			if peer != nil {
				if got := peer.received(); got != n {
					t.Errorf("peer received %d datagrams, want %d", got, n)
				}
			}
		})
	}

	// uclient computes the username and password itself from the shared
	// secret (-W): coturn's implementation of the scheme agrees with ours.
	t.Run("shared secret", func(t *testing.T) {
		t.Parallel()
		rs := newTestServer(t, func(c *Config) {
			c.Secret = []byte("plain secret")
			c.Now = time.Now // uclient stamps the expiry from the wall clock
		})
		peer := newEchoPeer(t)
		res, err := runUclient(t, "-W", "plain secret", "-u", "bob", "-p", strconv.Itoa(rs.udpAddr.Port),
			"-e", "127.0.0.1", "-r", strconv.Itoa(peer.addr().Port), "-n", strconv.Itoa(n), "-c", "127.0.0.1")
		if err != nil || res.received != n || res.lost != 0 {
			t.Fatalf("uclient -W: err %v, received %d, lost %d; want nil, %d, 0. Output:\n%s", err, res.received, res.lost, n, res.output)
		}
		if len(rs.logs.find("authenticated", ":bob")) == 0 {
			t.Errorf("server did not log a TURN REST username for bob; logs:\n%s", rs.logs.all())
		}
	})

	// And it is refused with expired credentials.
	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		es := newTestServer(t, nil)
		old := es.Credentials("alice", time.Minute)
		es.clock.Advance(time.Minute)
		peer := newEchoPeer(t)
		res, err := runUclient(t, "-u", old.Username, "-w", old.Password, "-p", strconv.Itoa(es.udpAddr.Port),
			"-e", "127.0.0.1", "-r", strconv.Itoa(peer.addr().Port), "-n", "3", "-c", "127.0.0.1")
		if err == nil || res.received != 0 || !strings.Contains(res.output, "error 400") {
			t.Errorf("uclient with expired credentials: err %v, received %d; want an exit error and `error 400`. Output:\n%s", err, res.received, res.output)
		}
		if got := peer.received(); got != 0 {
			t.Errorf("peer received %d datagrams, want 0", got)
		}
		if len(es.logs.find("credentials refused", "expired")) == 0 {
			t.Errorf("no `expired` refusal logged; logs:\n%s", es.logs.all())
		}
	})
}
