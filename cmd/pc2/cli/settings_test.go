package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/provisioning/password"
)

const testSN = "/ip4/10.0.2.2/tcp/8090/p2p/12D3KooWHHzSeKaY8xuZVzkLbKFfvNgPPeKhFBGrMbNzbm5akpqu"

// applyFlags parses settings flags and applies them to s.
func applyFlags(t *testing.T, s *settings.Settings, args ...string) error {
	t.Helper()
	fs := newFlagSet("t", Env{Stderr: &bytes.Buffer{}})
	f := addSettingsFlags(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	return f.apply(s)
}

func TestSettingsFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), 0o600)
		return p
	}
	pw := write("pw", "admin password 1\n")
	wifi := write("wifi", "wifi passphrase\n")
	netw := write("net.json", `{"interfaces":[{"mode":"static","addresses":["192.0.2.5/24"],"gateway4":"192.0.2.1"}]}`)
	s := &settings.Settings{}
	err := applyFlags(t, s, "--profile", "personal", "--supernode", testSN, "--hostname", "box",
		"--admin-password-file", pw, "--wifi-ssid", "home", "--wifi-passphrase-file", wifi,
		"--network-file", netw, "--reset-button", "GPIO17")
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "box" || s.WiFi.Passphrase != "wifi passphrase" || s.ResetButton != "GPIO17" ||
		s.Network.Interfaces[0].Gateway4 != "192.0.2.1" || strings.Contains(s.AdminPasswordHash, "admin password") {
		t.Fatalf("settings %+v", s)
	}
	if err := password.Verify(s.AdminPasswordHash, "admin password 1"); err != nil {
		t.Fatalf("admin hash: %v", err)
	}
	// Unchanged fields stay; --no-wifi and "none" remove.
	if err := applyFlags(t, s, "--no-wifi", "--reset-button", "none", "--hostname", "other"); err != nil {
		t.Fatal(err)
	}
	if s.WiFi != nil || s.ResetButton != "" || s.Hostname != "other" || s.Supernodes[0] != testSN {
		t.Fatalf("settings %+v", s)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--wifi-passphrase-file", wifi}, "needs --wifi-ssid"},
		{[]string{"--admin-password-file", write("short", "short")}, "too short"},
		{[]string{"--network-file", write("bad.json", `{"interfaces":[{"mode":"bogus"}]}`)}, "network settings"},
		{[]string{"--profile", "router"}, "unknown profile"},
		{[]string{"--settings", write("s.json", `{"profile":"personal","extra":1}`)}, "unknown field"},
	} {
		if err := applyFlags(t, &settings.Settings{Profile: "personal", Supernodes: []string{testSN}}, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
}
