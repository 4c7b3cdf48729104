package turn

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"

	"github.com/pion/stun/v3"
	pionturn "github.com/pion/turn/v4"

	"github.com/pc2/pc2/internal/testing/coturntest"
	pc2stun "github.com/pc2/pc2/services/stun"
)

func TestNewConfigErrors(t *testing.T) {
	udp := listenUDP(t)
	wildcard, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer wildcard.Close()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no listener", Config{}, "no listener"},
		{"wildcard without RelayAddress", Config{UDP: wildcard}, "RelayAddress is required"},
		{"IPv6 RelayAddress", Config{UDP: udp, RelayAddress: net.ParseIP("2001:db8::1")}, "not a usable IPv4"},
		{"unspecified RelayAddress", Config{UDP: udp, RelayAddress: net.IPv4zero}, "not a usable IPv4"},
		{"half a port range", Config{UDP: udp, MinPort: 40000}, "bad relay port range"},
		{"inverted port range", Config{UDP: udp, MinPort: 40001, MaxPort: 40000}, "bad relay port range"},
		{"IPv6 RelayListen", Config{UDP: udp, RelayListen: "::"}, "not an IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New: got nil error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	udp := listenUDP(t)
	s, err := New(Config{UDP: udp}) // zero value but for the listener
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Credentials("alice", 0)
	if got, want := time.Until(c.Expires), DefaultCredentialTTL; got > want || got < want-2*time.Second {
		t.Errorf("default TTL: expires in %v, want about %v", got, want)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	want := []string{
		fmt.Sprintf("stun:127.0.0.1:%d", port),
		fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", port),
	}
	if fmt.Sprint(c.URIs) != fmt.Sprint(want) {
		t.Errorf("URIs: got %v, want %v", c.URIs, want)
	}
	// A random secret was chosen, and it works.
	client := listenUDP(t)
	if code := rawAllocate(t, client, udp.LocalAddr(), c.Username, "", c.Password); code != 0 {
		t.Errorf("allocate with the default secret: got error %d, want success", code)
	}
	if s.realm != DefaultRealm {
		t.Errorf("realm: got %q, want %q", s.realm, DefaultRealm)
	}
}

func TestCredentialsFormat(t *testing.T) {
	s := newTestServer(t, nil)
	c := s.Credentials("did:boson:abc", 90*time.Minute)
	wantExp := s.clock.Now().Add(90 * time.Minute)
	if !c.Expires.Equal(wantExp) {
		t.Errorf("Expires: got %v, want %v", c.Expires, wantExp)
	}
	if want := strconv.FormatInt(wantExp.Unix(), 10) + ":did:boson:abc"; c.Username != want {
		t.Errorf("Username: got %q, want %q", c.Username, want)
	}
	// HMAC-SHA1 is 20 bytes: 28 characters of base64.
	if len(c.Password) != 28 || c.Password != password([]byte("test secret"), c.Username) {
		t.Errorf("Password: got %q", c.Password)
	}
	want := []string{
		"stun:" + s.udpAddr.String(),
		"turn:" + s.udpAddr.String() + "?transport=udp",
		"turn:" + s.tcpAddr.String() + "?transport=tcp",
	}
	if fmt.Sprint(c.URIs) != fmt.Sprint(want) {
		t.Errorf("URIs: got %v, want %v", c.URIs, want)
	}
}

// The credentials are the TURN REST API's: pion's own implementation of the
// scheme accepts ours, and ours accepts pion's.
func TestCredentialsMatchPion(t *testing.T) {
	secret := "shared secret"
	s := newTestServer(t, func(c *Config) {
		c.Secret = []byte(secret)
		c.Now = time.Now
	})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}

	ours := s.Credentials("alice", time.Hour)
	key, ok := pionturn.LongTermTURNRESTAuthHandler(secret, nil)(ours.Username, "pc2.test", src)
	if !ok {
		t.Fatal("pion's TURN REST handler refused our username")
	}
	if want := pionturn.GenerateAuthKey(ours.Username, "pc2.test", ours.Password); !bytes.Equal(key, want) {
		t.Error("pion's TURN REST handler derived another key from our username: passwords differ")
	}

	user, pass, err := pionturn.GenerateLongTermTURNRESTCredentials(secret, "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, ok = s.authenticate(user, "pc2.test", src)
	if !ok {
		t.Fatal("our handler refused pion's TURN REST username")
	}
	if want := pionturn.GenerateAuthKey(user, "pc2.test", pass); !bytes.Equal(key, want) {
		t.Error("our handler derived another key from pion's username: passwords differ")
	}
}

// A pion TURN client allocates with issued credentials and relays UDP to
// an echo peer and back, over UDP and over TCP to the server.
func TestRelayUDP(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s := newTestServer(t, nil)
			peer := coturntest.NewEchoPeer(t)
			var conn net.PacketConn
			var server net.Addr
			if transport == "udp" {
				conn, server = listenUDP(t), s.udpAddr
			} else {
				conn, server = dialTCP(t, s.tcpAddr), s.tcpAddr
			}
			client := turnClient(t, conn, server, s.Credentials("alice", time.Hour))
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			defer relay.Close()
			relayed := relay.LocalAddr().(*net.UDPAddr)
			if !relayed.IP.Equal(net.IPv4(127, 0, 0, 1)) || relayed.Port == 0 {
				t.Errorf("relayed address: got %v, want 127.0.0.1:<port>", relayed)
			}
			if got := s.Allocations(); got != 1 {
				t.Errorf("Allocations: got %d, want 1", got)
			}

			for i := range 5 {
				msg := fmt.Appendf(nil, "hello %d over %s", i, transport)
				if _, err := relay.WriteTo(msg, peer.Addr()); err != nil {
					t.Fatalf("WriteTo peer: %v", err)
				}
				relay.SetReadDeadline(time.Now().Add(testTimeout))
				buf := make([]byte, 1500)
				n, from, err := relay.ReadFrom(buf)
				if err != nil {
					t.Fatalf("ReadFrom relay: %v", err)
				}
				if got := string(buf[:n]); got != string(msg) {
					t.Errorf("echo: got %q, want %q", got, msg)
				}
				if from.String() != peer.Addr().String() {
					t.Errorf("echo from %v, want the peer %v", from, peer.Addr())
				}
			}
			// The peer saw the relayed address, not the client.
			from := peer.Senders()
			if got := from[relayed.String()]; got != 5 {
				t.Errorf("peer got %d datagrams from the relayed address %v, want 5 (all: %v)", got, relayed, from)
			}
		})
	}
}

// refusedCases are credentials the server must refuse, with the reason it
// logs.
func TestCredentialsRefused(t *testing.T) {
	s := newTestServer(t, nil)
	other := newTestServer(t, func(c *Config) { c.Secret = []byte("another secret") })
	good := s.Credentials("alice", time.Hour)
	exp := strconv.FormatInt(good.Expires.Unix(), 10)

	for _, tc := range []struct {
		name, username, realm, password string
		reason                          string // in the log line
	}{
		{"forged password", good.Username, "", password([]byte("guess"), good.Username), "bad password"},
		{"password of another user", exp + ":mallory", "", good.Password, "bad password"},
		{"later expiry with old password", strconv.FormatInt(good.Expires.Unix()+86400, 10) + ":alice", "", good.Password, "bad password"},
		{"another server's secret", other.Credentials("alice", time.Hour).Username, "", other.Credentials("alice", time.Hour).Password, "bad password"},
		{"wrong realm", good.Username, "evil.test", good.Password, "wrong realm"},
		{"no expiry", "alice", "", password([]byte("test secret"), "alice"), "malformed username"},
		{"negative expiry", "-1:alice", "", password([]byte("test secret"), "-1:alice"), "malformed username"},
		{"signed expiry", "+" + exp + ":alice", "", password([]byte("test secret"), "+"+exp+":alice"), "malformed username"},
		{"non-numeric expiry", "soon:alice", "", password([]byte("test secret"), "soon:alice"), "malformed username"},
		{"empty user", exp + ":", "", password([]byte("test secret"), exp+":"), "malformed username"},
		{"overflowing expiry", "99999999999999999999:alice", "", password([]byte("test secret"), "99999999999999999999:alice"), "malformed username"},
		{"expiry past year 9999", "9223372036854775807:alice", "", password([]byte("test secret"), "9223372036854775807:alice"), "malformed username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := listenUDP(t)
			if code := rawAllocate(t, conn, s.udpAddr, tc.username, tc.realm, tc.password); code != int(stun.CodeBadRequest) {
				t.Errorf("Allocate: got code %d, want %d (refused)", code, stun.CodeBadRequest)
			}
			if len(s.logs.find("credentials refused", tc.reason, conn.LocalAddr().String())) == 0 {
				t.Errorf("no log line `credentials refused` with %q for client %v; logs:\n%s", tc.reason, conn.LocalAddr(), s.logs.all())
			}
		})
	}

	t.Run("pion client with forged password", func(t *testing.T) {
		cred := good
		cred.Password = password([]byte("guess"), good.Username)
		client := turnClient(t, listenUDP(t), s.udpAddr, cred)
		if _, err := client.Allocate(); err == nil {
			t.Fatal("Allocate with a forged password succeeded")
		} else if code := turnCode(err); code != int(stun.CodeBadRequest) {
			t.Errorf("Allocate: got %v (code %d), want code %d", err, code, stun.CodeBadRequest)
		}
	})

	// The control: the same raw requests with good credentials succeed.
	if code := rawAllocate(t, listenUDP(t), s.udpAddr, good.Username, "", good.Password); code != 0 {
		t.Errorf("good credentials: got error %d, want success", code)
	}
	if code := rawAllocate(t, listenUDP(t), s.udpAddr, good.Username, "pc2.test", good.Password); code != 0 {
		t.Errorf("good credentials, realm given: got error %d, want success", code)
	}
	if strings.Contains(s.logs.all(), good.Password) {
		t.Error("a password appears in the log")
	}
}

// Expiry follows the injected clock, to the second.
func TestCredentialsExpire(t *testing.T) {
	s := newTestServer(t, nil)
	cred := s.Credentials("alice", time.Hour)

	s.clock.Advance(time.Hour - time.Second)
	if code := rawAllocate(t, listenUDP(t), s.udpAddr, cred.Username, "", cred.Password); code != 0 {
		t.Fatalf("one second before expiry: got error %d, want success", code)
	}

	s.clock.Advance(time.Second)
	conn := listenUDP(t)
	if code := rawAllocate(t, conn, s.udpAddr, cred.Username, "", cred.Password); code != int(stun.CodeBadRequest) {
		t.Errorf("at expiry: got code %d, want %d", code, stun.CodeBadRequest)
	}
	client := turnClient(t, listenUDP(t), s.udpAddr, cred)
	if _, err := client.Allocate(); err == nil {
		t.Error("pion client allocated with expired credentials")
	}
	if len(s.logs.find("credentials refused", "expired", conn.LocalAddr().String())) == 0 {
		t.Errorf("no `expired` refusal logged; logs:\n%s", s.logs.all())
	}

	// Fresh credentials work again.
	fresh := s.Credentials("alice", time.Minute)
	if code := rawAllocate(t, listenUDP(t), s.udpAddr, fresh.Username, "", fresh.Password); code != 0 {
		t.Errorf("fresh credentials: got error %d, want success", code)
	}
}

func TestAllocationLimitPerUser(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxAllocationsPerUser = 2 })
	alice := s.Credentials("alice", time.Hour)

	var relays []net.PacketConn
	for i := range 2 {
		relay, err := turnClient(t, listenUDP(t), s.udpAddr, alice).Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		relays = append(relays, relay)
	}

	// Third one refused, also with freshly issued credentials and over TCP:
	// the limit counts the user, not the username or the transport.
	for _, tc := range []struct {
		name   string
		conn   net.PacketConn
		server net.Addr
		cred   Credentials
	}{
		{"same credentials", listenUDP(t), s.udpAddr, alice},
		{"fresh credentials", listenUDP(t), s.udpAddr, s.Credentials("alice", 2*time.Hour)},
		{"over TCP", dialTCP(t, s.tcpAddr), s.tcpAddr, alice},
	} {
		_, err := turnClient(t, tc.conn, tc.server, tc.cred).Allocate()
		if code := turnCode(err); code != int(stun.CodeAllocQuotaReached) {
			t.Errorf("%s: third allocation: got %v, want error %d", tc.name, err, stun.CodeAllocQuotaReached)
		}
	}
	if len(s.logs.find("allocation refused", "per-user limit", "alice")) == 0 {
		t.Errorf("no per-user refusal logged; logs:\n%s", s.logs.all())
	}

	// Another user is not affected.
	if _, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("bob", time.Hour)).Allocate(); err != nil {
		t.Errorf("bob: %v", err)
	}

	// Releasing one allocation makes room again.
	relays[0].Close()
	testenv.WaitFor(t, testTimeout, "the released allocation to go", func() bool { return s.Allocations() == 2 })
	if _, err := turnClient(t, listenUDP(t), s.udpAddr, alice).Allocate(); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

// Allocate requests on different TCP connections are handled concurrently;
// the limit still holds exactly.
func TestAllocationLimitConcurrent(t *testing.T) {
	const limit, clients = 3, 12
	s := newTestServer(t, func(c *Config) {
		c.MaxAllocationsPerUser = limit
		// A slow bind holds each Allocate between the quota check and
		// the allocation's creation, where a naive count would let all
		// of them through.
		c.ListenPacket = func(network, addr string) (net.PacketConn, error) {
			time.Sleep(50 * time.Millisecond)
			return net.ListenPacket(network, addr)
		}
	})
	cred := s.Credentials("alice", time.Hour)
	conns := make([]net.PacketConn, clients)
	for i := range conns {
		conns[i] = dialTCP(t, s.tcpAddr)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, quota := 0, 0
	for _, conn := range conns {
		wg.Go(func() {
			code, err := tryRawAllocate(conn, s.tcpAddr, cred.Username, "", cred.Password)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Error(err)
			case code == 0:
				ok++
			case code == int(stun.CodeAllocQuotaReached):
				quota++
			default:
				t.Errorf("allocate: got code %d", code)
			}
		})
	}
	wg.Wait()
	if ok != limit || quota != clients-limit {
		t.Errorf("got %d allocations and %d quota refusals, want %d and %d", ok, quota, limit, clients-limit)
	}
}

func TestAllocationLimitTotal(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxAllocations = 2 })
	for _, user := range []string{"alice", "bob"} {
		if _, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials(user, time.Hour)).Allocate(); err != nil {
			t.Fatalf("%s: %v", user, err)
		}
	}
	_, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("carol", time.Hour)).Allocate()
	if code := turnCode(err); code != int(stun.CodeInsufficientCapacity) {
		t.Errorf("third allocation: got %v, want error %d", err, stun.CodeInsufficientCapacity)
	}
	if len(s.logs.find("allocation refused", "server limit")) == 0 {
		t.Errorf("no server-limit refusal logged; logs:\n%s", s.logs.all())
	}
	if got := s.Allocations(); got != 2 {
		t.Errorf("Allocations: got %d, want 2", got)
	}
}

func TestPortRange(t *testing.T) {
	// A port that was free a moment ago; a range of one makes the second
	// allocation fail for want of ports.
	probe, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
	probe.Close()

	s := newTestServer(t, func(c *Config) { c.MinPort, c.MaxPort = port, port })
	relay, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("alice", time.Hour)).Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if got := relay.LocalAddr().(*net.UDPAddr).Port; got != int(port) {
		t.Errorf("relayed port: got %d, want %d", got, port)
	}
	_, err = turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("bob", time.Hour)).Allocate()
	if code := turnCode(err); code != int(stun.CodeInsufficientCapacity) {
		t.Errorf("allocation with the range used up: got %v, want error %d", err, stun.CodeInsufficientCapacity)
	}
	if got := s.Allocations(); got != 1 {
		t.Errorf("Allocations after a failed bind: got %d, want 1", got)
	}
}

// By default (PublicPeer) the relay does not reach loopback peers.
func TestPeerPolicy(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.AllowPeer = nil })
	peer := coturntest.NewEchoPeer(t)
	client := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("alice", time.Hour))
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	defer relay.Close()
	// (pion's client does not say which error code it got.)
	if err := client.CreatePermission(peer.Addr()); err == nil {
		t.Error("CreatePermission for a loopback peer succeeded")
	}
	if _, err := relay.WriteTo([]byte("let me in"), peer.Addr()); err == nil {
		t.Error("WriteTo a loopback peer succeeded")
	}
	if len(s.logs.find("peer refused", "127.0.0.1")) == 0 {
		t.Errorf("no peer refusal logged; logs:\n%s", s.logs.all())
	}
}

func TestPublicPeer(t *testing.T) {
	for addr, want := range map[string]bool{
		"203.0.113.7":        true,
		"8.8.8.8":            true,
		"2001:4860::8888":    true,
		"::ffff:8.8.8.8":     true,
		"127.0.0.1":          false,
		"::1":                false,
		"10.1.2.3":           false,
		"172.16.0.1":         false,
		"192.168.1.1":        false,
		"100.64.0.1":         false,
		"169.254.1.1":        false,
		"fe80::1":            false,
		"fd00::1":            false,
		"224.0.0.1":          false,
		"255.255.255.255":    false,
		"0.0.0.0":            false,
		"0.1.2.3":            false,
		"240.0.0.1":          false,
		"198.18.0.1":         false,
		"::":                 false,
		"::ffff:127.0.0.1":   false,
		"::ffff:192.168.0.1": false,
	} {
		if got := PublicPeer(netip.MustParseAddr(addr)); got != want {
			t.Errorf("PublicPeer(%s): got %v, want %v", addr, got, want)
		}
	}
}

// Garbage on either listener is dropped or refused, and the server keeps
// serving.
func TestBadPackets(t *testing.T) {
	s := newTestServer(t, nil)
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	stunHeader := func(length uint16) []byte {
		b := make([]byte, 20)
		binary.BigEndian.PutUint16(b[0:], 0x0001) // Binding request
		binary.BigEndian.PutUint16(b[2:], length)
		binary.BigEndian.PutUint32(b[4:], 0x2112A442) // magic cookie
		return b
	}
	badAttr := append(stunHeader(8), 0x00, 0x20, 0xff, 0xff, 1, 2, 3, 4) // attribute longer than the message
	allocNoTransport := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	unknownMethod := stun.MustBuild(stun.TransactionID, stun.NewType(stun.Method(0x0fff), stun.ClassRequest))
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication))
	channelData := []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4} // channel 0x4000, not bound

	packets := [][]byte{
		{}, {0}, random(7), random(19), random(100), random(1600), random(9000),
		stunHeader(0)[:19], stunHeader(400), badAttr,
		allocNoTransport.Raw, unknownMethod.Raw, indication.Raw, channelData,
	}
	for range 50 {
		packets = append(packets, random(20+int(random(1)[0])))
	}

	udp := listenUDP(t)
	for _, p := range packets {
		if _, err := udp.WriteTo(p, s.udpAddr); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	for _, p := range packets {
		if len(p) == 0 {
			continue
		}
		c, err := net.DialTCP("tcp4", nil, s.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(p)
		c.Close()
	}
	// A TCP client that claims a long frame and stalls is not waited for
	// by the others.
	stall, err := net.DialTCP("tcp4", nil, s.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer stall.Close()
	stall.Write(stunHeader(1000))

	// Still serving STUN and TURN on both listeners.
	if _, err := pc2stun.Reflexive(testContext(t), udp, s.udpAddr); err != nil {
		t.Errorf("STUN after garbage: %v", err)
	}
	for _, tc := range []struct {
		conn   net.PacketConn
		server net.Addr
	}{{listenUDP(t), s.udpAddr}, {dialTCP(t, s.tcpAddr), s.tcpAddr}} {
		cred := s.Credentials("alice", time.Hour)
		if code := rawAllocate(t, tc.conn, tc.server, cred.Username, "", cred.Password); code != 0 {
			t.Errorf("allocate over %s after garbage: got error %d", tc.server.Network(), code)
		}
	}
}

func TestCloseReleasesRelays(t *testing.T) {
	s := newTestServer(t, nil)
	relay, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("alice", time.Hour)).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	port := relay.LocalAddr().(*net.UDPAddr).Port
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := s.Allocations(); got != 0 {
		t.Errorf("Allocations after Close: got %d, want 0", got)
	}
	// The relay port is free again.
	c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Errorf("relay port %d still bound after Close: %v", port, err)
	} else {
		c.Close()
	}
}

// TestAllocationLimitPerAddr (issue 16, finding 4): users are free to
// make (any fresh DID attaching gets credentials), so allocations are
// also bounded per client address: fresh users from one address are
// refused past MaxAllocationsPerAddr, and a release makes room again.
func TestAllocationLimitPerAddr(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxAllocationsPerUser = 2; c.MaxAllocationsPerAddr = 3 })
	var relays []net.PacketConn
	for i := range 3 {
		relay, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials(fmt.Sprintf("did%d", i), time.Hour)).Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		relays = append(relays, relay)
	}
	_, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("fresh", time.Hour)).Allocate()
	if code := turnCode(err); code != int(stun.CodeAllocQuotaReached) {
		t.Fatalf("a fresh user past the address's limit: got %v, want error %d", err, stun.CodeAllocQuotaReached)
	}
	if len(s.logs.find("allocation refused", "per-address limit")) == 0 {
		t.Errorf("no per-address refusal logged; logs:\n%s", s.logs.all())
	}
	relays[0].Close()
	testenv.WaitFor(t, testTimeout, "the released allocation to go", func() bool { return s.Allocations() == 2 })
	if _, err := turnClient(t, listenUDP(t), s.udpAddr, s.Credentials("fresh", time.Hour)).Allocate(); err != nil {
		t.Errorf("after a release: %v", err)
	}
}
