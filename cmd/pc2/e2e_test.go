package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/proc"
)

// These tests run the real pc2 binary as separate processes on loopback:
// three supernodes, then publish and resolve as a user would from a shell.

func buildPC2(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pc2")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type pc2Result struct {
	stdout, stderr string
	code           int
}

func runPC2(t testing.TB, bin string, stdin string, args ...string) pc2Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pc2 %v: %v", args, err)
	}
	t.Logf("$ pc2 %s\n%s%s", strings.Join(args, " "), o.String(), e.String())
	return pc2Result{o.String(), e.String(), code}
}

func mustPC2(t testing.TB, bin string, args ...string) string {
	t.Helper()
	r := runPC2(t, bin, "", args...)
	if r.code != 0 {
		t.Fatalf("pc2 %v: exit %d\n%s", args, r.code, r.stderr)
	}
	return r.stdout
}

func newKey(t testing.TB, bin, dir, name string) (keyFile, did string) {
	t.Helper()
	keyFile = filepath.Join(dir, name+".key")
	out := mustPC2(t, bin, "identity", "new", "--key", keyFile)
	did = strings.SplitN(out, "\n", 2)[0]
	if !strings.HasPrefix(did, "did:boson:") {
		t.Fatalf("identity new printed %q first, want a DID", did)
	}
	return keyFile, did
}

type supernodeProc struct {
	cmd   *exec.Cmd
	addrs []string
	log   *proc.TailBuffer // written by the process while the test reads it
}

// startSupernode starts `pc2 supernode` (with more flags, if any) and
// waits for its addrs file.
func startSupernode(t testing.TB, bin, dir string, cfg map[string]any, flags ...string) *supernodeProc {
	t.Helper()
	addrsFile := filepath.Join(dir, "addrs")
	os.Remove(addrsFile)
	cfg["addrs_file"] = addrsFile
	b, _ := json.MarshalIndent(cfg, "", "  ")
	cfgFile := filepath.Join(dir, "supernode.json")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := &supernodeProc{cmd: exec.Command(bin, append([]string{"supernode", "--config", cfgFile}, flags...)...), log: &proc.TailBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(addrsFile); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				p.addrs = append(p.addrs, sc.Text())
			}
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("supernode did not write %s in time; log:\n%s", addrsFile, p.log)
	return nil
}

func (p *supernodeProc) stop(t testing.TB) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("supernode exited with %v; log:\n%s", err, p.log)
		}
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
		t.Errorf("supernode did not stop on SIGTERM; log:\n%s", p.log)
	}
}

// addr picks the node's address on the given transport ("tcp" or "quic").
func (p *supernodeProc) addr(t testing.TB, transport string) string {
	t.Helper()
	for _, a := range p.addrs {
		if strings.Contains(a, "/"+transport) {
			return a
		}
	}
	t.Fatalf("no %s address in %v", transport, p.addrs)
	return ""
}

func TestThreeSupernodeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs pc2 processes: skipped in -short")
	}
	bin := buildPC2(t)
	dir := t.TempDir()
	opKey, opDID := newKey(t, bin, dir, "operator")
	const domain = "pc2.test"

	var sns []*supernodeProc
	for i := 0; i < 3; i++ {
		d := filepath.Join(dir, fmt.Sprint("sn", i))
		os.MkdirAll(d, 0o700)
		key, _ := newKey(t, bin, d, "node")
		cfg := map[string]any{
			"key_file":            key,
			"listen":              []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
			"data_dir":            filepath.Join(d, "data"),
			"allow_private_dials": true,
			"domains":             []map[string]string{{"domain": domain, "operator": opDID}},
		}
		if i > 0 {
			cfg["bootstrap"] = []string{sns[0].addr(t, "tcp")}
		}
		sns = append(sns, startSupernode(t, bin, d, cfg))
	}

	aliceKey, aliceDID := newKey(t, bin, dir, "alice")
	out := mustPC2(t, bin, "publish", "--key", aliceKey, "--bootstrap", sns[1].addr(t, "tcp"),
		"--direct", "/ip4/127.0.0.1/tcp/4200", "--service", "cloud=http://127.0.0.1:4200", "--name", "alice."+domain)
	if !strings.Contains(out, "published "+aliceDID) {
		t.Fatalf("publish printed %q", out)
	}

	// Resolve through another supernode, over QUIC.
	var res struct {
		Type   string
		Record struct {
			DID      string `json:"did"`
			Seq      uint64
			Direct   []string
			Services []struct{ Name, Endpoint string }
		}
	}
	js := mustPC2(t, bin, "resolve", "--bootstrap", sns[2].addr(t, "quic"), aliceDID)
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatalf("resolve output is not JSON: %v\n%s", err, js)
	}
	if res.Type != "did" || res.Record.DID != aliceDID || len(res.Record.Direct) != 1 || res.Record.Services[0].Endpoint != "http://127.0.0.1:4200" {
		t.Fatalf("got %+v, want alice's record", res)
	}
	firstSeq := res.Record.Seq

	// Publishing again gives a higher seq, seen from every supernode.
	mustPC2(t, bin, "publish", "--key", aliceKey, "--bootstrap", sns[0].addr(t, "tcp"), "--direct", "/ip4/127.0.0.1/tcp/4300")
	for i, sn := range sns {
		js := mustPC2(t, bin, "resolve", "--bootstrap", sn.addr(t, "tcp"), aliceDID)
		if err := json.Unmarshal([]byte(js), &res); err != nil {
			t.Fatal(err)
		}
		if res.Record.Seq <= firstSeq || res.Record.Direct[0] != "/ip4/127.0.0.1/tcp/4300" {
			t.Fatalf("supernode %d: got seq %d direct %v, want the update", i, res.Record.Seq, res.Record.Direct)
		}
	}

	// Domain and name, resolved by name.
	mustPC2(t, bin, "publish", "domain", "--operator-key", opKey, "--domain", domain, "--bootstrap", sns[0].addr(t, "tcp"))
	mustPC2(t, bin, "publish", "name", "--operator-key", opKey, "--key", aliceKey, "--name", "alice."+domain, "--bootstrap", sns[1].addr(t, "quic"))
	// The operator delegates granting to supernode 2 and lists it in
	// the domain's record.
	delegation := filepath.Join(dir, "sn2.delegation.json")
	out = mustPC2(t, bin, "operator", "delegate", "--operator-key", opKey, "--domain", domain, "--supernode", sns[2].addr(t, "tcp"),
		"--out", delegation, "--bootstrap", sns[0].addr(t, "tcp"))
	if !strings.Contains(out, "delegated granting names of "+domain) || !strings.Contains(out, "listed ") {
		t.Fatalf("operator delegate printed %q", out)
	}
	if b, err := os.ReadFile(delegation); err != nil || !strings.Contains(string(b), `"sig"`) {
		t.Fatalf("delegation file: %s %v", b, err)
	}
	js = mustPC2(t, bin, "resolve", "--bootstrap", sns[2].addr(t, "tcp"), "alice."+domain)
	sn2Transport := sns[2].addr(t, "tcp")[:strings.Index(sns[2].addr(t, "tcp"), "/p2p/")]
	if !strings.Contains(js, sn2Transport) {
		t.Fatalf("the domain record does not list supernode 2 (%s):\n%s", sn2Transport, js)
	}
	var nres struct {
		Type string
		Name struct{ Grant struct{ DID, Status string } }
		DID  struct{ DID string }
	}
	if err := json.Unmarshal([]byte(js), &nres); err != nil {
		t.Fatal(err)
	}
	if nres.Type != "name" || nres.Name.Grant.DID != aliceDID || nres.Name.Grant.Status != "active" || nres.DID.DID != aliceDID {
		t.Fatalf("got %+v, want alice.%s -> %s", nres, domain, aliceDID)
	}

	// The operator revokes alice's name without her key; the reason
	// travels with the revocation. A key that does not govern the domain
	// cannot.
	_, malloryDID := newKey(t, bin, dir, "mallory")
	r := runPC2(t, bin, "", "operator", "revoke", "--operator-key", filepath.Join(dir, "mallory.key"), "--reason", "mine now",
		"--bootstrap", sns[0].addr(t, "tcp"), "alice."+domain)
	if r.code == 0 || !strings.Contains(r.stderr, "not "+malloryDID) {
		t.Fatalf("revoke with another key: exit %d, %q", r.code, r.stderr)
	}
	out = mustPC2(t, bin, "operator", "revoke", "--operator-key", opKey, "--reason", "abuse report 42", "--bootstrap", sns[0].addr(t, "tcp"), "alice."+domain)
	if !strings.Contains(out, "revoked alice."+domain) {
		t.Fatalf("revoke printed %q", out)
	}
	var rres struct {
		Name struct {
			Grant struct{ DID, Status, Reason string }
		}
	}
	js = mustPC2(t, bin, "resolve", "--bootstrap", sns[2].addr(t, "tcp"), "alice."+domain)
	if err := json.Unmarshal([]byte(js), &rres); err != nil {
		t.Fatal(err)
	}
	if g := rres.Name.Grant; g.DID != aliceDID || g.Status != "revoked" || g.Reason != "abuse report 42" {
		t.Fatalf("after the revocation: %+v", g)
	}

	// A name granted by a key that does not govern the domain is refused.
	r = runPC2(t, bin, "", "publish", "name", "--operator-key", filepath.Join(dir, "mallory.key"), "--key", filepath.Join(dir, "mallory.key"),
		"--name", "bob."+domain, "--bootstrap", sns[0].addr(t, "tcp"))
	if r.code == 0 {
		t.Fatalf("forged operator grant published")
	}
	r = runPC2(t, bin, "", "resolve", "--bootstrap", sns[2].addr(t, "tcp"), "--timeout", "20s", "bob."+domain)
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("resolve of unpublished name: exit %d, stderr %q; want exit 1 and 'not found'", r.code, r.stderr)
	}

	// Unknown DID: exit 1 with a clear message.
	_, bobDID := newKey(t, bin, dir, "bob")
	r = runPC2(t, bin, "", "resolve", "--bootstrap", sns[0].addr(t, "tcp"), bobDID)
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("resolve unknown: exit %d, stderr %q; want exit 1 and 'not found'", r.code, r.stderr)
	}
	// Malformed DID: usage error.
	r = runPC2(t, bin, "", "resolve", "--bootstrap", sns[0].addr(t, "tcp"), "did:key:z6Mk")
	if r.code != 2 {
		t.Fatalf("resolve did:key: exit %d, want 2", r.code)
	}

	// A supernode restarted from its data dir still serves alice's record,
	// even when it is the only one left.
	sns[1].stop(t)
	sns[0].stop(t)
	sns[2].stop(t)
	d := filepath.Join(dir, "sn2")
	b, _ := os.ReadFile(filepath.Join(d, "supernode.json"))
	var cfg map[string]any
	json.Unmarshal(b, &cfg)
	delete(cfg, "bootstrap")
	again := startSupernode(t, bin, d, cfg)
	js = mustPC2(t, bin, "resolve", "--bootstrap", again.addr(t, "tcp"), aliceDID)
	if err := json.Unmarshal([]byte(js), &res); err != nil || res.Record.Direct[0] != "/ip4/127.0.0.1/tcp/4300" {
		t.Fatalf("after restart: %v %+v", err, res)
	}
}
