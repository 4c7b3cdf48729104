package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/echotest"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/services/netconf"
)

// The scenarios run each supernode and node as a process of this test
// binary (TestHelper, selected by PC2_E2E_ROLE) inside its namespace, from
// a config file the test writes: every socket the service opens lives in
// that namespace, and killing the process is a machine dying.

// TestHelper is not a test: it is a supernode or node process of the
// scenarios.
func TestHelper(t *testing.T) {
	role := os.Getenv("PC2_E2E_ROLE")
	if role == "" {
		t.Skip("helper process of the end-to-end scenarios")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if role != "supernode" && role != "node" && role != "attacker" && role != "operator" {
		t.Fatalf("unknown role %q", role)
	}
	ctx := context.Background()
	path := os.Getenv("PC2_E2E_CONFIG")
	var err error
	switch role {
	case "supernode":
		var cfg *supernode.Config
		if cfg, err = supernode.LoadConfig(path); err == nil {
			err = supernode.Run(ctx, cfg, supernode.Options{Logger: log, Ready: func([]string) { fmt.Println("ready") }})
		}
	case "attacker":
		err = runAttacker(path)
	case "operator":
		err = runOperator(ctx, path, log)
	case "node":
		var cfg *personal.Config
		if cfg, err = personal.LoadConfig(path); err == nil {
			// As `pc2 node` does: a network change (a link back up, a
			// new address) makes the node reattach at once.
			var node atomic.Pointer[personal.Node]
			go netconf.OnChange(ctx, log, 200*time.Millisecond, func() {
				if n := node.Load(); n != nil {
					n.Reconnect()
				}
			})
			err = personal.Run(ctx, cfg, personal.Options{Logger: log,
				// The echo service's paths beside the personal cloud at /.
				Routes: echotest.Register,
				Started: func(n *personal.Node) {
					node.Store(n)
					fmt.Println("ready")
				}})
		}
	}
	if err != nil {
		log.Error(role+" failed", "err", err)
		t.Fatal(err)
	}
}

// start runs role (supernode or node) with cfg (written as JSON) on h,
// calling it name, and waits until it is ready.
func start(t testing.TB, h *nattest.Host, role, name string, cfg any) *nattest.Proc {
	t.Helper()
	return startEnv(t, h, role, name, cfg)
}

// startEnv is start with more environment variables for the process.
func startEnv(t testing.TB, h *nattest.Host, role, name string, cfg any, env ...string) *nattest.Proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".json")
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return nattest.StartProc(t, h, name, []string{os.Args[0], "-test.run=^TestHelper$", "-test.v"},
		append([]string{"PC2_E2E_ROLE=" + role, "PC2_E2E_CONFIG=" + path}, env...)...)
}
