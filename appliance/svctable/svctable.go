// Package svctable is the table of services the appliance's init supervises
// (/etc/pc2/services.json), written by the image builder from the profile.
// It is its own tiny package so the init binary stays small.
package svctable

import (
	"encoding/json"
	"fmt"
	"os"
)

// Path is where the table lives in the root file system.
const Path = "/etc/pc2/services.json"

// Service is one supervised process.
type Service struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Args []string `json:"args,omitempty"`
}

// Parse decodes and checks a table.
func Parse(data []byte) ([]Service, error) {
	var svcs []Service
	if err := json.Unmarshal(data, &svcs); err != nil {
		return nil, fmt.Errorf("service table: %w", err)
	}
	seen := map[string]bool{}
	for _, s := range svcs {
		if s.Name == "" || s.Path == "" {
			return nil, fmt.Errorf("service table: entry %+v lacks a name or path", s)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("service table: %s listed twice", s.Name)
		}
		seen[s.Name] = true
	}
	return svcs, nil
}

// Read reads the table at path; a missing file is an empty table.
func Read(path string) ([]Service, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("service table: %w", err)
	}
	return Parse(data)
}

// Encode renders a table.
func Encode(svcs []Service) ([]byte, error) {
	b, err := json.MarshalIndent(svcs, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
