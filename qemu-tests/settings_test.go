package qemutests

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestSettingsFromDashboard: the owner changes the host name and the
// address mode (DHCP to a fixed address) on the dashboard's settings
// page. The device restarts on them, the network change on trial, and
// the owner keeps it from the dashboard at the new address; after a power
// cut the settings hold: the new host name, the fixed address, no DHCP
// lease on eth0 (the first boot's came from the device's own client). Then a deliberately wrong fixed address (one QEMU's
// port forward does not reach): the dashboard is gone, and a minute after
// the device service starts on it the device writes the kept settings
// back and restarts on them by itself; the page says why.
func TestSettingsFromDashboard(t *testing.T) {
	sn, guestAddr := hostSupernode(t)
	hostRelay(t, sn)
	hash, err := password.Hash(testAdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	s := settings.Settings{Profile: profile.Personal, Hostname: "pc2-before", Supernodes: []string{guestAddr}, AdminPasswordHash: hash}
	img := qemutest.CopyImage(t, buildProfileImage(t, s, nil))

	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true, FollowReboots: true})
	waitStatus(t, vm, 3*time.Minute, "in the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	base := func() string { return fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)) }
	owner := cloudtest.New(t, base(), &http.Client{Timeout: time.Minute})
	owner.CreateIdentity()
	owner.Password("owner password 1")
	owner.Step("skip", nil)
	waitOnline(t, vm, 3*time.Minute)
	info := deviceInfo(t, base()+"/api/device", testAdminPassword)
	if info.HostName != "pc2-before" || info.Settings.Network != nil || info.Network.Leases["eth0"].Address != "10.0.2.15/24" {
		t.Fatalf("first boot: host %q, network settings %+v, leases %+v", info.HostName, info.Settings.Network, info.Network.Leases)
	}
	r := owner.Get("/_/settings")
	if !strings.Contains(r.Body, `value="pc2-before"`) || !strings.Contains(r.Body, `id="mode-dhcp" checked`) {
		t.Fatalf("settings page: %d\n%s", r.Code, r.Body)
	}
	csrf := owner.CSRF("/_/settings")
	form := url.Values{"csrf": {csrf}, "hostname": {"pc2-after"}, "mode": {"static"}, "addresses": {"10.0.2.15/24"},
		"gateway4": {"10.0.2.2"}, "dns": {"10.0.2.3"}, "update_channel": {"stable"}, "trial_minutes": {"5"}}

	// 1. Host name and a fixed address: on trial, kept from the dashboard.
	if r := owner.Post("/_/settings", form); r.Code != http.StatusOK || !strings.Contains(r.Body, `id="restarting"`) ||
		!strings.Contains(r.Body, "http://10.0.2.15:4200/") {
		t.Fatalf("save: %d %s", r.Code, r.Err())
	}
	waitBoots(t, vm, 2, 2*time.Minute)
	waitOnline(t, vm, 3*time.Minute)
	if r := owner.Get("/_/"); !strings.Contains(r.Body, `id="trial"`) {
		t.Fatalf("dashboard after the restart shows no trial:\n%s", r.Body)
	}
	if r := owner.Post("/_/settings/keep", url.Values{"csrf": {csrf}}); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		t.Fatalf("keep: %d %s", r.Code, r.Location())
	}
	if r := owner.Get("/_/settings"); strings.Contains(r.Body, `id="trial"`) || !strings.Contains(r.Body, "was kept") {
		t.Errorf("settings page after keeping:\n%s", r.Body)
	}
	checkKept := func(when string) {
		t.Helper()
		info := deviceInfo(t, base()+"/api/device", testAdminPassword)
		n := info.Settings.Network
		if info.HostName != "pc2-after" || info.Settings.Hostname != "pc2-after" || n == nil || len(n.Interfaces) != 1 ||
			n.Interfaces[0].Mode != settings.ModeStatic || n.Interfaces[0].Addresses[0] != "10.0.2.15/24" {
			t.Fatalf("%s: host %q, settings %+v", when, info.HostName, info.Settings)
		}
		if !strings.Contains(strings.Join(info.Network.Changes, "\n"), "10.0.2.15/24") {
			t.Errorf("%s: netconf did not add the fixed address: %+v", when, info.Network)
		}
	}
	checkKept("after keeping")

	// A power cut: the settings hold, without gokrazy's DHCP client.
	vm.Stop()
	vm = qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true, FollowReboots: true})
	owner.Base = base()
	waitOnline(t, vm, 3*time.Minute)
	checkKept("after a power cut")
	if l, ok := deviceInfo(t, base()+"/api/device", testAdminPassword).Network.Leases["eth0"]; ok {
		t.Errorf("the device leased %s on eth0 although it has a fixed address", l.Address)
	}
	if r := owner.Get("/_/"); strings.Contains(r.Body, `id="trial"`) {
		t.Errorf("a trial after the power cut")
	}

	// 2. A wrong address: the dashboard is lost, the device comes back
	// by itself.
	form.Set("csrf", owner.CSRF("/_/settings"))
	form.Set("addresses", "10.0.2.99/24")
	form.Set("trial_minutes", "1")
	if r := owner.Post("/_/settings", form); r.Code != http.StatusOK || !strings.Contains(r.Body, "within 1 minute") {
		t.Fatalf("save the wrong address: %d %s", r.Code, r.Err())
	}
	waitBoots(t, vm, 2, 2*time.Minute)
	started := time.Now()
	reached := 0
	client := &http.Client{Timeout: time.Second}
	for vm.Boots() == 2 {
		if time.Since(started) > 5*time.Minute {
			t.Fatal("the device did not return to the kept settings within 5 minutes")
		}
		if resp, err := client.Get(base() + "/api/status"); err == nil {
			resp.Body.Close()
			reached++
		}
		time.Sleep(time.Second)
	}
	t.Logf("on the wrong address for %v; reached %d times", time.Since(started).Round(time.Second), reached)
	if reached > 0 {
		t.Errorf("the device answered on the forwarded address during the wrong settings' boot")
	}
	waitOnline(t, vm, 3*time.Minute)
	checkKept("after the return")
	if r := owner.Get("/_/settings"); !strings.Contains(r.Body, "returned to its previous network settings") || !strings.Contains(r.Body, "not kept within 1 minute") {
		t.Errorf("settings page after the return:\n%s", r.Body)
	}
}

// waitBoots waits until the VM has started n times (it follows reboots).
func waitBoots(t *testing.T, vm *qemutest.VM, n int, deadline time.Duration) {
	t.Helper()
	for end := time.Now().Add(deadline); vm.Boots() < n; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the device did not restart within %v (%d starts)", deadline, vm.Boots())
		}
	}
}
