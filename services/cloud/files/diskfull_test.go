package files

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// mountTmpfs mounts a tmpfs of size bytes on a temp dir, unmounted in
// Cleanup (after whatever the test registers later, such as its Store).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		testenv.SkipOrFail(t, "mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestDiskFull fills a 2 MiB disk with a 4 MiB upload, through the API
// and WebDAV: the upload fails with ErrDiskFull (HTTP 507), nothing
// partial is left and an overwritten file keeps its old content.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, 2<<20)
	s := openStore(t, dir, 0)
	old := strings.Repeat("old ", 25<<10)
	put(t, s, "old", old)

	for _, p := range []string{"new", "old"} {
		u, err := s.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = u.ReadFrom(&zeros{4 << 20})
		if err == nil {
			err = u.Commit()
		}
		if !errors.Is(err, ErrDiskFull) || HTTPStatus(err) != http.StatusInsufficientStorage {
			t.Errorf("4 MiB to %s on a 2 MiB disk: %v (HTTP %d), want ErrDiskFull (507)", p, err, HTTPStatus(err))
		}
		u.Abort()
	}
	check := func(how string) {
		t.Helper()
		mustNotExist(t, filepath.Join(dir, "new"))
		mustContain(t, filepath.Join(dir, "old"), old)
		if left := temps(t, dir); len(left) != 0 {
			t.Errorf("%s: left over: %v", how, left)
		}
		if u, _ := s.Usage(); u.Used != int64(len(old)) || u.DiskTotal != 2<<20 {
			t.Errorf("%s: Usage = %+v, want Used %d on a 2 MiB disk", how, u, len(old))
		}
	}
	check("API")

	addr := serveDAV(t, s)
	for _, p := range []string{"new", "old"} {
		head := fmt.Sprintf("PUT /dav/%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", p, addr, 4<<20)
		if code := stream(t, addr, head, &zeros{4 << 20}); code != http.StatusInsufficientStorage {
			t.Errorf("WebDAV PUT of 4 MiB to %s: %d, want 507", p, code)
		}
	}
	check("WebDAV")

	// Still usable once there is room again.
	put(t, s, "new", "fits")
}
