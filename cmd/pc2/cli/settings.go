package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/provisioning/password"
)

// settingsFlags are the device settings flags of `pc2 image build` and
// `pc2 image settings`: a settings file as the base, then single fields.
type settingsFlags struct {
	file, hostname, profile, publicURL, resetButton *string
	adminPWFile, wifiSSID, wifiPassFile, network    *string
	supernodes                                      multiFlag
	noWiFi                                          *bool
}

func addSettingsFlags(fs *flag.FlagSet) *settingsFlags {
	f := &settingsFlags{
		file:         fs.String("settings", "", "device settings `file` (JSON) to start from"),
		hostname:     fs.String("hostname", "", "device host `name`"),
		profile:      fs.String("profile", "", "personal or supernode"),
		publicURL:    fs.String("public-url", "", "the personal node's public `URL`"),
		resetButton:  fs.String("reset-button", "", "GPIO `pin` of a factory-reset button (Raspberry Pi), e.g. GPIO17; \"none\" removes it"),
		adminPWFile:  fs.String("admin-password-file", "", "`file` holding the admin password (stored as an argon2id hash only)"),
		wifiSSID:     fs.String("wifi-ssid", "", "Wi-Fi network `name`"),
		wifiPassFile: fs.String("wifi-passphrase-file", "", "`file` holding the Wi-Fi passphrase (none: an open network)"),
		network:      fs.String("network-file", "", "`file` with the network settings (JSON, the settings' \"network\" object)"),
		noWiFi:       fs.Bool("no-wifi", false, "remove the Wi-Fi settings"),
	}
	fs.Var(&f.supernodes, "supernode", "supernode multiaddr (repeatable; replaces the list)")
	return f
}

// apply changes s as the flags say.
func (f *settingsFlags) apply(s *settings.Settings) error {
	if *f.file != "" {
		var base settings.Settings
		if err := config.Load(*f.file, &base); err != nil {
			return err
		}
		*s = base
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&s.Hostname, *f.hostname)
	set(&s.Profile, *f.profile)
	set(&s.PublicURL, *f.publicURL)
	switch *f.resetButton {
	case "":
	case "none":
		s.ResetButton = ""
	default:
		s.ResetButton = *f.resetButton
	}
	if len(f.supernodes) > 0 {
		s.Supernodes = append([]string(nil), f.supernodes...)
	}
	if *f.adminPWFile != "" {
		pw, err := readSecret(*f.adminPWFile, "admin password")
		if err != nil {
			return err
		}
		if s.AdminPasswordHash, err = password.Hash(pw); err != nil {
			return err
		}
	}
	if *f.noWiFi {
		s.WiFi, s.WiFiNetworks = nil, nil
	}
	if *f.wifiSSID != "" {
		s.WiFi = &settings.WiFi{SSID: *f.wifiSSID}
		if *f.wifiPassFile != "" {
			pass, err := readSecret(*f.wifiPassFile, "Wi-Fi passphrase")
			if err != nil {
				return err
			}
			s.WiFi.Passphrase = pass
		}
	} else if *f.wifiPassFile != "" {
		return usageErr("--wifi-passphrase-file needs --wifi-ssid")
	}
	if *f.network != "" {
		b, err := os.ReadFile(*f.network)
		if err != nil {
			return fmt.Errorf("network settings: %w", err)
		}
		var n settings.Network
		if err := config.Decode(*f.network, b, &n); err != nil {
			return fmt.Errorf("network settings: %w", err)
		}
		if err := n.Check(); err != nil {
			return fmt.Errorf("network settings %s: %w", *f.network, err)
		}
		s.Network = &n
	}
	return profile.Check(s)
}

// readSecret reads a one-line secret from a file, without its line end.
func readSecret(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

const imageSettingsUsage = `usage: pc2 image settings --image pc2.img|/dev/sdX [--show] [--settings FILE] [--hostname NAME]
       [--profile personal|supernode] [--supernode ADDR]... [--public-url URL] [--admin-password-file FILE]
       [--wifi-ssid SSID [--wifi-passphrase-file FILE] | --no-wifi] [--network-file FILE] [--reset-button GPIOn|none]`

// imageSettings shows or changes the settings of a built image (or a
// flashed disk) in place.
func imageSettings(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("image settings", env)
	img := fs.String("image", "", "disk image `file` or flashed device")
	show := fs.Bool("show", false, "only print the settings (secrets redacted)")
	f := addSettingsFlags(fs)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *img == "" {
		return usageErr("%s", imageSettingsUsage)
	}
	s, err := settings.ReadImage(*img)
	if err != nil {
		return err
	}
	if !*show {
		if err := f.apply(s); err != nil {
			return err
		}
		if err := settings.WriteImage(*img, s); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "settings of %s changed; they apply at the next boot\n", *img)
	}
	out, err := json.MarshalIndent(s.Redacted(), "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s\n", out)
	return nil
}
