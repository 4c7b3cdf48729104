// Package qemutests boots the real appliance image in QEMU and tests it end
// to end; the harness is package qemutest.
package qemutests

import (
	"context"
	"fmt"
	"log/slog"
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
	serial := vm.Serial()
	// "cmdline: root=" is gokrazy reading cmdline.txt from the FAT16 boot
	// partition, which it must be able to do for A/B switches.
	for _, want := range []string{"Run /gokrazy/init as init process", "cmdline: root=PARTUUID="} {
		if !strings.Contains(serial, want) {
			t.Errorf("serial console lacks %q", want)
		}
	}
	if strings.Contains(serial, "Could not mount permanent storage partition /dev/vda4 as ext4") {
		t.Error("perm (ext4) was not mounted")
	}
}
