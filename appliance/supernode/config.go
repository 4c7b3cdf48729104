// Package supernode wires a supernode's services from its JSON config: the
// DHT server with its persistent store and the relay (Active Proxy) on the
// same libp2p host, the STUN/TURN server whose credentials the relay hands
// to attached nodes, and the web gateway with the names API for its
// domains.
package supernode

import (
	"errors"
	"fmt"
	"net"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/settings"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

// DomainTrust pins the operator key of a domain this supernode serves; the
// device settings' domains are the same entries.
type DomainTrust = settings.Domain

// Config is a supernode's JSON config file.
type Config struct {
	// KeyFile is the node key (PKCS#8 PEM, mode 0600). Required.
	KeyFile string `json:"key_file"`
	// CreateKey makes a new identity on first start when KeyFile does not
	// exist, leaving its 24 words next to it (identity.WordsFile).
	CreateKey bool `json:"create_key,omitempty"`
	// Listen are libp2p multiaddrs; empty: UDP 39001 QUIC and TCP 8090.
	Listen []string `json:"listen,omitempty"`
	// Announce are more addresses this supernode is reachable at,
	// besides its listening ones: the public address in front of a port
	// forward or a cloud provider's 1:1 NAT (where the interface holds
	// only a private address), or a /dns4 name. They are told to peers
	// and listed in its presence and domain records.
	Announce []string `json:"announce,omitempty"`
	// Bootstrap are other supernodes' full multiaddrs (/p2p/<id>).
	Bootstrap []string `json:"bootstrap,omitempty"`
	// DataDir holds the record store. Required: a supernode must not lose
	// records on restart.
	DataDir string `json:"data_dir"`
	// Domains this supernode serves (and trusts), with their operators.
	Domains []DomainTrust `json:"domains,omitempty"`
	// Mesh are the domains of other operators this supernode trusts
	// without serving them (a mesh of operators): it stores and checks
	// their records, resolves their names, lets their gateways forward
	// to nodes attached here, and serves their names to visitors who
	// reach it when their operator's record allows (records.Domain.Mesh).
	Mesh []DomainTrust `json:"mesh,omitempty"`
	// AllowPrivateDials lets the supernode dial loopback, private,
	// link-local and CGNAT addresses (a supernode for a LAN, tests). By
	// default it dials public addresses only: the addresses in records and
	// peer announcements are anyone's to write, and dialling them as given
	// would probe the supernode's own networks.
	AllowPrivateDials bool `json:"allow_private_dials,omitempty"`
	// AddrsFile, if set, receives the node's full multiaddrs (one per line)
	// once it listens: scripts and tests use it with port 0.
	AddrsFile string `json:"addrs_file,omitempty"`
	// MaxNodes bounds the nodes attached at once (default
	// dht.DefaultServerPeers, 4096): the supernode raises its open-file
	// limit for them (or takes fewer, with a warning, where it may not),
	// sizes its libp2p resource limits, and its relay refuses a node
	// past it with the reason (the node goes to its next supernode).
	MaxNodes int `json:"max_nodes,omitempty"`
	// MetricsListen, if set, serves Prometheus metrics at
	// http://<it>/metrics (host:port; a loopback or private address:
	// they are the operator's figures, not the internet's).
	MetricsListen string `json:"metrics_listen,omitempty"`
	// RelayListenIP is the address mapped TCP ports listen on (default all).
	RelayListenIP string `json:"relay_listen_ip,omitempty"`
	// RelayPortMin and RelayPortMax bound mapped TCP ports (default
	// 20000-22000).
	RelayPortMin int `json:"relay_port_min,omitempty"`
	RelayPortMax int `json:"relay_port_max,omitempty"`
	// RelayBytesPerSecond bounds each attached node's relayed traffic,
	// each direction (default relay.DefaultLimits: 1 GiB/s).
	RelayBytesPerSecond int64 `json:"relay_bytes_per_second,omitempty"`
	// TURNListen, if set, is the address of the STUN/TURN server, UDP and
	// TCP (":3478" on a supernode); empty runs none.
	TURNListen string `json:"turn_listen,omitempty"`
	// TURNRelayIP is the public IPv4 address TURN relays on and that its
	// URIs name; empty means TURNListen's address if it names one, else
	// the first public IPv4 address of the machine's interfaces (else its
	// first non-loopback one).
	TURNRelayIP string `json:"turn_relay_ip,omitempty"`
	// TURNPortMin and TURNPortMax bound TURN's relay ports (default any).
	TURNPortMin int `json:"turn_port_min,omitempty"`
	TURNPortMax int `json:"turn_port_max,omitempty"`
	// TURNAllowPrivatePeers lets TURN relay to private, loopback and
	// shared addresses (a supernode for a LAN, tests); by default only
	// public peers can be reached through it.
	TURNAllowPrivatePeers bool `json:"turn_allow_private_peers,omitempty"`
	// TURNCredentialTTL is how long issued credentials last (default 1h).
	TURNCredentialTTL config.Duration `json:"turn_credential_ttl,omitempty"`
	// Gateway, if set, runs the web gateway and the names API for Domains.
	Gateway *GatewayConfig `json:"gateway,omitempty"`
	// RepublishInterval and ReplicateInterval tune the record loops.
	RepublishInterval config.Duration `json:"republish_interval,omitempty"`
	ReplicateInterval config.Duration `json:"replicate_interval,omitempty"`
}

// LoadConfig reads and checks a config file.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := config.Load(path, &c); err != nil {
		return nil, err
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
	if _, err := dht.ParseAnnounce(c.Announce); err != nil {
		return err
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen %q: %w", c.MetricsListen, err)
		}
	}
	if c.MaxNodes < 0 {
		return fmt.Errorf("max_nodes %d: want 0 (the default) or more", c.MaxNodes)
	}
	if c.TURNListen != "" {
		if _, _, err := net.SplitHostPort(c.TURNListen); err != nil {
			return fmt.Errorf("turn_listen %q: %w", c.TURNListen, err)
		}
	}
	if c.Gateway != nil {
		if err := c.Gateway.check(c); err != nil {
			return err
		}
	}
	if c.TURNRelayIP != "" {
		if ip := net.ParseIP(c.TURNRelayIP); ip == nil || ip.To4() == nil {
			return fmt.Errorf("turn_relay_ip %q is not an IPv4 address", c.TURNRelayIP)
		}
	}
	if c.RelayBytesPerSecond < 0 {
		return fmt.Errorf("relay_bytes_per_second %d is negative", c.RelayBytesPerSecond)
	}
	if c.TURNPortMin < 0 || c.TURNPortMax > 65535 || c.TURNPortMin > c.TURNPortMax {
		return fmt.Errorf("turn_port_min/max %d-%d is not a port range", c.TURNPortMin, c.TURNPortMax)
	}
	return nil
}

// Trust returns the pinned domain operators.
func (c *Config) Trust() (records.TrustMap, error) {
	t := records.TrustMap{}
	for _, list := range []struct {
		name    string
		domains []DomainTrust
	}{{"domains", c.Domains}, {"mesh", c.Mesh}} {
		for _, d := range list.domains {
			if err := records.ValidDomain(d.Domain); err != nil {
				return nil, fmt.Errorf("%s: %w", list.name, err)
			}
			id, err := identity.ParseDID(d.Operator)
			if err != nil {
				return nil, fmt.Errorf("%s: operator of %s: %w", list.name, d.Domain, err)
			}
			if _, dup := t[d.Domain]; dup {
				return nil, fmt.Errorf("%s: %s listed twice (in domains or mesh)", list.name, d.Domain)
			}
			t[d.Domain] = id
		}
	}
	return t, nil
}
