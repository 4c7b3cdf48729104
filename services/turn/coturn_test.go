package turn

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/coturntest"
)

// coturn's turnutils_uclient, a TURN client nobody here wrote, allocates
// and relays through our server with credentials from Credentials(), over
// UDP and TCP to the server, to an echo peer and client to client.
func TestCoturnUclient(t *testing.T) {
	coturntest.Require(t)
	const n = 20 // messages per client

	s := newTestServer(t, nil)
	cred := s.Credentials("alice", time.Hour)
	port := func(transport string) string {
		if transport == "tcp" {
			return strconv.Itoa(s.tcpAddr.Port)
		}
		return strconv.Itoa(s.udpAddr.Port)
	}
	// coturntest.Run explains the flags; -y runs two clients, each the
	// other's peer through their relayed addresses.
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
			var peer *coturntest.EchoPeer
			clients := 2
			if tc.toPeer {
				peer = coturntest.NewEchoPeer(t)
				clients = 1
				args = append(args, "-e", "127.0.0.1", "-r", strconv.Itoa(peer.Addr().Port))
			} else {
				args = append(args, "-y")
			}
			args = append(args, "127.0.0.1")

			res, err := coturntest.Run(t, args...)
			if err != nil || res.Sent != clients*n || res.Received != clients*n || res.Lost != 0 {
				t.Fatalf("uclient: err %v, sent %d, received %d, lost %d; want nil, %d, %d, 0. Output:\n%s",
					err, res.Sent, res.Received, res.Lost, clients*n, clients*n, res.Output)
			}
			if peer != nil {
				if got := peer.Received(); got != n {
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
		peer := coturntest.NewEchoPeer(t)
		res, err := coturntest.Run(t, "-W", "plain secret", "-u", "bob", "-p", strconv.Itoa(rs.udpAddr.Port),
			"-e", "127.0.0.1", "-r", strconv.Itoa(peer.Addr().Port), "-n", strconv.Itoa(n), "-c", "127.0.0.1")
		if err != nil || res.Received != n || res.Lost != 0 {
			t.Fatalf("uclient -W: err %v, received %d, lost %d; want nil, %d, 0. Output:\n%s", err, res.Received, res.Lost, n, res.Output)
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
		peer := coturntest.NewEchoPeer(t)
		res, err := coturntest.Run(t, "-u", old.Username, "-w", old.Password, "-p", strconv.Itoa(es.udpAddr.Port),
			"-e", "127.0.0.1", "-r", strconv.Itoa(peer.Addr().Port), "-n", "3", "-c", "127.0.0.1")
		if err == nil || res.Received != 0 || !strings.Contains(res.Output, "error 400") {
			t.Errorf("uclient with expired credentials: err %v, received %d; want an exit error and `error 400`. Output:\n%s", err, res.Received, res.Output)
		}
		if got := peer.Received(); got != 0 {
			t.Errorf("peer received %d datagrams, want 0", got)
		}
		if len(es.logs.find("credentials refused", "expired")) == 0 {
			t.Errorf("no `expired` refusal logged; logs:\n%s", es.logs.all())
		}
	})
}
