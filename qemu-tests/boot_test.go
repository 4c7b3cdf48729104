// Package qemutests boots the real appliance image in QEMU and tests it end
// to end; the harness is package qemutest.
package qemutests

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestBootGokrazy boots the personal image and waits until gokrazy's web
// interface answers through the forwarded port 8080 (the image's gokrazy
// password makes the init listen there). The image's network is
// `pc2 device`'s (its DHCP client): an image of the init and gokrazy's
// services alone configures no address.
func TestBootGokrazy(t *testing.T) {
	qemutest.Require(t)
	const password = "pc2-test-password" // buildBoardImage's
	img := buildProfileImage(t, settings.Settings{Profile: profile.Personal, Supernodes: []string{placeholderSupernode(t)}}, nil)

	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{profile.GokrazyHTTPPort}})
	url := fmt.Sprintf("http://gokrazy:%s@127.0.0.1:%d/", password, vm.HostPort(profile.GokrazyHTTPPort))
	body := vm.WaitHTTP(t, url, 3*time.Minute)
	bootTime := time.Since(vm.Started)
	t.Logf("boot time (QEMU start to HTTP 200): %v", bootTime.Round(100*time.Millisecond))

	if !strings.Contains(string(body), "pc2") || !strings.Contains(string(body), "/user/pc2") {
		t.Errorf("status page does not show the host name pc2 and the device service")
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
