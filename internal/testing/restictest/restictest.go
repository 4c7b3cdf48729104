// Package restictest runs the backup tests' peers: restic itself (the
// version the image ships, built from the module proxy), restic's
// rest-server and MinIO (an S3-compatible store) on loopback, and
// Debian's stock restic package, which must read PC2's repositories
// outside PC2. None of them is a dependency of this module.
package restictest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/modbuild"
	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/services/backup"
)

// Versions of the peers. MinIO publishes no semantic versions to the
// module proxy: a pseudo-version of its main branch.
const (
	RESTServerVersion = "v0.14.0"
	MinIOVersion      = "v0.0.0-20260212201848-7aac2a2c5b7c"
)

// Restic is the restic program of the image's version.
func Restic(tb testing.TB) string {
	tb.Helper()
	dir := modbuild.Build(tb, modbuild.Program{Name: "restic", Module: backup.ResticModule,
		Version: backup.ResticVersion, Cmds: []string{backup.ResticPackage}})
	return modbuild.Bin(dir, backup.ResticPackage)
}

// DebianRestic is Debian's restic package (scripts/deps.sh installs it).
func DebianRestic(tb testing.TB) string {
	tb.Helper()
	const bin = "/usr/bin/restic"
	if _, err := os.Stat(bin); err != nil {
		testenv.SkipOrFail(tb, "Debian's restic package is not installed (apt-get install restic): %v", err)
	}
	return bin
}

// RESTServer is a running rest-server.
type RESTServer struct {
	// URL is the server's base URL (no authentication).
	URL string
	// Dir holds its repositories.
	Dir string
	cmd *exec.Cmd
}

// StartRESTServer runs rest-server on a free port over a fresh folder,
// with maxSize bytes of quota (0: none). It stops when the test ends.
func StartRESTServer(tb testing.TB, maxSize int64) *RESTServer {
	tb.Helper()
	return StartRESTServerAt(tb, tb.TempDir(), maxSize)
}

// StartRESTServerAt is StartRESTServer over folder repos.
func StartRESTServerAt(tb testing.TB, repos string, maxSize int64) *RESTServer {
	tb.Helper()
	dir := modbuild.Build(tb, modbuild.Program{Name: "rest-server", Module: "github.com/restic/rest-server",
		Version: RESTServerVersion, Cmds: []string{"cmd/rest-server"}})
	s := &RESTServer{Dir: repos}
	addr := proc.FreeAddr(tb)
	args := []string{"--path", s.Dir, "--listen", addr, "--no-auth"}
	if maxSize > 0 {
		args = append(args, "--max-size", fmt.Sprint(maxSize))
	}
	s.cmd = start(tb, "rest-server", modbuild.Bin(dir, "cmd/rest-server"), nil, args...)
	s.URL = "http://" + addr + "/"
	waitHTTP(tb, s.URL)
	return s
}

// Stop stops the server (a destination going away).
func (s *RESTServer) Stop() { stop(s.cmd) }

// MinIO is a running MinIO server.
type MinIO struct {
	// URL is the S3 endpoint.
	URL                  string
	AccessKey, SecretKey string
	Dir                  string
	cmd                  *exec.Cmd
}

// StartMinIO runs MinIO on free ports over a fresh folder. It stops when
// the test ends.
func StartMinIO(tb testing.TB) *MinIO {
	tb.Helper()
	dir := modbuild.Build(tb, modbuild.Program{Name: "minio", Module: "github.com/minio/minio",
		Version: MinIOVersion, Cmds: []string{"."}})
	m := &MinIO{Dir: tb.TempDir(), AccessKey: "pc2-test-access", SecretKey: "pc2-test-secret-key"}
	addr, console := proc.FreeAddr(tb), proc.FreeAddr(tb)
	env := []string{"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "HOME=" + m.Dir}
	m.cmd = start(tb, "minio", modbuild.Bin(dir, "."), env, "server", "--quiet", "--address", addr,
		"--console-address", console, m.Dir)
	m.URL = "http://" + addr
	waitHTTP(tb, m.URL+"/minio/health/live")
	return m
}

func start(tb testing.TB, name, bin string, env []string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &proc.TailBuffer{Max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = proc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("restictest: start %s: %v", name, err)
	}
	tb.Cleanup(func() {
		stop(cmd)
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, proc.Tail(out.String(), 40))
		}
	})
	return cmd
}

func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// waitHTTP waits until url answers at all.
func waitHTTP(tb testing.TB, url string) {
	tb.Helper()
	testenv.WaitFor(tb, 60*time.Second, "server at "+url, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// ClosedURL is an http URL on loopback where nothing listens: an
// unreachable destination.
func ClosedURL(tb testing.TB, path string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/" + strings.TrimPrefix(path, "/")
}
