package nodeproxy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/pc2/pc2/provisioning/identity"
)

func newID(t *testing.T) identity.ID {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(nil)
	id, err := identity.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestServeNode: each request reaches the node it names, with its Host
// and X-Forwarded-Host; connections are pooled per node (one dial per
// node for sequential requests) and never shared between nodes; a node
// that cannot be dialled goes to the error handler.
func TestServeNode(t *testing.T) {
	nodes := map[identity.ID]string{} // id -> backend address
	names := map[string]identity.ID{}
	for _, name := range []string{"alice", "bob"} {
		backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %s", name, r.Host, r.Header.Get("X-Forwarded-Host"))
		}))
		t.Cleanup(backend.Close)
		id := newID(t)
		nodes[id], names[name] = backend.Listener.Addr().String(), id
	}
	var mu sync.Mutex
	dials := map[identity.ID]int{}
	unreachable := newID(t)
	p, err := New(Config{
		Dial: func(ctx context.Context, id identity.ID) (net.Conn, error) {
			mu.Lock()
			dials[id]++
			mu.Unlock()
			addr, ok := nodes[id]
			if !ok {
				return nil, errors.New("no route")
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "unreachable: "+err.Error(), http.StatusBadGateway)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := names[r.URL.Query().Get("node")]
		if !ok {
			id = unreachable
		}
		p.ServeNode(w, r, id)
	}))
	t.Cleanup(front.Close)

	get := func(node string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", front.URL+"/?node="+node, nil)
		req.Host = node + ".example.test"
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, node := range []string{"alice", "bob", "alice", "bob", "alice"} {
		want := node + " " + node + ".example.test " + node + ".example.test"
		if code, body := get(node); code != 200 || body != want {
			t.Fatalf("GET for %s: got %d %q, want 200 %q", node, code, body, want)
		}
	}
	for name, id := range names {
		if dials[id] != 1 {
			t.Errorf("%s dialled %d times for its sequential requests, want 1", name, dials[id])
		}
	}
	if code, body := get("nobody"); code != 502 || body != "unreachable: no route\n" {
		t.Errorf("unreachable node: got %d %q, want 502 from the error handler", code, body)
	}
}

func TestNewWithoutDial(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Dial: no error")
	}
}
