// Package qemutests boots the real appliance image in QEMU and tests it end
// to end; the harness is package qemutest.
package qemutests

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestBootGokrazy builds the qemu image with the init and gokrazy's services
// and waits until gokrazy's web interface answers through the forwarded
// port 80.
func TestBootGokrazy(t *testing.T) {
	qemutest.Require(t)
	const password = "pc2-test-password"
	dir := t.TempDir()
	res, err := image.Build(context.Background(), image.Options{
		Board: qemu.Board,
		ExtraFiles: map[string][]byte{
			"/etc/gokr-pw.txt": []byte(password),
			"/etc/hostname":    []byte("pc2-qemu"),
		},
		SourceDateEpoch: 1700000000,
		Output:          filepath.Join(dir, "disk.img"),
		RootSize:        128 * image.MiB,
		PermSize:        64 * image.MiB,
		Logger:          slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}

	vm := qemutest.Boot(t, res.Image, qemutest.Options{Forward: []int{80}})
	url := fmt.Sprintf("http://gokrazy:%s@127.0.0.1:%d/", password, vm.HostPort(80))
	body := vm.WaitHTTP(t, url, 3*time.Minute)
	bootTime := time.Since(vm.Started)
	t.Logf("boot time (QEMU start to HTTP 200): %v", bootTime.Round(100*time.Millisecond))

	if !strings.Contains(string(body), "pc2-qemu") {
		t.Errorf("status page does not show hostname pc2-qemu")
	}
	// gokrazy's own update API, with the right password, writes nothing
	// (issue 16, finding 8): it would bypass the release signatures.
	for _, c := range []struct{ method, path string }{{"PUT", "update/root"}, {"PUT", "update/boot"}, {"POST", "update/switch"}} {
		req, _ := http.NewRequest(c.method, url+c.path, strings.NewReader("not a signed release"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "pc2 update") {
			t.Errorf("%s /%s with gokrazy's password: %s %q, want 403 from pc2", c.method, c.path, resp.Status, b)
		}
	}
	serial := vm.Serial()
	// bootSlotsMark is the init reading the boot slots from the FAT16
	// boot partition, which it must be able to do for A/B switches.
	for _, want := range []string{"Run /gokrazy/init as init process", bootSlotsMark} {
		if !strings.Contains(serial, want) {
			t.Errorf("serial console lacks %q", want)
		}
	}
	if strings.Contains(serial, "Could not mount permanent storage partition /dev/vda4 as ext4") {
		t.Error("perm (ext4) was not mounted")
	}
}
