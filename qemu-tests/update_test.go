package qemutests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
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

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/release"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/svctable"
	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/appliance/update/updateapi"
	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/cmd/pc2/cli"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// buildRelease builds a release bundle of board (and, with st, its
// flashable image) signed by key.
func buildRelease(t *testing.T, board boards.Board, key ed25519.PrivateKey, version, dir string, st *settings.Settings, files map[string][]byte) *release.Result {
	t.Helper()
	o := release.Options{Board: board, Version: version, Key: key, Out: dir, Files: files,
		SourceDateEpoch: 1700000000, RootSize: 128 * image.MiB, PermSize: 128 * image.MiB,
		Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if st != nil {
		o.Settings = st
		o.Image = filepath.Join(dir, "disk.img")
		o.PermFiles = map[string]image.PermFile{profile.KeyFile(""): {Data: keyPEM(t, vectorWords), Mode: 0o600}}
	}
	start := time.Now()
	res, err := release.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("release %s built in %v: root %d bytes, boot %d bytes", version, time.Since(start).Round(time.Second),
		res.Manifest.Artifacts[manifest.Root].Size, res.Manifest.Artifacts[manifest.Boot].Size)
	return res
}

// copyBundle copies a bundle folder's files (not a disk image) to a new
// folder, for tampering.
func copyBundle(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{manifest.ManifestFile, manifest.SignatureFile, release.RootFile, release.BootFile} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// pc2 runs the command line in process.
func pc2(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := cli.Execute(context.Background(), args, cli.Env{Stdout: &out, Stderr: testlog.Writer(t)})
	t.Logf("pc2 %s:\n%s", strings.Join(args, " "), out.String())
	return out.String(), err
}

// partitionBytes returns the first MiB of GPT partition n (1-based) of
// the disk image.
func partitionBytes(t *testing.T, img string, n int) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 512); err != nil || string(hdr[:8]) != "EFI PART" {
		t.Fatalf("%s: no GPT: %v", img, err)
	}
	entry := make([]byte, 128)
	if _, err := f.ReadAt(entry, int64(binary.LittleEndian.Uint64(hdr[72:]))*512+int64(n-1)*128); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	if _, err := f.ReadAt(b, int64(binary.LittleEndian.Uint64(entry[32:]))*512); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUpdate: over-the-air updates of the qemu image, in one VM whose
// reboots are followed: bundles that are unsigned, tampered, for another
// board are refused with nothing written; the VM killed in the middle of
// an upload still boots A and a retry succeeds; A -> B by push
// (`pc2 update`); a downgrade is refused; a broken release (its device
// service exits at start) is tried once and rolled back by itself, with
// the reason; and B -> D by pull from an update server on the host.
func TestUpdate(t *testing.T) { testUpdate(t, qemu.Board) }

// TestUpdateArm64 is TestUpdate for the arm64 userland and kernel (the
// Raspberry Pi's programs) on QEMU's virt machine, whose direct kernel
// boot reads config.txt, and with it the A/B choice, at every start.
func TestUpdateArm64(t *testing.T) { testUpdate(t, qemuarm64.Board) }

func testUpdate(t *testing.T, board boards.Board) {
	qemutest.RequireArch(t, board.GOARCH)
	sn, guestAddr := hostSupernode(t)
	hostRelay(t, sn)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

	// The update server: bundles appear at /stable/<board>/ when the
	// test puts them there.
	serverRoot := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".squashfs") {
			served.Add(1)
		}
		http.FileServer(http.Dir(serverRoot)).ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	hash, err := password.Hash(testAdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	st := &settings.Settings{Profile: profile.Personal, Hostname: "pc2-update", Supernodes: []string{guestAddr},
		AdminPasswordHash: hash, Update: &settings.Update{URL: fmt.Sprintf("http://10.0.2.2:%d/", port),
			Interval: config.Duration(5 * time.Second), HealthTimeout: config.Duration(60 * time.Second)}}
	a := buildRelease(t, board, key, "1.0.0", t.TempDir(), st, nil)
	b := buildRelease(t, board, key, "1.1.0", t.TempDir(), nil, nil)
	badTable, err := svctable.Encode([]svctable.Service{{Name: "device", Path: profile.PC2Binary, Args: []string{"device", "--no-such-flag"}}})
	if err != nil {
		t.Fatal(err)
	}
	broken := buildRelease(t, board, key, "1.2.0", t.TempDir(), nil, map[string][]byte{svctable.Path: badTable})
	d := buildRelease(t, board, key, "1.3.0", t.TempDir(), nil, nil)

	img := qemutest.CopyImage(t, a.Image)
	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true, FollowReboots: true, GOARCH: board.GOARCH})
	base := fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200))
	client := &updateapi.Client{Base: base, Password: testAdminPassword, HTTP: &http.Client{Timeout: 5 * time.Minute}}
	status := func() *update.Status {
		t.Helper()
		s, err := client.Status(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitOnline(t, vm, 3*time.Minute)
	if s := status(); s.Version != "1.0.0" || s.Board != board.Name || s.Partition != 2 {
		t.Fatalf("A: %+v", s)
	}
	emptyB := partitionBytes(t, img, 3)

	// Refusals, nothing written.
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(testAdminPassword+"\n"), 0o600)
	refuse := func(name, dir, want string) {
		t.Helper()
		_, err := pc2(t, "update", "--device", strings.TrimPrefix(base, "http://"), "--bundle", dir, "--password-file", pw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error with %q", name, err, want)
		}
		if s := status(); s.Last == nil || s.Last.Outcome != update.Refused || s.Testing != nil {
			t.Fatalf("%s: status %+v", name, s.Last)
		}
	}
	unsigned := copyBundle(t, b.Dir)
	os.Remove(filepath.Join(unsigned, manifest.SignatureFile))
	refuse("unsigned", unsigned, "not signed")
	otherKey := copyBundle(t, b.Dir)
	m := *b.Manifest
	mb, sb, err := manifest.Sign(&m, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(otherKey, manifest.ManifestFile), mb, 0o644)
	os.WriteFile(filepath.Join(otherKey, manifest.SignatureFile), sb, 0o644)
	refuse("signed by another key", otherKey, "not from a trusted release key")
	tampered := copyBundle(t, b.Dir)
	rootFile := filepath.Join(tampered, release.RootFile)
	rb, _ := os.ReadFile(rootFile)
	rb[len(rb)/2] ^= 1
	os.WriteFile(rootFile, rb, 0o644)
	refuse("tampered root", tampered, "SHA-256")
	otherBoard := copyBundle(t, b.Dir)
	m = *b.Manifest
	m.Board = "rpi"
	mb, sb, err = manifest.Sign(&m, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(otherBoard, manifest.ManifestFile), mb, 0o644)
	os.WriteFile(filepath.Join(otherBoard, manifest.SignatureFile), sb, 0o644)
	refuse("other board", otherBoard, "another board")
	if !bytes.Equal(partitionBytes(t, img, 3), emptyB) {
		t.Fatal("a refused update wrote to the inactive root partition")
	}

	// Killed in the middle of an upload: the VM is stopped while the
	// root artifact streams in; it boots A again, and a retry works.
	bundle, err := updateapi.OpenBundle(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	slow := &updateapi.Client{Base: base, Password: testAdminPassword, HTTP: &http.Client{Transport: &throttle{rate: 4 << 20}}}
	pushErr := make(chan error, 1)
	go func() { _, _, err := slow.Push(context.Background(), bundle); pushErr <- err }()
	time.Sleep(3 * time.Second)
	vm.Stop()
	if err := <-pushErr; err == nil {
		t.Fatal("the push finished before the VM was killed")
	}
	if !bytes.Equal(partitionBytes(t, img, 3), emptyB) {
		t.Fatal("an interrupted upload wrote to the inactive root partition")
	}
	vm = qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true, FollowReboots: true, GOARCH: board.GOARCH})
	base = fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200))
	client.Base = base
	waitOnline(t, vm, 3*time.Minute)
	if s := status(); s.Version != "1.0.0" || s.Testing != nil {
		t.Fatalf("after the interrupted upload: %+v", s)
	}

	// A -> B by push.
	start := time.Now()
	out, err := pc2(t, "update", "--device", strings.TrimPrefix(base, "http://"), "--bundle", b.Dir, "--password-file", pw)
	if err != nil {
		t.Fatalf("push B: %v\n%s", err, vm.Serial())
	}
	t.Logf("figure: push update 1.0.0 -> 1.1.0 (%s, TCG): %v from the command to the new version serving; %s",
		board.Name, time.Since(start).Round(time.Second), firstLine(out, "sent "))
	s := status()
	if s.Version != "1.1.0" || s.Partition != 3 || s.Last.Outcome != update.Installed || s.Floor != "1.1.0" {
		t.Fatalf("after B: %+v", s)
	}
	waitOnline(t, vm, time.Minute)

	// A downgrade below B's minimum version is refused.
	refuse("downgrade", a.Dir, "downgrade")

	// A broken release is tried once and rolled back.
	start = time.Now()
	_, err = pc2(t, "update", "--device", strings.TrimPrefix(base, "http://"), "--bundle", broken.Dir, "--password-file", pw)
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("broken release: %v", err)
	}
	s = status()
	if s.Version != "1.1.0" || s.Partition != 3 || s.Last.Outcome != update.RolledBack || !strings.Contains(s.Last.Reason, "no-such-flag") {
		t.Fatalf("after the broken release: %+v\nlog:\n%s", s.Last, s.Log)
	}
	t.Logf("figure: broken release 1.2.0 (%s, TCG, health timeout 60s): %v from the command to the device back on 1.1.0 with the reason; rolled back: %s",
		board.Name, time.Since(start).Round(time.Second), s.Last.Reason)
	waitOnline(t, vm, time.Minute)

	// B -> D by pull.
	boots := vm.Boots()
	dst := filepath.Join(serverRoot, "stable", board.Name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(copyBundle(t, d.Dir), dst); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for end := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := client.Status(ctx, false)
		cancel()
		if err == nil && s.Version == "1.3.0" && s.Last != nil && s.Last.Outcome == update.Installed {
			if !strings.HasPrefix(s.Last.Source, "pull") || vm.Boots() != boots+1 || served.Load() != 1 {
				t.Fatalf("pulled: %+v, boots %d -> %d, root served %d times", s.Last, boots, vm.Boots(), served.Load())
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("D not installed by pull: %+v %v\n%s", s, err, vm.Serial())
		}
	}
	t.Logf("figure: pull update 1.1.0 -> 1.3.0 (%s, TCG): %v from publishing to the new version serving", board.Name, time.Since(start).Round(time.Second))
	waitOnline(t, vm, time.Minute)
}

func firstLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// throttle is a transport whose request bodies go out at rate bytes/s.
type throttle struct{ rate int }

func (th *throttle) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body = &slowBody{rc: r.Body, rate: th.rate}
	}
	return http.DefaultTransport.RoundTrip(r)
}

type slowBody struct {
	rc   io.ReadCloser
	rate int
}

func (s *slowBody) Read(p []byte) (int, error) {
	if len(p) > s.rate/10 {
		p = p[:s.rate/10]
	}
	n, err := s.rc.Read(p)
	time.Sleep(100 * time.Millisecond)
	return n, err
}

func (s *slowBody) Close() error { return s.rc.Close() }
