// Package supernode wires a supernode's services from its JSON config: for
// now the DHT server with its persistent store; later the relay, TURN and
// the web gateway join it here.
package supernode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

// ErrNotConfigured means there is no config file (gokrazy's contract: exit
// 125 so the service is not restarted).
var ErrNotConfigured = errors.New("supernode: not configured")

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

// DomainTrust pins the operator key of a domain this supernode serves.
type DomainTrust struct {
	Domain   string `json:"domain"`
	Operator string `json:"operator"` // did:boson:...
}

// Config is a supernode's JSON config file.
type Config struct {
	// KeyFile is the node key (PKCS#8 PEM, mode 0600). Required.
	KeyFile string `json:"key_file"`
	// Listen are libp2p multiaddrs; empty: UDP 39001 QUIC and TCP 8090.
	Listen []string `json:"listen,omitempty"`
	// Bootstrap are other supernodes' full multiaddrs (/p2p/<id>).
	Bootstrap []string `json:"bootstrap,omitempty"`
	// DataDir holds the record store. Required: a supernode must not lose
	// records on restart.
	DataDir string `json:"data_dir"`
	// Domains this supernode trusts, with their operators.
	Domains []DomainTrust `json:"domains,omitempty"`
	// AddrsFile, if set, receives the node's full multiaddrs (one per line)
	// once it listens: scripts and tests use it with port 0.
	AddrsFile string `json:"addrs_file,omitempty"`
	// RepublishInterval and ReplicateInterval tune the record loops.
	RepublishInterval Duration `json:"republish_interval,omitempty"`
	ReplicateInterval Duration `json:"replicate_interval,omitempty"`
}

// LoadConfig reads and checks a config file. Unknown fields are errors, so
// a typo does not silently fall back to a default.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNotConfigured, path)
		}
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Check(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Check reports the first problem with c.
func (c *Config) Check() error {
	if c.KeyFile == "" {
		return errors.New("key_file is required")
	}
	if c.DataDir == "" {
		return errors.New("data_dir is required (records must survive a restart)")
	}
	if _, err := c.Trust(); err != nil {
		return err
	}
	return nil
}

// Trust returns the pinned domain operators.
func (c *Config) Trust() (records.TrustMap, error) {
	t := records.TrustMap{}
	for _, d := range c.Domains {
		if err := records.ValidDomain(d.Domain); err != nil {
			return nil, fmt.Errorf("domains: %w", err)
		}
		id, err := identity.ParseDID(d.Operator)
		if err != nil {
			return nil, fmt.Errorf("domains: operator of %s: %w", d.Domain, err)
		}
		if _, dup := t[d.Domain]; dup {
			return nil, fmt.Errorf("domains: %s listed twice", d.Domain)
		}
		t[d.Domain] = id
	}
	return t, nil
}
