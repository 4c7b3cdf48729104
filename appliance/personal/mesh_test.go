package personal

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestMeshVisitors (issue 20): two operators, each with a domain and a
// supernode that has the other's domain in its mesh. A visitor whose
// request for bob.ela.test reaches pc2.test's gateway gets bob's node
// (ela.test's record lets the mesh serve it); alice.pc2.test, whose
// record does not, is answered 421 at ela.test's gateway with where it
// is served, never "not served here" and never the node.
func TestMeshVisitors(t *testing.T) {
	_, opA, _ := ed25519.GenerateKey(nil)
	_, opB, _ := ed25519.GenerateKey(nil)
	a := gwtest.Start(t, gwtest.Options{Domain: "pc2.test", Operator: opA,
		Mesh: []supernode.DomainTrust{{Domain: "ela.test", Operator: didOf(opB)}}})
	b := gwtest.Start(t, gwtest.Options{Domain: "ela.test", Operator: opB, Bootstrap: a.Addrs, MeshOpen: true,
		Mesh: []supernode.DomainTrust{{Domain: "pc2.test", Operator: didOf(opA)}}})

	bob := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: b.Addrs, PinSupernodes: true,
		NameServices: []cloud.NameService{{Domain: "ela.test", API: b.API}}}
	setUpNode(t, bob, Options{}, "bob")
	alice := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: a.Addrs, PinSupernodes: true,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: a.API}}}
	setUpNode(t, alice, Options{}, "alice")

	visit := visitStatus
	testenv.WaitFor(t, 30*time.Second, "bob.ela.test through pc2.test's gateway", func() bool {
		code, body := visit(a, "bob.ela.test")
		return code == http.StatusOK && strings.Contains(body, `"name":"bob.ela.test"`)
	})
	testenv.WaitFor(t, 30*time.Second, "alice.pc2.test at her own gateway", func() bool {
		code, _ := visit(a, "alice.pc2.test")
		return code == http.StatusOK
	})
	code, body := visit(b, "alice.pc2.test")
	if code != http.StatusMisdirectedRequest || !strings.Contains(body, "pc2.test") {
		t.Fatalf("alice.pc2.test at ela.test's gateway: %d %s", code, body)
	}
	if code, _ := visit(a, "carol.example.test"); code != http.StatusNotFound {
		t.Fatalf("a domain of no operator of the mesh: %d", code)
	}
}

// TestOtherOperators (issue 20): a node whose owner allows it attaches
// to a supernode of another operator of its operator's mesh too, learned
// from its name service's /api/supernodes; when its own operator's
// supernode dies, visitors still reach it through the other operator's
// gateway (its domain's record lets the mesh serve its names).
func TestOtherOperators(t *testing.T) {
	_, opA, _ := ed25519.GenerateKey(nil)
	_, opB, _ := ed25519.GenerateKey(nil)
	a := gwtest.Start(t, gwtest.Options{Domain: "pc2.test", Operator: opA, MeshOpen: true,
		Mesh: []supernode.DomainTrust{{Domain: "ela.test", Operator: didOf(opB)}}})
	b := gwtest.Start(t, gwtest.Options{Domain: "ela.test", Operator: opB, Bootstrap: a.Addrs,
		Mesh: []supernode.DomainTrust{{Domain: "pc2.test", Operator: didOf(opA)}}})
	bPeer := b.Addrs[0][strings.LastIndex(b.Addrs[0], "/")+1:]
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: a.Addrs, OtherOperators: true,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: a.API}}}
	base := setUpNode(t, cfg, Options{DiscoverEvery: 500 * time.Millisecond}, "alice")
	local := cloudtest.New(t, base, nil)
	testenv.WaitFor(t, 30*time.Second, "the node to attach to the other operator's supernode too", func() bool {
		var st Status
		if json.Unmarshal([]byte(local.Get("/api/status").Body), &st) != nil || st.Tunnel == nil {
			return false
		}
		for _, l := range st.Tunnel.Supernodes {
			if l.ID == bPeer && l.Attached {
				return true
			}
		}
		return false
	})
	a.Stop()
	testenv.WaitFor(t, 30*time.Second, "alice.pc2.test through the other operator's gateway", func() bool {
		time.Sleep(100 * time.Millisecond)
		req, _ := http.NewRequest("GET", b.API+"/api/status", nil)
		req.Host = "alice.pc2.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"name":"alice.pc2.test"`)
	})
}

// TestEntryPointOwnOperator (issue 20): a node that starts from its name
// service's /api/supernodes, which lists the mesh's other operators'
// supernodes too, takes only its own operator's unless its owner allows
// the others.
func TestEntryPointOwnOperator(t *testing.T) {
	_, opA, _ := ed25519.GenerateKey(nil)
	_, opB, _ := ed25519.GenerateKey(nil)
	a := gwtest.Start(t, gwtest.Options{Domain: "pc2.test", Operator: opA,
		Mesh: []supernode.DomainTrust{{Domain: "ela.test", Operator: didOf(opB)}}})
	b := gwtest.Start(t, gwtest.Options{Domain: "ela.test", Operator: opB, Bootstrap: a.Addrs,
		Mesh: []supernode.DomainTrust{{Domain: "pc2.test", Operator: didOf(opA)}}})
	bPeer := b.Addrs[0][strings.LastIndex(b.Addrs[0], "/")+1:]
	// The gateway lists B once it has read ela.test's record.
	testenv.WaitFor(t, 30*time.Second, "pc2.test's gateway to list the other operator's supernode", func() bool {
		l, err := (&namesapi.Client{API: a.API}).Supernodes(context.Background(), "pc2.test")
		return err == nil && len(l.Supernodes) == 2 && l.Supernodes[1].Domain == "ela.test"
	})
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), CreateKey: true, Mode: ModeRelayed, PinSupernodes: false,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: a.API}}}
	base, _ := startNode(t, cfg, Options{DiscoverEvery: time.Hour})
	local := cloudtest.New(t, base, nil)
	var st Status
	testenv.WaitFor(t, 30*time.Second, "the node to attach", func() bool {
		return json.Unmarshal([]byte(local.Get("/api/status").Body), &st) == nil && st.Tunnel != nil && st.Tunnel.Mode == "relayed"
	})
	for _, l := range st.Tunnel.Supernodes {
		if l.ID == bPeer {
			t.Fatalf("the node took the other operator's supernode without its owner's leave: %+v", st.Tunnel.Supernodes)
		}
	}
}

// visitStatus asks gw's plain HTTP port for host's /api/status, as a
// visitor whose DNS points there.
func visitStatus(gw *gwtest.Gateway, host string) (int, string) {
	// Tests poll as one client: slow enough for its limit.
	time.Sleep(100 * time.Millisecond)
	req, _ := http.NewRequest("GET", gw.API+"/api/status", nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
