package cloud

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSettings is the device's settings: Apply records the form, or
// refuses it with applyErr.
type fakeSettings struct {
	mu       sync.Mutex
	form     SettingsForm
	applied  []SettingsForm
	applyErr error
	keeps    int
	undos    int
}

func (f *fakeSettings) Form() SettingsForm { f.mu.Lock(); defer f.mu.Unlock(); return f.form }

func (f *fakeSettings) Apply(sf SettingsForm) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applyErr != nil {
		return "", f.applyErr
	}
	f.applied = append(f.applied, sf)
	return "Saved; the device restarts.", nil
}

func (f *fakeSettings) Keep() error { f.mu.Lock(); defer f.mu.Unlock(); f.keeps++; return nil }
func (f *fakeSettings) Undo() error { f.mu.Lock(); defer f.mu.Unlock(); f.undos++; return nil }

// TestSettingsPage: the owner sees the device's settings (never the
// Wi-Fi passphrase), saves a form, sees a refused one again with the
// reason, and keeps or undoes a network change on trial from the
// dashboard; strangers and forged forms reach nothing.
func TestSettingsPage(t *testing.T) {
	e := newEnv(t)
	b := e.setup("owner password")
	e.dev.mu.Lock()
	e.dev.form = SettingsForm{Hostname: "box", Static: true, Addresses: "192.168.1.10/24", Gateway4: "192.168.1.1",
		WiFi: []WiFiNetwork{{SSID: "home", Set: true}, {}}, UpdateServer: "https://updates.test/", UpdateChannel: "beta", TrialMinutes: 5,
		Last: "The device returned to its previous network settings: not kept within 5 minutes."}
	e.dev.mu.Unlock()
	if r := b.Get("/_/"); !strings.Contains(r.Body, `id="settings-link"`) || strings.Contains(r.Body, `id="trial"`) {
		t.Errorf("dashboard: settings link %t, trial banner %t", strings.Contains(r.Body, `id="settings-link"`), strings.Contains(r.Body, `id="trial"`))
	}
	r := b.Get("/_/settings")
	for _, want := range []string{`value="box"`, `id="mode-static" checked`, `value="192.168.1.10/24"`, `id="wifi-ssid-0" value="home"`,
		"empty: keep the one set", `id="wifi-ssid-1" value=""`, "Network 2", "https://updates.test/", `<option value="beta" selected>`, "not kept within 5 minutes", `value="5"`} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("settings page lacks %q", want)
		}
	}
	csrf := b.CSRF("/_/settings")
	form := url.Values{"csrf": {csrf}, "hostname": {"box2"}, "mode": {"dhcp"}, "dns": {"9.9.9.9, 1.1.1.1"},
		"wifi_ssid_0": {"home"}, "wifi_passphrase_0": {"new passphrase 1"}, "wifi_ssid_1": {" hotspot "}, "wifi_passphrase_1": {""},
		"wifi_ssid_3": {"skipped: rows end at the first gap"}, "update_channel": {"stable"},
		"update_window": {"02:00-05:00"}, "update_manual": {"1"}, "ntp": {"10.0.2.2"}, "trial_minutes": {"2"}}

	// Strangers and forged forms change nothing.
	if r := e.browser(e.local.URL).Post("/_/settings", form); r.Code != http.StatusUnauthorized {
		t.Errorf("a stranger's settings: %d, want 401", r.Code)
	}
	if r := e.browser(e.local.URL).Get("/_/settings"); r.Code == http.StatusOK {
		t.Errorf("a stranger sees the settings page")
	}
	forged := url.Values{}
	for k, v := range form {
		forged[k] = v
	}
	forged.Del("csrf")
	if r := b.Post("/_/settings", forged); r.Code != http.StatusForbidden {
		t.Errorf("settings without the CSRF token: %d", r.Code)
	}
	if r := b.Post("/_/settings/undo", url.Values{}); r.Code != http.StatusForbidden {
		t.Errorf("undo without the CSRF token: %d", r.Code)
	}
	e.dev.mu.Lock()
	if len(e.dev.applied)+e.dev.undos != 0 {
		t.Errorf("refused requests reached the device: %+v, %d undos", e.dev.applied, e.dev.undos)
	}
	e.dev.mu.Unlock()

	r = b.Post("/_/settings", form)
	if r.Code != http.StatusOK || !strings.Contains(r.Body, `id="restarting"`) || !strings.Contains(r.Body, "the device restarts") {
		t.Fatalf("save: %d %s", r.Code, r.Body)
	}
	e.dev.mu.Lock()
	want := SettingsForm{Hostname: "box2", DNS: "9.9.9.9, 1.1.1.1", WiFi: []WiFiNetwork{{SSID: "home", Passphrase: "new passphrase 1"}, {SSID: "hotspot"}},
		UpdateChannel: "stable", UpdateWindow: "02:00-05:00", UpdateManual: true, NTP: "10.0.2.2", TrialMinutes: 2}
	if len(e.dev.applied) != 1 || !reflect.DeepEqual(e.dev.applied[0], want) {
		t.Errorf("applied %+v\nwant %+v", e.dev.applied, want)
	}
	e.dev.applyErr = errors.New("network: netconf: interface (first Ethernet): mode static needs at least one address")
	e.dev.mu.Unlock()
	if got := Words(" 9.9.9.9, 1.1.1.1\n2001:db8::1 "); strings.Join(got, "|") != "9.9.9.9|1.1.1.1|2001:db8::1" {
		t.Errorf("Words: %q", got)
	}

	// Refused: the form again as filled in, with why, but no passphrase.
	form.Set("mode", "static")
	r = b.Post("/_/settings", form)
	if r.Code != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "mode static needs at least one address") ||
		!strings.Contains(r.Body, `value="box2"`) || !strings.Contains(r.Body, `id="mode-static" checked`) || strings.Contains(r.Body, "new passphrase 1") {
		t.Errorf("refused save: %d\n%s", r.Code, r.Body)
	}
	many := url.Values{"csrf": {csrf}, "mode": {"dhcp"}}
	for i := range 17 {
		many.Set(fmt.Sprintf("wifi_ssid_%d", i), fmt.Sprint("net", i))
	}
	if r := b.Post("/_/settings", many); r.Code != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "more than 16 Wi-Fi networks") {
		t.Errorf("17 Wi-Fi rows: %d", r.Code)
	}
	form.Set("mode", "bridge")
	if r := b.Post("/_/settings", form); r.Code != http.StatusUnprocessableEntity || !strings.Contains(r.Body, `address mode &#34;bridge&#34;`) {
		t.Errorf("unknown mode: %d", r.Code)
	}

	// A network change on trial: the dashboard says so, with its buttons.
	e.dev.mu.Lock()
	e.dev.form.Trial = &SettingsTrial{Left: 272 * time.Second}
	e.dev.mu.Unlock()
	r = b.Get("/_/")
	if !strings.Contains(r.Body, `id="trial"`) || !strings.Contains(r.Body, "4m32s") || !strings.Contains(r.Body, `id="trial-keep"`) {
		t.Errorf("dashboard during a trial lacks the banner:\n%s", r.Body)
	}
	if r := b.Post("/_/settings/keep", url.Values{"csrf": {csrf}}); r.Code != http.StatusSeeOther || !strings.Contains(r.Location(), "msg=") {
		t.Errorf("keep: %d %s", r.Code, r.Location())
	}
	if r := b.Post("/_/settings/undo", url.Values{"csrf": {csrf}}); r.Code != http.StatusSeeOther || !strings.Contains(r.Location(), "msg=") {
		t.Errorf("undo: %d %s", r.Code, r.Location())
	}
	e.dev.mu.Lock()
	if e.dev.keeps != 1 || e.dev.undos != 1 {
		t.Errorf("%d keeps, %d undos, want 1 each", e.dev.keeps, e.dev.undos)
	}
	e.dev.mu.Unlock()
}
