package qemutests

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/boards/x86"
	"github.com/pc2/pc2/image"
	qvm "github.com/pc2/pc2/image/vm"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestBIOSPersonalImage boots the x86 personal image under SeaBIOS, QEMU's
// legacy BIOS, instead of OVMF: gptmbr.bin in the protective MBR, SYSLINUX
// on the boot partition, the kernel with syslinux.cfg's command line. The
// node's status page must answer and come online with the provisioned DID.
func TestBIOSPersonalImage(t *testing.T) {
	_, guestAddr := hostSupernode(t)
	img := buildBoardImage(t, x86.Board, settings.Settings{Profile: profile.Personal, Hostname: "pc2-bios",
		Supernodes: []string{guestAddr}},
		map[string]image.PermFile{"pc2/node.key": {Data: keyPEM(t, vectorWords), Mode: 0o600}})

	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, BIOS: true})
	url := fmt.Sprintf("http://127.0.0.1:%d/api/status", vm.HostPort(4200))
	t.Logf("BIOS: QEMU start to status page answering: %v", firstAnswer(t, vm, url, 2*time.Minute).Round(100*time.Millisecond))
	st := waitOnline(t, vm, 2*time.Minute)
	t.Logf("BIOS: QEMU start to node online: %v", time.Since(vm.Started).Round(100*time.Millisecond))
	if st.DID != vectorDID {
		t.Fatalf("node runs as %s, want the provisioned %s", st.DID, vectorDID)
	}

	// SYSLINUX, not some other path, started the kernel (its banner goes to
	// the serial port: SERIAL in syslinux.cfg), with slot a's cmdline.txt command
	// line (syslinux.cfg's APPEND), after the BOOT_IMAGE= SYSLINUX adds.
	serial := vm.Serial()
	if !strings.Contains(serial, "SYSLINUX") {
		t.Errorf("serial console lacks SYSLINUX's banner")
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	txt, err := qvm.ReadBootFile(f, "a/cmdline.txt")
	if err != nil {
		t.Fatal(err)
	}
	cmdline, _, _ := strings.Cut(string(txt), "\n")
	m := regexp.MustCompile(`Command line: (.*)`).FindStringSubmatch(serial)
	if m == nil {
		t.Fatalf("serial console lacks the kernel's command line")
	}
	if got, want := strings.TrimSpace(m[1]), "BOOT_IMAGE=/a/vmlinuz "+cmdline; got != want {
		t.Errorf("kernel command line %q, want %q (cmdline.txt's)", got, want)
	}
}

// firstAnswer polls url until it answers 200 OK and returns the time since
// QEMU started. Short timeouts: QEMU's user network accepts a connection to
// a guest port nobody listens on yet and holds it, so a long timeout (as
// WaitHTTP's) would round the measurement up by seconds.
func firstAnswer(t *testing.T, vm *qemutest.VM, url string, deadline time.Duration) time.Duration {
	t.Helper()
	client := &http.Client{Timeout: 500 * time.Millisecond}
	end := time.Now().Add(deadline)
	last := "no attempt"
	for time.Now().Before(end) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(vm.Started)
			}
			last = "status " + resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: no 200 after %v; last: %s", url, deadline, last)
	return 0
}
