package wifi

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	psk := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct {
		cfg  Config
		want string // "" = valid
	}{
		{Config{SSID: "home"}, ""},
		{Config{SSID: strings.Repeat("x", 32), Passphrase: "12345678"}, ""},
		{Config{SSID: "Café ☕", Passphrase: strings.Repeat("~", 63)}, ""},
		{Config{SSID: "home", Passphrase: "with spaces ok"}, ""},
		{Config{SSID: "home", Passphrase: psk}, ""},
		{Config{SSID: "home", Passphrase: strings.ToUpper(psk)}, ""},
		{Config{}, "ssid must be 1-32 bytes, got 0"},
		{Config{SSID: strings.Repeat("x", 33)}, "ssid must be 1-32 bytes, got 33"},
		{Config{SSID: "home", Passphrase: "1234567"}, "8-63 characters or 64 hex digits, got 7"},
		{Config{SSID: "home", Passphrase: strings.Repeat("a", 65)}, "8-63 characters or 64 hex digits, got 65"},
		{Config{SSID: "home", Passphrase: strings.Repeat("g", 64)}, "must be the PSK in hex digits"},
		{Config{SSID: "home", Passphrase: "tab\there!"}, "printable ASCII; byte 3 is 0x09"},
		{Config{SSID: "home", Passphrase: "grüße1234"}, "printable ASCII; byte 2 is 0xc3"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%#v: got %v, want valid", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "wifi: ")):
			t.Errorf("%#v: got %v, want wifi: ...%s", tc.cfg, err, tc.want)
		}
	}
}

// IEEE 802.11i-2004, H.4.2: passphrase-to-PSK test vectors.
func TestPMKVectors(t *testing.T) {
	for _, tc := range []struct{ pass, ssid, want string }{
		{"password", "IEEE", "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"},
		{"ThisIsAPassword", "ThisIsASSID", "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"},
		{strings.Repeat("a", 32), strings.Repeat("Z", 32), "becb93866bb8c3832cb777c2f559807c8c59afcb6eae734885001300a981cc62"},
	} {
		cfg := Config{SSID: tc.ssid, Passphrase: tc.pass}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		got, err := cfg.PMK()
		if err != nil || hex.EncodeToString(got) != tc.want {
			t.Errorf("PMK(%q, %q): got %x, %v; want %s", tc.pass, tc.ssid, got, err, tc.want)
		}
		// The same key given as hex digits passes through.
		got, err = Config{SSID: "other", Passphrase: strings.ToUpper(tc.want)}.PMK()
		if err != nil || hex.EncodeToString(got) != tc.want {
			t.Errorf("hex PSK %s: got %x, %v", tc.want, got, err)
		}
	}
	if got, err := (Config{SSID: "open"}).PMK(); got != nil || err != nil {
		t.Errorf("open network: got %x, %v; want nil, nil", got, err)
	}
}

func TestConfigKeepsSecret(t *testing.T) {
	const secret = "hunter2hunter2"
	cfg := Config{SSID: "home", Passphrase: secret}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "network", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s %q", cfg, cfg, cfg, cfg, cfg), logged.String()} {
		if strings.Contains(s, secret) || !strings.Contains(s, "home") {
			t.Errorf("got %q, want the SSID without the passphrase", s)
		}
	}
	if !strings.Contains(logged.String(), "network.open=false") {
		t.Errorf("log: got %q, want network.open=false", logged.String())
	}
}
