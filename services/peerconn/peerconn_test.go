package peerconn_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/peerconn"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/relay/relayserver"
	"github.com/pc2/pc2/services/tunnel"
)

type node struct {
	key ed25519.PrivateKey
	id  identity.ID
	dht *dht.Node
}

func newNode(t *testing.T, listen bool) node {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := dht.Config{Key: key, Mode: dht.ModeClient, Logger: testlog.New(t, 8)}
	if listen {
		cfg.Mode, cfg.ListenAddrs = dht.ModeServer, []string{"/ip4/127.0.0.1/tcp/0"}
	}
	n, err := dht.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	return node{key, id, n}
}

// echo accepts on l and echoes each connection, after saying who it is
// from.
func echo(t *testing.T, l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, c.(*peerconn.Conn).Peer().DID()+"\n")
				io.Copy(c, c)
			}()
		}
	}()
}

func roundTrip(t *testing.T, c net.Conn, from identity.ID) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	want := from.DID() + "\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("the other side saw %q (%v), want %q", got, err, want)
	}
	io.WriteString(c, "ciphertext of a backup")
	buf := make([]byte, len("ciphertext of a backup"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ciphertext of a backup" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

// TestDial: a node behind a relay (attached, no listener of its own) and
// a direct one take connections from the node they allow, through the
// relay or directly, and each side knows the other by its key; a third
// key's connection is closed after the handshake.
func TestDial(t *testing.T) {
	ctx := testenv.Context(t, time.Minute)
	sn := newNode(t, true)
	r, err := relayserver.New(relayserver.Config{Host: sn.dht.Host(), ListenIP: "127.0.0.1", PortMin: 21000, PortMax: 21003, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	alice, mallory := newNode(t, false), newNode(t, false)
	allowAlice := func(id identity.ID) bool { return id == alice.id }

	bob := newNode(t, false) // behind NAT: attached to sn's relay
	tc, err := tunnel.New(tunnel.Config{Host: bob.dht.Host(), Key: bob.key,
		Supernodes: []peer.AddrInfo{{ID: sn.dht.Host().ID(), Addrs: sn.dht.Host().Addrs()}}, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	go tc.Run(ctx)
	testenv.WaitFor(t, 20*time.Second, "bob attached", func() bool { return len(tc.Attached()) == 1 })
	lb, err := peerconn.Listen(bob.dht.Host(), bob.key, allowAlice, testlog.New(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	echo(t, lb)
	bobRec := &records.DID{ID: bob.id, Supernodes: tc.Attached()}

	c, err := peerconn.Dial(ctx, alice.dht.Host(), alice.key, bobRec)
	if err != nil {
		t.Fatalf("alice to bob through the relay: %v", err)
	}
	if c.Peer() != bob.id {
		t.Errorf("alice reached %s, want bob", c.Peer().DID())
	}
	roundTrip(t, c, alice.id)
	c.Close()

	// Mallory's handshake completes, then bob closes.
	c, err = peerconn.Dial(ctx, mallory.dht.Host(), mallory.key, bobRec)
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("mallory's connection: read %d bytes, %v; want it closed by bob", n, err)
		}
		c.Close()
	}

	// Direct: carol listens herself.
	carol := newNode(t, true)
	lc, err := peerconn.Listen(carol.dht.Host(), carol.key, allowAlice, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	echo(t, lc)
	var direct []string
	for _, a := range carol.dht.Host().Addrs() {
		direct = append(direct, a.String())
	}
	c, err = peerconn.Dial(ctx, alice.dht.Host(), alice.key, &records.DID{ID: carol.id, Direct: direct})
	if err != nil {
		t.Fatalf("alice to carol directly: %v", err)
	}
	roundTrip(t, c, alice.id)
	c.Close()

	// Carol's address under bob's name: the handshake (libp2p's, then
	// ours) refuses a node that is not the one asked for.
	if c, err := peerconn.Dial(ctx, alice.dht.Host(), alice.key, &records.DID{ID: bob.id, Direct: direct}); err == nil {
		c.Close()
		t.Error("a connection to carol's address passed as bob")
	}
}

// TestHandshakeBound: a stranger's peer streams that never finish their
// handshake hold at most 16 handshakes; the next stream is reset at
// once, and the held ones end after HandshakeTimeout.
func TestHandshakeBound(t *testing.T) {
	ctx := testenv.Context(t, time.Minute)
	bob, stranger := newNode(t, true), newNode(t, false)
	l, err := peerconn.Listen(bob.dht.Host(), bob.key, func(identity.ID) bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := stranger.dht.Host().Connect(ctx, peer.AddrInfo{ID: bob.dht.Host().ID(), Addrs: bob.dht.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	open := func() network.Stream {
		t.Helper()
		st, err := stranger.dht.Host().NewStream(ctx, bob.dht.Host().ID(), relay.ProtocolPeer)
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{22}) // the start of a hello that never comes
		return st
	}
	for range 16 {
		defer open().Close()
	}
	time.Sleep(200 * time.Millisecond) // bob's handlers took them
	st := open()
	defer st.Close()
	start := time.Now()
	st.SetReadDeadline(start.Add(5 * time.Second))
	_, err = st.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() || time.Since(start) > 2*time.Second {
		t.Fatalf("the 17th handshake: %v after %v, want the stream reset at once", err, time.Since(start))
	}
}
