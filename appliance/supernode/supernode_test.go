package supernode

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/coturntest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/tunnel"
)

// TestTURNThroughAttach runs a supernode with TURN, attaches a node to
// it, and has coturn's turnutils_uclient allocate and relay with the
// credentials the node got over its attach stream. The node's STUN check
// against the same server finds it not behind a NAT (loopback).
func TestTURNThroughAttach(t *testing.T) {
	coturntest.Require(t)
	dir := t.TempDir()
	cfg := &Config{KeyFile: filepath.Join(dir, "supernode.key"), CreateKey: true, DataDir: filepath.Join(dir, "data"),
		Listen: []string{"/ip4/127.0.0.1/tcp/0"}, TURNListen: "127.0.0.1:0", TURNAllowPrivatePeers: true,
		AllowPrivateDials: true}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Logger: testlog.New(t, 0), Ready: func(a []string) { ready <- a }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	var addrs []string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("supernode: %v", err)
	}
	ais, err := dht.ParseAddrInfos(addrs)
	if err != nil {
		t.Fatal(err)
	}

	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	c, err := tunnel.New(tunnel.Config{Host: n.Host(), Key: key, Supernodes: ais, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan struct{})
	go func() { c.Run(cctx); close(cdone) }()
	t.Cleanup(func() { ccancel(); <-cdone })

	var creds []relay.TURNInfo
	var st tunnel.Status
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		creds, st = c.TURN(), c.Status()
		if len(creds) == 1 && st.STUN != nil {
			break
		}
	}
	if len(creds) != 1 || st.STUN == nil {
		t.Fatalf("no TURN credentials or STUN check after attaching: %v, status %+v", creds, st)
	}
	if st.STUN.BehindNAT || !strings.HasPrefix(st.STUN.Reflexive, "127.0.0.1:") || st.STUN.Error != "" {
		t.Fatalf("STUN check on loopback: %+v, want 127.0.0.1 and not behind a NAT", st.STUN)
	}
	if ls := st.Supernodes[0]; ls.TURN == nil || len(ls.TURN.URIs) == 0 {
		t.Fatalf("status does not show the TURN server: %+v", ls)
	}
	cred := creds[0]
	if !strings.HasSuffix(cred.Username, ":"+mustID(t, key)) {
		t.Fatalf("credentials are not the node's: %q", cred.Username)
	}
	ports := uriPorts(t, cred.URIs)

	peer := coturntest.NewEchoPeer(t)
	const msgs = 10
	for _, transport := range []string{"udp", "tcp"} {
		args := []string{"-u", cred.Username, "-w", cred.Password, "-p", ports[transport],
			"-e", "127.0.0.1", "-r", strconv.Itoa(peer.Addr().Port), "-n", strconv.Itoa(msgs), "-c", "-X"}
		if transport == "tcp" {
			args = append(args, "-t")
		}
		res, err := coturntest.Run(t, append(args, "127.0.0.1")...)
		if err != nil || res.Received != msgs || res.Lost != 0 {
			t.Fatalf("uclient over %s with the node's credentials: err %v, received %d, lost %d. Output:\n%s",
				transport, err, res.Received, res.Lost, res.Output)
		}
	}
	if got := peer.Received(); got != 2*msgs {
		t.Fatalf("peer received %d datagrams, want %d", got, 2*msgs)
	}

	// The same username with a password of someone's guessing is refused.
	res, err := coturntest.Run(t, "-u", cred.Username, "-w", "guessed", "-p", ports["udp"],
		"-e", "127.0.0.1", "-r", strconv.Itoa(peer.Addr().Port), "-n", "3", "-c", "127.0.0.1")
	if err == nil || res.Received != 0 {
		t.Fatalf("uclient with a wrong password: err %v, received %d; want refused. Output:\n%s", err, res.Received, res.Output)
	}
}

func mustID(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return id.DID()
}

// uriPorts maps "udp" and "tcp" to the TURN server's ports in uris.
func uriPorts(t *testing.T, uris []string) map[string]string {
	t.Helper()
	ports := map[string]string{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "turn" {
			continue
		}
		_, port, err := net.SplitHostPort(pu.Opaque)
		if err != nil {
			t.Fatalf("TURN URI %q: %v", u, err)
		}
		ports[pu.Query().Get("transport")] = port
	}
	if ports["udp"] == "" || ports["tcp"] == "" {
		t.Fatalf("TURN URIs %v lack a UDP or TCP server", uris)
	}
	return ports
}

// TestTURNRelayIP: the configured address first, then the listener's own,
// then a public interface address before a private one, never loopback.
func TestTURNRelayIP(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lo, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	ifaces := func(addrs ...string) func() ([]net.Addr, error) {
		return func() ([]net.Addr, error) {
			var out []net.Addr
			for _, a := range addrs {
				ip, n, _ := net.ParseCIDR(a)
				out = append(out, &net.IPNet{IP: ip, Mask: n.Mask})
			}
			return out, nil
		}
	}
	for _, c := range []struct {
		name   string
		cfg    Config
		udp    net.PacketConn
		ifaces []string
		want   string
	}{
		{"configured", Config{TURNRelayIP: "198.51.100.7"}, pc, []string{"203.0.113.5/24"}, "198.51.100.7"},
		{"listener", Config{}, lo, []string{"203.0.113.5/24"}, "127.0.0.1"},
		{"public first", Config{}, pc, []string{"127.0.0.1/8", "fe80::1/64", "192.168.1.2/24", "203.0.113.5/24"}, "203.0.113.5"},
		{"private", Config{}, pc, []string{"127.0.0.1/8", "10.0.2.15/24"}, "10.0.2.15"},
	} {
		got, err := turnRelayIP(&c.cfg, c.udp, ifaces(c.ifaces...))
		if err != nil || got.String() != c.want {
			t.Errorf("%s: got %v %v, want %s", c.name, got, err, c.want)
		}
	}
	if _, err := turnRelayIP(&Config{}, pc, ifaces("127.0.0.1/8", "::1/128")); err == nil || !strings.Contains(err.Error(), "turn_relay_ip") {
		t.Errorf("loopback only: got %v, want an error naming turn_relay_ip", err)
	}
}
