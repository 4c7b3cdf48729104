package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/internal/atomicfile"
)

// TrialFile is where a device keeps its record of the last settings change
// that could lose it its network (see Trial).
const TrialFile = "/perm/pc2/settings-trial.json"

// Trial states.
const (
	// TrialPending: the new settings are on the boot partition (or about
	// to be) and run on trial; the owner has not kept them yet.
	TrialPending = "pending"
	// TrialReturning: the device is writing Previous back (a cut here is
	// finished at the next start).
	TrialReturning = "returning"
	// TrialKept: the owner kept the new settings.
	TrialKept = "kept"
	// TrialReturned: the device went back to Previous.
	TrialReturned = "returned"
)

// Trial is a change of the network settings (wired addressing, Wi-Fi)
// made on the device itself, which may cut the owner off it: like a
// router's, the device keeps the new settings only when the owner says so
// from the dashboard within Minutes of their start, and otherwise writes
// Previous back and restarts. The record lives on perm, next to the
// settings copy, so that it outlives the restarts it spans.
type Trial struct {
	State string `json:"state"`
	// Previous are the settings before the change, New the ones on trial.
	Previous *Settings `json:"previous"`
	New      *Settings `json:"new"`
	// Minutes the owner has to keep New, counted from the device
	// service's start on them.
	Minutes int `json:"minutes"`
	// Boot is the kernel's boot ID of the start whose clock counts the
	// minutes and Since that clock (CLOCK_BOOTTIME) when it began: a
	// service restarted in the same boot goes on counting, a new boot (a
	// power cut) starts again.
	Boot  string          `json:"boot,omitempty"`
	Since config.Duration `json:"since,omitempty"`
	// Reason says why the device returned to Previous.
	Reason string `json:"reason,omitempty"`
	// Changed is the wall clock at the last state change (it may be
	// unset on a board without a real-time clock).
	Changed time.Time `json:"changed,omitzero"`
}

// Trial limits, in minutes.
const (
	MinTrialMinutes     = 1
	MaxTrialMinutes     = 30
	DefaultTrialMinutes = 5
)

// LoadTrial reads the record at path; nil without one.
func LoadTrial(path string) (*Trial, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("settings trial: %w", err)
	}
	var t Trial
	if err := config.Decode(path, b, &t); err != nil {
		return nil, fmt.Errorf("settings trial: %w", err)
	}
	switch t.State {
	case TrialPending, TrialReturning, TrialKept, TrialReturned:
	default:
		return nil, fmt.Errorf("settings trial %s: unknown state %q", path, t.State)
	}
	if t.Previous == nil || t.New == nil {
		return nil, fmt.Errorf("settings trial %s: previous or new settings missing", path)
	}
	return &t, nil
}

// Save writes the record to path, whole or not at all.
func (t *Trial) Save(path string) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("settings trial: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("settings trial: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("settings trial: %w", err)
	}
	return nil
}

// RemoveTrial removes the record at path, if any.
func RemoveTrial(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("settings trial: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// Same reports whether a and b are the same settings.
func Same(a, b *Settings) bool {
	return bytes.Equal(mustJSON(a), mustJSON(b))
}

// NetworkChanged reports whether going from a to b changes how the
// device reaches the network (and the owner reaches it): its wired
// addressing or its Wi-Fi.
func NetworkChanged(a, b *Settings) bool {
	return !bytes.Equal(mustJSON(a.Network), mustJSON(b.Network)) || !bytes.Equal(mustJSON(a.WiFi), mustJSON(b.WiFi)) ||
		!bytes.Equal(mustJSON(a.WiFiNetworks), mustJSON(b.WiFiNetworks))
}

// Clone returns a deep copy of s.
func (s *Settings) Clone() *Settings {
	var c Settings
	if err := json.Unmarshal(mustJSON(s), &c); err != nil {
		panic(fmt.Sprintf("settings: clone: %v", err))
	}
	return &c
}

// mustJSON encodes settings types, which always encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("settings: encode: %v", err))
	}
	return b
}
