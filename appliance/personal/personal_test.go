package personal

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
)

func testSupernode(t *testing.T) *dht.Node {
	t.Helper()
	seed := sha256.Sum256([]byte("personal test supernode"))
	sn, err := dht.New(context.Background(), dht.Config{
		Key:         ed25519.NewKeyFromSeed(seed[:]),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger:      slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	return sn
}

func getStatus(t *testing.T, base string) Status {
	t.Helper()
	resp, err := http.Get(base + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFirstBootCreatesIdentityAndPublishes(t *testing.T) {
	sn := testSupernode(t)
	dir := t.TempDir()
	cfg := &Config{
		KeyFile:    filepath.Join(dir, "perm", "node.key"),
		CreateKey:  true,
		Supernodes: []string{sn.Multiaddrs()[0].String()},
		PublicURL:  "http://192.0.2.7:4200",
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Listener: ln, Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), nil))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	var st Status
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if st = getStatus(t, base); st.State == "online" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.State != "online" || st.StoredOn != 1 || !st.NewKey {
		t.Fatalf("got status %+v, want online, stored on 1, new key", st)
	}

	// The words left for the owner restore the same identity.
	fi, err := os.Stat(identity.WordsFile(cfg.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("words file mode %v, want 0600", fi.Mode().Perm())
	}
	words, _ := os.ReadFile(identity.WordsFile(cfg.KeyFile))
	key, err := identity.NodeKeyFromMnemonic(string(words), "")
	if err != nil {
		t.Fatal(err)
	}
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if id.DID() != st.DID {
		t.Fatalf("words give %s, node runs as %s", id.DID(), st.DID)
	}

	// The supernode serves the record the node published.
	rec, err := sn.ResolveDID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != st.Seq {
		t.Fatalf("status shows seq %d, supernode has %d", st.Seq, rec.Seq)
	}
	if len(rec.Services) != 1 || rec.Services[0].Endpoint != cfg.PublicURL {
		t.Fatalf("got services %+v, want the public URL", rec.Services)
	}

	// The personal cloud's wizard waits for the owner; it offers the
	// words of the identity the node made.
	if st.Setup != "wizard" {
		t.Fatalf("setup %q, want the wizard", st.Setup)
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(page), `id="create"`) || !strings.Contains(string(page), "made an identity on its first start") {
		t.Fatalf("/ is not the setup wizard: %.300q", page)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{`{"supernodes": ["x"]}`, "key_file is required"},
		{`{"key_file": "/k"}`, "supernodes is required"},
		{`{"key_file": "/k", "supernodes": ["x"], "typo": 1}`, `unknown field "typo"`},
		{`{"key_file": "/k", "supernodes": ["x"], "record_ttl": "soon"}`, "invalid duration"},
	} {
		p := filepath.Join(dir, "c.json")
		os.WriteFile(p, []byte(c.body), 0o644)
		if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.body, err, c.want)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("missing file: got %v", err)
	}
}

// TestWaitsForClock: on a board whose clock is not set yet the node serves
// its status (and wizard) but stays off the network, says why, and
// joins once the clock is set.
func TestWaitsForClock(t *testing.T) {
	sn := testSupernode(t)
	cfg := &Config{
		KeyFile:    filepath.Join(t.TempDir(), "node.key"),
		CreateKey:  true,
		Supernodes: []string{sn.Multiaddrs()[0].String()},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	var set atomic.Bool
	polls := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Listener: ln, Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
			ClockPoll: 10 * time.Millisecond,
			ClockSet: func() bool {
				select {
				case polls <- struct{}{}:
				default:
				}
				return set.Load()
			}})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Several polls said no: the node must still be waiting, and not
	// have published anything.
	for range 5 {
		<-polls
	}
	st := getStatus(t, base)
	if st.State != "waiting" || st.Detail != WaitingForClock || st.StoredOn != 0 {
		t.Fatalf("clock not set: status %+v, want waiting for the clock", st)
	}
	id, _ := identity.ParseDID(st.DID)
	if _, err := sn.ResolveDID(context.Background(), id); err == nil {
		t.Fatal("the node published before its clock was set")
	}
	set.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for st = getStatus(t, base); st.State != "online" && time.Now().Before(deadline); st = getStatus(t, base) {
		time.Sleep(50 * time.Millisecond)
	}
	if st.State != "online" || st.StoredOn != 1 {
		t.Fatalf("clock set: status %+v, want online", st)
	}
}
