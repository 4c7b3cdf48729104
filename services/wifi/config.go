package wifi

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// Config names the network to join. It uses the settings file's
// convention (and wpa_supplicant's): a Passphrase of 64 hex digits is the
// PSK itself, since a passphrase has at most 63 characters.
type Config struct {
	// SSID is the network's name, 1-32 bytes.
	SSID string `json:"ssid"`
	// Passphrase is the WPA2-Personal passphrase (8-63 printable ASCII
	// characters) or the 256-bit PSK as 64 hex digits; empty for an open
	// network.
	Passphrase string `json:"passphrase,omitempty"`
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if n := len(c.SSID); n < 1 || n > 32 {
		return fmt.Errorf("wifi: ssid must be 1-32 bytes, got %d", n)
	}
	p := c.Passphrase
	switch {
	case p == "":
	case len(p) == 64:
		if _, err := hex.DecodeString(p); err != nil {
			return errors.New("wifi: a 64-character passphrase must be the PSK in hex digits (a passphrase has 8-63 characters)")
		}
	case len(p) >= 8 && len(p) <= 63:
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] > 0x7e {
				return fmt.Errorf("wifi: passphrase must be printable ASCII; byte %d is 0x%02x", i, p[i])
			}
		}
	default:
		return fmt.Errorf("wifi: passphrase must be 8-63 characters or 64 hex digits, got %d bytes", len(p))
	}
	return nil
}

// Open reports whether c is for an open (unencrypted) network.
func (c Config) Open() bool { return c.Passphrase == "" }

// PMK returns the 32-byte pairwise master key the driver's firmware needs
// for the 4-way handshake, or nil for an open network. c must be valid.
func (c Config) PMK() ([]byte, error) {
	switch len(c.Passphrase) {
	case 0:
		return nil, nil
	case 64:
		return hex.DecodeString(c.Passphrase)
	}
	// IEEE 802.11i-2004 H.4: PBKDF2-HMAC-SHA1, SSID as salt, 4096
	// iterations, 256 bits.
	return pbkdf2.Key(sha1.New, c.Passphrase, []byte(c.SSID), 4096, 32)
}

// String names the network without the passphrase.
func (c Config) String() string {
	if c.Open() {
		return fmt.Sprintf("%q (open)", c.SSID)
	}
	return fmt.Sprintf("%q (WPA2, passphrase set)", c.SSID)
}

// GoString keeps the passphrase out of %#v.
func (c Config) GoString() string {
	return fmt.Sprintf("wifi.Config{SSID: %q, Passphrase: %q}", c.SSID, redact(c.Passphrase))
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "(set)"
}

// LogValue keeps the passphrase out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("ssid", c.SSID), slog.Bool("open", c.Open()))
}
