package qemutests

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/image/vm"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/ntptest"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// piBootMarks are what the console shows on every Pi boot, in order: the
// kernel found root by PARTUUID on the SD card and started gokrazy's
// init; the init found no watchdog (the harness's workaround, see
// image/vm's raspi.go: had the driver been there, QEMU would have reset
// the machine here); and the init read the boot slots from the FAT boot
// partition, as it must for A/B switches.
var piBootMarks = []string{
	"VFS: Mounted root (squashfs filesystem) readonly",
	"Run /gokrazy/init as init process",
	"disabling hardware watchdog, as it could not be opened",
	bootSlotsMark,
}

// bootSlotsMark is the init's console line naming the running root
// partition and the selected boot slot (update.BeginTestBoot).
const bootSlotsMark = "boot slots running="

// checkPiBoot checks the console of a Pi boot: the marks, perm (p4 of the
// SD card, whose kernel name is dev) mounted read-write and grown into
// the card behind the image, and no reset since the start (QEMU runs with
// -no-reboot, so a reset would have ended it).
func checkPiBoot(t *testing.T, v *qemutest.VM, dev string) {
	t.Helper()
	serial := v.Serial()
	last := 0
	for _, m := range piBootMarks {
		i := strings.Index(serial[last:], m)
		if i < 0 {
			t.Errorf("console lacks %q (after the marks before it)", m)
			continue
		}
		last += i
	}
	if !strings.Contains(serial, "EXT4-fs ("+dev+"p4): mounted filesystem") {
		t.Errorf("perm (%sp4) was not mounted", dev)
	}
	if strings.Contains(serial, "vchiq platform") {
		t.Errorf("the VCHIQ driver started, which can panic the kernel in QEMU (image/vm's NoVCHIQ)")
	}
	if strings.Contains(serial, "Could not mount permanent storage") {
		t.Error("gokrazy could not mount perm")
	}
	if !strings.Contains(serial, "EXT4-fs ("+dev+"p4): resized filesystem") {
		t.Errorf("perm was not grown into the rest of the SD card")
	}
	if n := strings.Count(serial, "Booting Linux on physical CPU"); n != 1 {
		t.Errorf("the kernel started %d times, want once", n)
	}
}

// TestRaspi3b boots the rpi image, as built, on QEMU's Raspberry Pi 3
// Model B (Debian 12's QEMU 7.2) from its SD card, with QEMU's USB
// network device on the Pi's USB (usb0, which gokrazy's DHCP client
// serves on a Pi): the node comes up in its setup wizard on port 4200;
// the owner makes an identity and a password there. Like a real Pi the
// machine has no clock of its own and starts at 1970: the node waits for
// the time, and its dashboard says so, until the time server in the
// settings (one on the host) answers; then it publishes its DID and
// attaches to the supernode on the host (QEMU's user network is a NAT,
// so it goes online relayed).
func TestRaspi3b(t *testing.T) {
	qemutest.RequireMachine(t, vm.MachineRaspi3b)
	sn, guestAddr := hostSupernode(t)
	hostRelay(t, sn)
	img := buildBoardImage(t, rpi.Board, settings.Settings{Profile: profile.Personal, Hostname: "pc2-pi",
		Supernodes: []string{guestAddr}, PublicURL: "http://pi.pc2.test", NTP: []string{vm.HostAddr}}, nil)
	v := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, GOARCH: "arm64", Machine: vm.MachineRaspi3b})

	wiz := waitStatus(t, v, 5*time.Minute, "in the wizard with perm grown", func(st personal.Status) bool {
		return st.Setup == "wizard" && st.Storage != nil && st.Storage.DiskTotal > 100<<20
	})
	t.Logf("raspi3b: QEMU start to the wizard on port 4200: %v", time.Since(v.Started).Round(100*time.Millisecond))
	if wiz.State != "waiting" {
		t.Fatalf("first boot: %+v, want the wizard waiting for an identity", wiz)
	}
	checkPiBoot(t, v, "mmcblk0")
	if !strings.Contains(v.Serial(), "cdc_ether") {
		t.Errorf("the kernel did not take QEMU's USB network device as CDC Ethernet")
	}
	// The wizard answered through QEMU's forward to usb0's address, which
	// only the device's DHCP client for usb0 (keep.Options.DHCPAlso)
	// can have set: the settings have no static address.

	owner := cloudtest.New(t, fmt.Sprintf("http://127.0.0.1:%d", v.HostPort(4200)), &http.Client{Timeout: time.Minute})
	if r := owner.Get("/"); r.Code != http.StatusSeeOther || r.Location() != "/_/setup" {
		t.Fatalf("/ on first boot: %d %s", r.Code, r.Location())
	}
	words := owner.CreateIdentity()
	owner.Password("owner password 1")
	owner.Step("skip", nil) // no name yet
	waitStatus(t, v, time.Minute, "waiting for the clock", func(st personal.Status) bool {
		return st.State == "waiting" && st.Detail == personal.WaitingForClock
	})
	if r := owner.Get("/_/"); !strings.Contains(r.Body, personal.WaitingForClock) {
		t.Errorf("the dashboard does not say the node waits for the clock: %.300q", r.Body)
	}
	ntp := hostNTP(t)
	st := waitStatus(t, v, 3*time.Minute, "online and relayed", func(st personal.Status) bool {
		return st.State == "online" && st.Mode == "relayed"
	})
	t.Logf("raspi3b: QEMU start to online through the host's supernode: %v", time.Since(v.Started).Round(100*time.Millisecond))
	key, _ := identity.NodeKeyFromMnemonic(strings.Join(words, " "), "")
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if st.DID != id.DID() {
		t.Fatalf("node runs as %s, want %s from the wizard's words", st.DID, id.DID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec, err := sn.ResolveDID(ctx, id)
	if err != nil {
		t.Fatalf("host resolves the Pi's DID: %v", err)
	}
	if len(rec.Supernodes) != 1 || rec.Supernodes[0].ID != mustID(t, sn) {
		t.Errorf("did record lists supernodes %+v, want the host's", rec.Supernodes)
	}
	if ntp.Answered.Load() == 0 {
		t.Errorf("the guest's clock was not set by the host's time server (%d answers)", ntp.Answered.Load())
	}
	if v.Boots() != 1 {
		t.Errorf("the guest rebooted")
	}
}

// hostNTP serves NTP with the host's clock to guests, which reach it at
// vm.HostAddr (10.0.2.2:123, the host's loopback), until t ends.
func hostNTP(t testing.TB) *ntptest.Server {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:123")
	if err != nil {
		t.Fatalf("NTP server for the guest: %v", err)
	}
	ntp := ntptest.Start(conn, nil)
	t.Cleanup(func() { ntp.Close() })
	return ntp
}

// TestRaspi4b boots the rpi image, as built, on QEMU 10's Raspberry Pi 4
// Model B (Debian bookworm-backports, unpacked by scripts/deps.sh). QEMU
// emulates neither the Pi 4's Ethernet (GENET) nor its USB (xHCI behind
// PCIe), so this machine has no network: the test checks the boot up to
// the node's first words on the console, which it prints once its
// settings, perm and cloud are up and it waits for the wizard.
func TestRaspi4b(t *testing.T) {
	qemutest.RequireMachine(t, vm.MachineRaspi4b)
	img := buildBoardImage(t, rpi.Board, settings.Settings{Profile: profile.Personal, Hostname: "pc2-pi4",
		Supernodes: []string{placeholderSupernode(t)}}, nil)
	v := qemutest.Boot(t, img, qemutest.Options{GOARCH: "arm64", Machine: vm.MachineRaspi4b})
	v.WaitSerial(t, "PC2: set up your personal cloud", 5*time.Minute)
	t.Logf("raspi4b: QEMU start to the node's setup message: %v", time.Since(v.Started).Round(100*time.Millisecond))
	// perm is grown by pc2 device before the cloud starts.
	checkPiBoot(t, v, "mmcblk1")
	if !strings.Contains(v.Serial(), "Machine model: Raspberry Pi 4 Model B") {
		t.Errorf("the kernel did not see a Pi 4")
	}
}
