package settings

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/image/bootpart"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/provisioning/password"
)

// testDisk writes an MBR disk whose partition 1 is a FAT16 volume holding
// the given settings file contents (nil: no settings file).
func testDisk(t *testing.T, settingsFile []byte) string {
	t.Helper()
	const start = 2048 * 512
	fs := fat16.New(fat16.Options{Size: 16 << 20, ModTime: time.Unix(1700000000, 0)})
	fs.Add("/cmdline.txt", []byte("root=x\n"))
	if settingsFile != nil {
		fs.Add("/"+BootFile, settingsFile)
	}
	vol, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	disk := make([]byte, start+len(vol))
	copy(disk[start:], vol)
	e := disk[446:]
	e[4] = 0x0e
	binary.LittleEndian.PutUint32(e[8:], start/512)
	binary.LittleEndian.PutUint32(e[12:], uint32(len(vol)/512))
	disk[510], disk[511] = 0x55, 0xaa
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sample(t *testing.T) *Settings {
	h, err := password.Hash("admin password 1")
	if err != nil {
		t.Fatal(err)
	}
	return &Settings{Profile: Personal, Hostname: "box", Supernodes: []string{"/ip4/10.0.2.2/tcp/8090/p2p/x"},
		WiFi: &WiFi{SSID: "home", Passphrase: "secret passphrase"}, AdminPasswordHash: h,
		Network: &Network{Interfaces: []Interface{{Mode: ModeStatic, Addresses: []string{"192.168.1.10/24"}, Gateway4: "192.168.1.1"}}}}
}

func TestEncodeParse(t *testing.T) {
	s := sample(t)
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != ReservedSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), ReservedSize)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Hostname != "box" || back.WiFi.Passphrase != "secret passphrase" || back.Network.Interfaces[0].Gateway4 != "192.168.1.1" {
		t.Fatalf("round trip: %+v", back)
	}
	s.WiFiNetworks = []WiFi{{SSID: "hotspot", Passphrase: "hotspot passphrase"}, {SSID: "cafe"}}
	r := s.Redacted()
	if r.WiFi.Passphrase != "(set)" || r.AdminPasswordHash != "(set)" || s.WiFi.Passphrase != "secret passphrase" ||
		r.WiFiNetworks[0].Passphrase != "(set)" || r.WiFiNetworks[1].Passphrase != "" || s.WiFiNetworks[0].Passphrase != "hotspot passphrase" {
		t.Fatalf("redacted %+v %+v, original %+v %+v", r.WiFi, r.WiFiNetworks, s.WiFi, s.WiFiNetworks)
	}
	if o := s.OtherWiFi(); len(o) != 2 || o[0].SSID != "hotspot" || o[0].Passphrase != "hotspot passphrase" {
		t.Errorf("OtherWiFi %v", o)
	}
	s.WiFiNetworks = nil
	s.Supernodes = []string{strings.Repeat("x", ReservedSize)}
	if _, err := Encode(s); err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Fatalf("oversized settings: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"profile":"personal","colour":"red"}`, "unknown field"},
		{`{"profile":"personal"} {}`, "trailing data"},
		{`{"profile":"personal","wifi":{"ssid":""}}`, "ssid"},
		{`{"profile":"personal","wifi":{"ssid":"a","passphrase":"` + strings.Repeat("z", 64) + `"}}`, "passphrase"},
		{`{"profile":"personal","network":{"interfaces":[{"mode":"static","addresses":["10.0.0.1"]}]}}`, "network"},
		{`{"profile":"personal","reset_button":"17"}`, "reset_button"},
		{`{"profile":"personal","wifi_networks":[{"ssid":"b"}]}`, "need a first one"},
		{`{"profile":"personal","wifi":{"ssid":"a"},"wifi_networks":[{"ssid":"a"}]}`, "listed twice"},
		{`{"profile":"personal","wifi":{"ssid":"a"},"wifi_networks":[{"ssid":"b","passphrase":"short"}]}`, "passphrase"},
		{`{"profile":"personal","wifi":{"ssid":"a"},"wifi_networks":[{"ssid":"b"},{"ssid":"c"},{"ssid":"d"},{"ssid":"e"},{"ssid":"f"},{"ssid":"g"},{"ssid":"h"},{"ssid":"i"}]}`, "at most 8"},
		{`not json`, "invalid character"},
		// gokrazy's NTP client takes servers as arguments: no options.
		{`{"profile":"personal","ntp":["-h"]}`, "ntp"},
		{`{"profile":"personal","ntp":["time..example"]}`, "ntp"},
		{`{"profile":"personal","ntp":["a","b","c","d","e","f","g","h","i"]}`, "at most 8"},
	} {
		if _, err := Parse([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := Parse([]byte(`{"profile":"personal","ntp":["10.0.2.2","fd00::1","time.example.org"]}`)); err != nil {
		t.Errorf("ntp servers: %v", err)
	}
	// A 64-hex-digit PSK is accepted.
	if _, err := Parse([]byte(`{"profile":"personal","wifi":{"ssid":"a","passphrase":"` + strings.Repeat("ab", 32) + `"}}`)); err != nil {
		t.Errorf("hex PSK: %v", err)
	}
}

// TestWriteImage changes the settings of a disk image in place
// (WriteImage) and as a device does (WriteDevice, into new clusters), in
// either order, and reads them back.
func TestWriteImage(t *testing.T) {
	first, err := Encode(&Settings{Profile: Personal})
	if err != nil {
		t.Fatal(err)
	}
	disk := testDisk(t, first)
	s := sample(t)
	for i, write := range []func(string, *Settings) error{WriteImage, WriteDevice, WriteImage, WriteDevice} {
		s.Hostname = fmt.Sprintf("box%d", i)
		if err := write(disk, s); err != nil {
			t.Fatal(err)
		}
		back, err := ReadImage(disk)
		if err != nil || back.Hostname != s.Hostname || back.AdminPasswordHash != s.AdminPasswordHash {
			t.Fatalf("write %d: read back %+v, %v", i, back, err)
		}
		if err := write(testDisk(t, nil), s); err == nil {
			t.Fatalf("write %d: image without a settings file: no error", i)
		}
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, err := bootpart.ReadFile(f, "cmdline.txt"); err != nil || string(b) != "root=x\n" {
		t.Errorf("cmdline.txt after the writes: %q, %v", b, err)
	}
}

// TestLoad covers the device's sources: the boot partition (and the perm
// copy KeepCopy leaves), the copy when the boot partition has none or a broken
// one, and neither.
func TestLoad(t *testing.T) {
	good, _ := Encode(&Settings{Profile: Personal, Hostname: "fromboot"})
	perm := filepath.Join(t.TempDir(), "pc2", "settings.json")
	l, err := Load(Paths{Disk: testDisk(t, good), PermFile: perm})
	if err != nil || l.Hostname != "fromboot" || l.Problem != nil {
		t.Fatalf("from boot: %+v, %v", l, err)
	}
	if _, err := os.Stat(perm); err == nil {
		t.Fatal("Load wrote the perm copy; only KeepCopy may")
	}
	if err := l.KeepCopy(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(perm); err != nil || !bytes.Contains(b, []byte("fromboot")) || len(b) > 200 {
		t.Fatalf("perm copy: %q, %v", b, err)
	}
	l, err = Load(Paths{Disk: testDisk(t, nil), PermFile: perm})
	if err != nil || l.Hostname != "fromboot" || l.Source != perm || l.Problem == nil {
		t.Fatalf("no boot file: %+v, %v", l, err)
	}
	l, err = Load(Paths{Disk: testDisk(t, []byte(`{"profile":"personal","hostname":"bad_name"}`)), PermFile: perm})
	if err != nil || l.Hostname != "fromboot" || l.Problem == nil || !strings.Contains(l.Problem.Error(), "hostname") {
		t.Fatalf("broken boot file: %+v, %v", l, err)
	}
	_, err = Load(Paths{Disk: testDisk(t, nil), PermFile: filepath.Join(t.TempDir(), "none.json")})
	if !errors.Is(err, config.ErrNotConfigured) {
		t.Fatalf("no settings anywhere: %v", err)
	}
}
