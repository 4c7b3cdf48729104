// Package personal runs a personal node's services from its JSON config:
// its identity (created on first boot, provisioned, or made by the setup
// wizard), its did record kept published through the configured
// supernodes and their relays (services/tunnel), and the personal cloud
// on port 4200 (services/cloud), also served through the relays.
package personal

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/certs"
	"github.com/pc2/pc2/services/cloud"
)

// DefaultListen is the personal cloud's port.
const DefaultListen = ":4200"

// DefaultP2PListen is the node's libp2p listener for direct connections
// (the Active Proxy port, as on supernodes).
const DefaultP2PListen = "/ip4/0.0.0.0/tcp/8090"

// Config is a personal node's JSON config file.
type Config struct {
	// KeyFile is the node key. Required.
	KeyFile string `json:"key_file"`
	// CreateKey makes a new identity on first start when KeyFile does not
	// exist, writing its 24 words next to it (identity.WordsFile) for the
	// owner.
	CreateKey bool `json:"create_key,omitempty"`
	// Supernodes are full multiaddrs (with /p2p/<id>) of the supernodes to
	// publish through. Without any, the node asks its name services'
	// gateways (GET https://<domain>/api/supernodes).
	Supernodes []string `json:"supernodes"`
	// MaxAttached is how many of Supernodes to stay attached to at once,
	// in their order; the others are the failover (default 2).
	MaxAttached int `json:"max_attached,omitempty"`
	// PinSupernodes keeps the node to Supernodes. By default one entry
	// point is enough: the node also attaches to the other supernodes
	// its operators' signed domain records list, fastest first, and
	// remembers them for its next start (discover.go).
	PinSupernodes bool `json:"pin_supernodes,omitempty"`
	// OtherOperators lets the node attach to one supernode of another
	// operator of its operator's mesh too (from its name services'
	// /api/supernodes), so that it stays reachable when its own
	// operator's supernodes are all gone. Off by default: a relay reads
	// what it relays unless visitors' TLS ends on the node.
	OtherOperators bool `json:"other_operators,omitempty"`
	// Listen is the personal cloud's address (default ":4200").
	Listen string `json:"listen,omitempty"`
	// MetricsListen, if set, serves the node's Prometheus metrics at
	// http://<it>/metrics (host:port; loopback or the local network).
	MetricsListen string `json:"metrics_listen,omitempty"`
	// DataDir holds the personal cloud: the owner's files and its state
	// (default: the folder "cloud" next to the key file).
	DataDir string `json:"data_dir,omitempty"`
	// Quota limits the owner's files, in bytes (default: none).
	Quota int64 `json:"quota,omitempty"`
	// NameServices are the domains the setup wizard offers for a name.
	NameServices []cloud.NameService `json:"name_services,omitempty"`
	// PublicURL, if set, is published as the node's "cloud" service
	// endpoint (e.g. http://192.0.2.7:4200).
	PublicURL string `json:"public_url,omitempty"`
	// Direct are multiaddrs at which the node is directly reachable.
	Direct []string `json:"direct,omitempty"`
	// Mode: "direct" (reachable at Direct, no relay), "relayed" (relay
	// only, nothing listens), or empty: automatic, attach to the relays and
	// listen on P2PListen; a node the relay reaches there by dial-back
	// publishes that address and is direct.
	Mode string `json:"mode,omitempty"`
	// P2PListen are the node's libp2p listeners in automatic and direct
	// mode (default /ip4/0.0.0.0/tcp/8090).
	P2PListen []string `json:"p2p_listen,omitempty"`
	// ExposeTCP maps service names to local addresses the relays may
	// reach on a mapped public port ("ssh": "127.0.0.1:22").
	ExposeTCP map[string]string `json:"expose_tcp,omitempty"`
	// RecordTTL is the did record lifetime (default 24h, at most 7 days).
	RecordTTL config.Duration `json:"record_ttl,omitempty"`
	// RepublishInterval is how often the record is re-signed (default 1h).
	RepublishInterval config.Duration `json:"republish_interval,omitempty"`
	// Backup configures the backups of the cloud's data (on unless Off;
	// they wait for a location, which the owner picks on the dashboard).
	Backup BackupConfig `json:"backup,omitzero"`
	// TLS, if set, gets the node a certificate of its own for its name
	// (end-to-end TLS: the supernodes cannot read visitors' traffic);
	// "tls": {} takes it from Let's Encrypt. The appliance sets it.
	TLS *TLSConfig `json:"tls,omitempty"`
}

// BackupConfig configures the node's backups (services/backup).
type BackupConfig struct {
	// Off turns backups off: no schedule, no dashboard card.
	Off bool `json:"off,omitempty"`
	// Restic is the restic program (default "restic" on PATH; the
	// appliance's is /user/restic).
	Restic string `json:"restic,omitempty"`
	// Location is where backups go until the owner picks one.
	Location *backup.Location `json:"location,omitempty"`
	// Interval between backups (default 24h).
	Interval config.Duration `json:"interval,omitempty"`
	// Retention (default 7 daily, 4 weekly, 12 monthly).
	KeepDaily   int `json:"keep_daily,omitempty"`
	KeepWeekly  int `json:"keep_weekly,omitempty"`
	KeepMonthly int `json:"keep_monthly,omitempty"`
	// CheckInterval between checks that read back a sample (default 7
	// days).
	CheckInterval config.Duration `json:"check_interval,omitempty"`
	// Include are more files or folders to back up, by name (the
	// appliance's settings).
	Include map[string]string `json:"include,omitempty"`
	// GOGC and MemoryLimit (GOMEMLIMIT, e.g. "96MiB") are restic's: lower
	// means less memory and more CPU.
	GOGC        string `json:"gogc,omitempty"`
	MemoryLimit string `json:"memory_limit,omitempty"`
	// Connections bounds restic's connections to the location (0:
	// restic's 5; fewer hold fewer packs in memory while restoring).
	Connections int `json:"connections,omitempty"`
}

// Modes.
const (
	ModeDirect  = "direct"
	ModeRelayed = "relayed"
)

// LoadConfig reads and checks a config file.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := config.Load(path, &c); err != nil {
		return nil, err
	}
	if c.KeyFile == "" {
		return nil, fmt.Errorf("config %s: key_file is required", path)
	}
	if len(c.Supernodes) == 0 && (len(c.NameServices) == 0 || c.PinSupernodes) {
		return nil, fmt.Errorf("config %s: supernodes is required (at least one), or name_services to learn them from", path)
	}
	if c.Mode != "" && c.Mode != ModeDirect && c.Mode != ModeRelayed {
		return nil, fmt.Errorf("config %s: mode %q (want direct or relayed)", path, c.Mode)
	}
	if c.Quota < 0 {
		return nil, fmt.Errorf("config %s: quota %d is negative", path, c.Quota)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return nil, fmt.Errorf("config %s: metrics_listen %q: %w", path, c.MetricsListen, err)
		}
	}
	if t := c.TLS; t != nil {
		if _, err := certs.Roots(t.CARoot, t.CARootFile); err != nil {
			return nil, fmt.Errorf("config %s: tls: %w", path, err)
		}
	}
	if l := c.Backup.Location; l != nil {
		if err := l.Check(); err != nil {
			return nil, fmt.Errorf("config %s: backup: %w", path, err)
		}
	}
	for name, p := range c.Backup.Include {
		if name == cloud.BackupFolder || !filepath.IsAbs(p) {
			return nil, fmt.Errorf("config %s: backup.include %q: want another name than %q and an absolute path", path, name, cloud.BackupFolder)
		}
	}
	for i, ns := range c.NameServices {
		if ns.Domain == "" {
			return nil, fmt.Errorf("config %s: name_services[%d]: domain is required", path, i)
		}
		if ns.Operator != "" {
			if _, err := identity.ParseDID(ns.Operator); err != nil {
				return nil, fmt.Errorf("config %s: name_services[%d]: operator: %w", path, i, err)
			}
		}
	}
	return &c, nil
}

// CloudDir is the personal cloud's data dir of c.
func (c *Config) CloudDir() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return filepath.Join(filepath.Dir(c.KeyFile), "cloud")
}
