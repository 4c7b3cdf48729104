package dht

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// TestDialPrefersTCP: a client that knows a server's TCP, QUIC and
// WebSocket addresses connects over TCP (and QUIC and WebSocket still
// work alone). The WebSocket listener is not among the addresses the
// server announces (a supernode's is its gateway's loopback end).
func TestDialPrefersTCP(t *testing.T) {
	_, skey, _ := ed25519.GenerateKey(nil)
	srv, err := New(context.Background(), Config{Key: skey, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0",
		"/ip4/127.0.0.1/tcp/0/ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var ws ma.Multiaddr
	for _, a := range srv.Host().Network().ListenAddresses() {
		if IsWebSocket(a) {
			ws = a
		}
	}
	for _, a := range srv.AddrInfo().Addrs {
		if IsWebSocket(a) {
			t.Errorf("the server announces its WebSocket listener %s", a)
		}
	}
	if ws == nil {
		t.Fatal("no WebSocket listener")
	}
	for _, tc := range []struct {
		name, want string
		only       string
	}{{"all", "tcp", ""}, {"quic only", "quic-v1", "quic-v1"}, {"websocket only", "websocket", "ws"}} {
		_, ckey, _ := ed25519.GenerateKey(nil)
		c, err := New(context.Background(), Config{Key: ckey, Mode: ModeClient})
		if err != nil {
			t.Fatal(err)
		}
		ai := srv.AddrInfo()
		ai.Addrs = append(ai.Addrs, ws)
		if tc.only == "ws" {
			ai.Addrs = []ma.Multiaddr{ws}
		} else if tc.only != "" {
			ai.Addrs = nil
			for _, a := range srv.AddrInfo().Addrs {
				if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
					ai.Addrs = append(ai.Addrs, a)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.Host().Connect(ctx, ai)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		conns := c.Host().Network().ConnsToPeer(srv.Host().ID())
		if len(conns) != 1 || string(conns[0].ConnState().Transport) != tc.want {
			t.Errorf("%s: connections %v, want one over %s", tc.name, conns, tc.want)
		}
		c.Close()
	}
}

// TestRankRemembers: the address a host last connected over is dialed at
// once next time, beside plain TCP (a supernode's WebSocket address on a
// network that let only port 443 out); the others wait their fallback
// delay; without a memory the ranking is tcpFirst's.
func TestRankRemembers(t *testing.T) {
	tcp := ma.StringCast("/ip4/203.0.113.10/tcp/8090")
	quic := ma.StringCast("/ip4/203.0.113.10/udp/8090/quic-v1")
	ws := ma.StringCast("/ip4/203.0.113.10/tcp/443/tls/sni/relay.pc2.test/ws")
	delays := func(w *lastWorked) map[string]time.Duration {
		out := map[string]time.Duration{}
		for _, d := range w.rank([]ma.Multiaddr{tcp, quic, ws}) {
			out[d.Addr.String()] = d.Delay
		}
		return out
	}
	w := &lastWorked{}
	if d := delays(w); d[tcp.String()] != 0 || d[quic.String()] != fallbackDelay || d[ws.String()] != fallbackDelay {
		t.Fatalf("without a memory: %v", d)
	}
	// The connection's address, without the server name the dial had.
	w.remember(ma.StringCast("/ip4/203.0.113.10/tcp/443/tls/ws"))
	if d := delays(w); d[tcp.String()] != 0 || d[quic.String()] != fallbackDelay || d[ws.String()] != 0 {
		t.Fatalf("after the WebSocket address worked: %v", d)
	}
}
