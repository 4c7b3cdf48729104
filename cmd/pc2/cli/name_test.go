package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestNameCommands runs a supernode with the gateway for pc2.test (it
// holds the operator key) and a personal node attached to it; pc2 name
// claims the node's name, shows it, the node answers at it, and pc2 name
// release gives it up.
func TestNameCommands(t *testing.T) {
	dir := t.TempDir()
	opKey := filepath.Join(dir, "operator.key")
	if err := Execute(context.Background(), []string{"identity", "new", "--key", opKey}, Env{Stdout: io.Discard, Stderr: io.Discard}); err != nil {
		t.Fatal(err)
	}
	op, err := identity.LoadKeyFile(opKey)
	if err != nil {
		t.Fatal(err)
	}
	gw := gwtest.Start(t, gwtest.Options{Operator: op})
	api, addrs := gw.API, gw.Addrs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	nodeKey := filepath.Join(dir, "node.key")
	ncfg := &personal.Config{KeyFile: nodeKey, CreateKey: true, Mode: personal.ModeRelayed, Supernodes: addrs,
		P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}}
	nln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ndone := make(chan error, 1)
	go func() { ndone <- personal.Run(ctx, ncfg, personal.Options{Listener: nln, Logger: testlog.New(t, 0)}) }()
	defer func() { cancel(); <-ndone }()
	var nodeID identity.ID
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, id, err := loadKeyID(nodeKey); err == nil {
			nodeID = id
			break
		}
		if time.Now().After(end) {
			t.Fatal("the node made no key")
		}
	}

	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := Execute(context.Background(), args, Env{Stdout: &out, Stderr: &errb})
		return out.String() + errb.String(), err
	}
	out, err := run("name", "claim", "--key", nodeKey, "--api", api, "alice.pc2.test")
	var ni namesapi.NameInfo
	if err != nil || json.Unmarshal([]byte(out), &ni) != nil || ni.DID != nodeID.DID() {
		t.Fatalf("pc2 name claim: %v\n%s", err, out)
	}
	out, err = run("name", "show", "--api", api, "alice.pc2.test")
	if err != nil || !strings.Contains(out, nodeID.DID()) || !strings.Contains(out, `"status": "active"`) {
		t.Fatalf("pc2 name show: %v\n%s", err, out)
	}
	// The node answers at its name (once its did record lists the
	// supernode).
	var code int
	var body string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest("GET", api+"/api/status", nil)
		req.Host = "alice.pc2.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, body = resp.StatusCode, string(b)
		if code == 200 {
			break
		}
	}
	if code != 200 || !strings.Contains(body, nodeID.DID()) {
		t.Fatalf("alice.pc2.test through the gateway: %d %.300s", code, body)
	}

	otherKey := filepath.Join(dir, "other.key")
	run("identity", "new", "--key", otherKey)
	if out, err := run("name", "claim", "--key", otherKey, "--api", api, "alice.pc2.test"); err == nil || !strings.Contains(out+err.Error(), "is held by") {
		t.Fatalf("claim of a taken name: %v %s", err, out)
	}
	if out, err := run("name", "release", "--key", nodeKey, "--api", api, "alice.pc2.test"); err != nil || !strings.Contains(out, `"status": "released"`) {
		t.Fatalf("pc2 name release: %v\n%s", err, out)
	}
	if _, err := run("name", "show", "--api", api, "alice.pc2.test"); err != nil {
		t.Fatalf("show after release: %v", err)
	}
	if _, err := run("name", "claim", "--api", api, "alice.pc2.test"); ExitCode(err) != 2 {
		t.Fatalf("claim without --key: %v", err)
	}
}
