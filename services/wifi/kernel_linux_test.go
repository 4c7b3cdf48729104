//go:build linux

package wifi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	mdwifi "github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"
)

// The kernel path cannot join a network here (no Wi-Fi hardware, no
// mac80211_hwsim); these tests cover what it does without one.

func TestConnectPMKAttrs(t *testing.T) {
	pmk := bytes.Repeat([]byte{0xab}, 32)
	b, err := connectPMKAttrs(3, "home", pmk)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	type attr struct {
		typ  uint16
		data string
	}
	u32 := func(v uint32) string { return string(binary.NativeEndian.AppendUint32(nil, v)) }
	want := []attr{
		{unix.NL80211_ATTR_IFINDEX, u32(3)},
		{unix.NL80211_ATTR_SSID, "home"},
		{unix.NL80211_ATTR_AUTH_TYPE, u32(unix.NL80211_AUTHTYPE_OPEN_SYSTEM)},
		{unix.NL80211_ATTR_WPA_VERSIONS, u32(unix.NL80211_WPA_VERSION_2)},
		{unix.NL80211_ATTR_CIPHER_SUITE_GROUP, u32(0x000fac04)},
		{unix.NL80211_ATTR_CIPHER_SUITES_PAIRWISE, u32(0x000fac04)},
		{unix.NL80211_ATTR_AKM_SUITES, u32(0x000fac02)},
		{unix.NL80211_ATTR_PMK, string(pmk)},
	}
	var got []attr
	for ad.Next() {
		got = append(got, attr{ad.Type(), string(ad.Bytes())})
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("attributes:\ngot  %x\nwant %x", got, want)
	}
	if _, err := connectPMKAttrs(3, "home", pmk[:31]); err == nil {
		t.Error("a 31-byte PMK: got no error")
	}
}

func TestExtFeature(t *testing.T) {
	const f = unix.NL80211_EXT_FEATURE_4WAY_HANDSHAKE_STA_PSK // 16
	bitmap := make([]byte, 3)
	if extFeature(bitmap, f) || extFeature(nil, f) {
		t.Error("feature reported in an empty bitmap")
	}
	bitmap[f/8] = 1 << (f % 8)
	if !extFeature(bitmap, f) || extFeature(bitmap, f+1) {
		t.Errorf("bitmap %x: wrong bits", bitmap)
	}
}

func TestSecurityOf(t *testing.T) {
	rsn := func(pairwise []mdwifi.RSNCipher, akms ...mdwifi.RSNAKM) mdwifi.RSNInfo {
		return mdwifi.RSNInfo{Version: 1, GroupCipher: mdwifi.RSNCipherCCMP128, PairwiseCiphers: pairwise, AKMs: akms}
	}
	ccmp := []mdwifi.RSNCipher{mdwifi.RSNCipherCCMP128}
	for _, tc := range []struct {
		rsn  mdwifi.RSNInfo
		want Security
	}{
		{mdwifi.RSNInfo{}, SecurityOpen},
		{rsn(ccmp, mdwifi.RSNAkmPSK), SecurityWPA2},
		{rsn(ccmp, mdwifi.RSNAkmSAE, mdwifi.RSNAkmPSK), SecurityWPA2}, // transition mode
		{rsn([]mdwifi.RSNCipher{mdwifi.RSNCipherTKIP, mdwifi.RSNCipherCCMP128}, mdwifi.RSNAkmPSK), SecurityWPA2},
		{rsn([]mdwifi.RSNCipher{mdwifi.RSNCipherTKIP}, mdwifi.RSNAkmPSK), SecurityTKIP},
		{rsn(ccmp, mdwifi.RSNAkmSAE), SecuritySAE},
		{rsn(ccmp, mdwifi.RSNAkmFTSAE, mdwifi.RSNAkmSAE), SecuritySAE},
		{rsn(ccmp, mdwifi.RSNAkm8021X), SecurityEnterprise},
		{rsn(ccmp, mdwifi.RSNAkmPSKSHA256), SecurityOther},
	} {
		if got := securityOf(tc.rsn); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.rsn, got, tc.want)
		}
	}
}

func TestLinkOf(t *testing.T) {
	ap := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	bss := &mdwifi.BSS{SSID: "home", BSSID: ap, Frequency: 2437, Signal: -6100, Status: mdwifi.BSSStatusAssociated}
	if got := linkOf(nil, nil); got.Connected {
		t.Errorf("no BSS: got %+v", got)
	}
	if got := linkOf(&mdwifi.BSS{SSID: "home", Status: mdwifi.BSSStatusAuthenticated}, nil); got.Connected {
		t.Errorf("authenticated only: got %+v, want not connected", got)
	}
	got := linkOf(bss, nil)
	if !got.Connected || got.SSID != "home" || !bytes.Equal(got.BSSID, ap) || got.FrequencyMHz != 2437 || got.SignalDBm != -61 {
		t.Errorf("from the BSS: got %+v", got)
	}
	stations := []*mdwifi.StationInfo{{HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}, Signal: -30}, {HardwareAddr: ap, Signal: -55}}
	if got := linkOf(bss, stations); got.SignalDBm != -55 {
		t.Errorf("with station info: got %d dBm, want -55", got.SignalDBm)
	}
}

func TestLoadModuleMissing(t *testing.T) {
	loaded, err := loadModule(filepath.Join(t.TempDir(), "brcmfmac.ko"))
	if loaded || err != nil {
		t.Errorf("got %v, %v; want a module missing from the image skipped", loaded, err)
	}
}

// RaspberryPiModules must exist in the kernel the rpi board uses, in an
// order that loads every dependency first.
func TestRaspberryPiModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/gokrazy/kernel.rpi").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/gokrazy/kernel.rpi: %v", err)
	}
	deps, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "lib/modules/*/modules.dep"))
	if err != nil || len(deps) != 1 {
		t.Fatalf("modules.dep of kernel.rpi: got %q, %v; want one", deps, err)
	}
	f, err := os.Open(deps[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	depOf := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, _ := strings.Cut(sc.Text(), ":")
		depOf[mod] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for i, m := range RaspberryPiModules {
		d, ok := depOf[m]
		if !ok {
			t.Errorf("%s is not a module of kernel.rpi", m)
			continue
		}
		for _, dep := range d {
			if !slices.Contains(RaspberryPiModules[:i], dep) {
				t.Errorf("%s needs %s, which is not loaded before it", m, dep)
			}
		}
	}
}

// On a machine without Wi-Fi hardware (this one, an x86 image) the kernel
// Radio must count as "no hardware": no nl80211, or no interface.
func TestKernelWithoutWiFi(t *testing.T) {
	radio, err := openKernel(nil, slog.New(slog.DiscardHandler))
	switch {
	case errors.Is(err, ErrNoNL80211):
		t.Log("this kernel has no nl80211")
	case err != nil:
		t.Fatalf("openKernel: %v", err)
	default:
		ifaces, err := radio.Interfaces()
		if err != nil {
			t.Errorf("Interfaces: %v", err)
		}
		t.Logf("nl80211 present, interfaces: %+v", ifaces)
		if err := radio.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}

	// An interface name that cannot exist keeps this safe on a machine
	// that has Wi-Fi: Run must not touch its connection.
	state := new(State)
	err = Run(context.Background(), Config{SSID: "pc2-test"}, Options{
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		State:        state,
		Interface:    "pc2-none0",
		HardwareWait: 1500 * time.Millisecond,
		Modules:      []string{}, // never load modules into the test machine's kernel
	})
	if err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	if st := state.Status(); st.Phase != PhaseNoHardware {
		t.Errorf("status: got %+v, want no-hardware", st)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
