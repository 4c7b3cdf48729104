// Package config holds the conventions every PC2 service config file
// follows: JSON, unknown fields refused (a typo must not fall back to a
// default silently), durations written as "1h30m", and a missing file
// reported as ErrNotConfigured so services can exit 125 under gokrazy.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// ErrNotConfigured means the config file does not exist.
var ErrNotConfigured = errors.New("config: not configured")

// Load reads the JSON file at path into v, refusing unknown fields and
// trailing data.
func Load(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s does not exist", ErrNotConfigured, path)
		}
		return fmt.Errorf("read config %s: %w", path, err)
	}
	return Decode(path, data, v)
}

// Decode decodes the JSON config data (named name in errors) into v,
// refusing unknown fields and trailing data; trailing white space is fine.
func Decode(name string, data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	// More would miss a stray '}' or ']': only the end of the input (white
	// space aside, as in a padded settings file) is accepted.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("config %s: trailing data after the JSON object", name)
	}
	return nil
}

// Duration is a time.Duration written as "1h30m" in JSON.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"1h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}
