package cloud

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DeviceSettings let the owner change the settings of the device the
// cloud runs on (the appliance sets it): its host name, addressing, Wi-Fi,
// updates and time servers. The device checks and applies them; a change
// that may cut the owner off the device (the network) runs on trial
// until the owner keeps it from the dashboard.
type DeviceSettings interface {
	// Form returns the settings as the page shows them, with any change
	// on trial.
	Form() SettingsForm
	// Apply checks f and applies it (the device restarts on it); the
	// text says what happens next, for the owner.
	Apply(f SettingsForm) (string, error)
	// Keep keeps network settings on trial; Undo returns to the previous
	// ones at once (the device restarts).
	Keep() error
	Undo() error
}

// SettingsForm is the settings page's form. Lists are written as words
// separated by spaces or commas.
type SettingsForm struct {
	Hostname string
	// Interface is the wired interface the address fields are for (""
	// is the first Ethernet interface).
	Interface string
	// Static: the addresses below instead of DHCP.
	Static                             bool
	Addresses, Gateway4, Gateway6, DNS string
	// WiFi are the Wi-Fi networks in order of preference (the page shows
	// one empty row more for a new one; rows without a name are none).
	WiFi []WiFiNetwork
	// UpdateServer is shown only: the release keys it goes with are
	// the image's.
	UpdateServer, UpdateChannel, UpdateWindow string
	UpdateManual                              bool
	NTP                                       string
	// TrialMinutes is how long the owner has to keep a network change.
	TrialMinutes int
	// Trial, shown only, is a network change running on trial; Last the
	// outcome of the last one, in words.
	Trial *SettingsTrial
	Last  string
}

// WiFiNetwork is a row of the Wi-Fi networks. Passphrase is a new
// passphrase ("" keeps the stored one of the same network, else it is
// open); the page never shows it, only Set (one is stored).
type WiFiNetwork struct {
	SSID, Passphrase string
	Set              bool
}

// maxWiFiRows bounds the Wi-Fi rows a form may send.
const maxWiFiRows = 16

// SettingsTrial is a network change on trial.
type SettingsTrial struct {
	// Left is the time the owner has to keep it.
	Left time.Duration
}

// Remaining is Left for people: "4m32s".
func (t *SettingsTrial) Remaining() string { return t.Left.Round(time.Second).String() }

// settingsPage is the settings page's data.
type settingsPage struct {
	SettingsForm
	Msg, Err string
	// Restarting: the device restarts on what was just saved.
	Restarting bool
}

func (s *Server) handleSettingsPage(w http.ResponseWriter, r *http.Request) {
	if s.opts.DeviceSettings == nil {
		s.fail(w, r, http.StatusNotFound, "This cloud does not run on a PC2 device: it has no device settings.")
		return
	}
	p := settingsPage{SettingsForm: s.opts.DeviceSettings.Form(), Msg: r.URL.Query().Get("msg"), Err: r.URL.Query().Get("err")}
	s.render(w, r, http.StatusOK, "settings", "Device settings", p)
}

// handleSettings saves the form; the device restarts on it.
func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) {
	ds := s.opts.DeviceSettings
	if ds == nil {
		s.fail(w, r, http.StatusNotFound, "This cloud does not run on a PC2 device: it has no device settings.")
		return
	}
	f, err := settingsFromRequest(r)
	if err == nil {
		var msg string
		if msg, err = ds.Apply(f); err == nil {
			s.log.Info("owner changed the device settings")
			if wantsJSON(r) {
				writeJSON(w, http.StatusOK, map[string]string{"message": msg})
				return
			}
			s.render(w, r, http.StatusOK, "settings", "Device settings", settingsPage{SettingsForm: f, Msg: msg, Restarting: true})
			return
		}
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
		return
	}
	// The form again, as the owner filled it in (but the passphrase).
	cur := ds.Form()
	for i := range f.WiFi {
		f.WiFi[i].Passphrase = ""
		f.WiFi[i].Set = slices.ContainsFunc(cur.WiFi, func(w WiFiNetwork) bool { return w.Set && w.SSID == f.WiFi[i].SSID })
	}
	f.UpdateServer, f.Trial, f.Last = cur.UpdateServer, cur.Trial, cur.Last
	s.render(w, r, http.StatusUnprocessableEntity, "settings", "Device settings", settingsPage{SettingsForm: f, Err: err.Error()})
}

// handleSettingsKeep and handleSettingsUndo end a network change's trial.
func (s *Server) handleSettingsKeep(w http.ResponseWriter, r *http.Request) {
	s.settingsAction(w, r, "kept", func(ds DeviceSettings) error { return ds.Keep() },
		"The new network settings are kept.")
}

func (s *Server) handleSettingsUndo(w http.ResponseWriter, r *http.Request) {
	s.settingsAction(w, r, "undid", func(ds DeviceSettings) error { return ds.Undo() },
		"The device restarts on its previous network settings.")
}

func (s *Server) settingsAction(w http.ResponseWriter, r *http.Request, did string, act func(DeviceSettings) error, msg string) {
	if s.opts.DeviceSettings == nil {
		s.fail(w, r, http.StatusNotFound, "This cloud does not run on a PC2 device: it has no device settings.")
		return
	}
	if err := act(s.opts.DeviceSettings); err != nil {
		back(w, r, "/_/settings", "", err.Error())
		return
	}
	s.log.Info("owner " + did + " the network settings on trial")
	back(w, r, "/_/settings", msg, "")
}

// settingsFromRequest reads the settings form.
func settingsFromRequest(r *http.Request) (SettingsForm, error) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f := SettingsForm{Hostname: v("hostname"), Interface: v("interface"), Static: v("mode") == "static",
		Addresses: v("addresses"), Gateway4: v("gateway4"), Gateway6: v("gateway6"), DNS: v("dns"),
		UpdateChannel: v("update_channel"), UpdateWindow: v("update_window"), UpdateManual: v("update_manual") == "1",
		NTP: v("ntp")}
	for i := 0; ; i++ {
		ssid, ok := r.PostForm[fmt.Sprintf("wifi_ssid_%d", i)]
		if !ok {
			break
		}
		if i == maxWiFiRows {
			return f, fmt.Errorf("more than %d Wi-Fi networks", maxWiFiRows)
		}
		f.WiFi = append(f.WiFi, WiFiNetwork{SSID: strings.TrimSpace(ssid[0]), Passphrase: r.PostFormValue(fmt.Sprintf("wifi_passphrase_%d", i))})
	}
	switch m := v("mode"); m {
	case "static", "dhcp":
	default:
		return f, fmt.Errorf("address mode %q: want dhcp or static", m)
	}
	if m := v("trial_minutes"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil {
			return f, fmt.Errorf("trial minutes %q: not a number", m)
		}
		f.TrialMinutes = n
	}
	return f, nil
}

// Words splits a form list on spaces and commas.
func Words(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}
