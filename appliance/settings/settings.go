// Package settings is the appliance's device settings file: what it holds,
// where it lives on the device, and how it is changed in an image.
//
// Where: the file pc2-settings.json in the root directory of the boot
// partition (p1, FAT16), not the root file system. An update replaces the
// root, so settings there would be lost; the boot partition is also what a
// person can open on any computer after flashing a card, like the Pi's own
// config.txt. On every boot the device reads it from the boot partition and
// keeps a copy on perm (PermFile), which it falls back on when the boot
// partition has none (for example after an update wrote a new boot
// partition).
//
// How it is changed: image.Build writes the file padded with spaces to
// ReservedSize, and `pc2 image settings` rewrites it in place within those
// clusters (bootpart.Rewrite): no rebuild, no mounting, nothing else on
// the disk moves.
//
// Secrets: the admin password is only ever stored as an argon2id hash
// (package password). The Wi-Fi passphrase is stored as given: the Wi-Fi
// chip needs the key itself, and the key derived from it (the PSK) is as
// good as the passphrase to an attacker.
//
// Types: every part of the file is a plain type of this package, not a
// service's config, so that the file's format stays put when a service's
// Go types change, and the init (which reads the file for a hostname and
// an address mode) does not link the personal cloud or libp2p. The device
// and the profiles convert them (Network.Config, WiFi.Config,
// profile.NodeConfig, profile.SupernodeConfig, the device's pullConfig).
// The network and Wi-Fi rules stay netconf's and wifi's: Check converts
// and asks them, so the init and the device refuse the same files.
package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/provisioning/password"
)

// Where the settings live.
const (
	// BootFile is the file's name in the boot partition's root directory.
	BootFile = "pc2-settings.json"
	// PermFile is the device's copy on the perm partition.
	PermFile = "/perm/pc2/settings.json"
	// ReservedSize is the room image.Build gives the file on the boot
	// partition; settings must fit in it.
	ReservedSize = 16 << 10
)

// Profiles.
const (
	Personal  = "personal"
	Supernode = "supernode"
)

// Settings are a device's settings.
type Settings struct {
	// Hostname of the device (default: gokrazy's, from the image).
	Hostname string `json:"hostname,omitempty"`
	// Profile is "personal" or "supernode".
	Profile string `json:"profile"`
	// Supernodes: full multiaddrs of the supernodes to use (personal) or to
	// bootstrap from (supernode).
	Supernodes []string `json:"supernodes,omitempty"`
	// Domains a supernode serves (and trusts), with their operators.
	Domains []Domain `json:"domains,omitempty"`
	// Mesh are other operators' domains a supernode trusts without
	// serving them (supernode.Config.Mesh).
	Mesh []Domain `json:"mesh,omitempty"`
	// PinSupernodes keeps a personal node to Supernodes (no discovery:
	// personal.Config.PinSupernodes).
	PinSupernodes bool `json:"pin_supernodes,omitempty"`
	// OtherOperators lets a personal node attach to a supernode of
	// another operator of its operator's mesh too
	// (personal.Config.OtherOperators).
	OtherOperators bool `json:"other_operators,omitempty"`
	// PublicURL of the personal node, published in its did record.
	PublicURL string `json:"public_url,omitempty"`
	// NameServices are the domains the personal cloud's setup wizard
	// offers for a name (with their names API when not https://domain).
	NameServices []NameService `json:"name_services,omitempty"`
	// Quota limits the personal cloud's files, in bytes (0: none).
	Quota int64 `json:"quota,omitempty"`
	// Listen overrides the supernode's libp2p listeners.
	Listen []string `json:"listen,omitempty"`
	// Announce are more addresses the supernode is reachable at, besides
	// its interfaces' (the public address in front of a port forward or
	// a provider's 1:1 NAT; dht.Config.Announce).
	Announce []string `json:"announce,omitempty"`
	// PrivateNetwork: the supernode serves a private network (a LAN, a
	// lab), so it dials and relays to private addresses; by default it
	// reaches public addresses only.
	PrivateNetwork bool `json:"private_network,omitempty"`
	// MetricsListen, if set, serves the profile's Prometheus metrics at
	// http://<it>/metrics (host:port).
	MetricsListen string `json:"metrics_listen,omitempty"`
	// Network configures the wired network (nil: DHCP on the first
	// Ethernet interface).
	Network *Network `json:"network,omitempty"`
	// WiFi joins a wireless network (devices with Wi-Fi only);
	// WiFiNetworks are more, tried in this order when WiFi cannot be
	// joined (another access point, a phone's hotspot).
	WiFi         *WiFi  `json:"wifi,omitempty"`
	WiFiNetworks []WiFi `json:"wifi_networks,omitempty"`
	// AdminPasswordHash is the argon2id hash of the admin password, which
	// guards the device's admin API (never the password itself).
	AdminPasswordHash string `json:"admin_password_hash,omitempty"`
	// Gateway tunes a supernode's web gateway for Domains (the supernode
	// profile serves them on port 80 whenever Domains is set).
	Gateway *Gateway `json:"gateway,omitempty"`
	// ResetButton is the GPIO pin of a factory-reset button, e.g.
	// "GPIO17" (Raspberry Pi only; empty: none).
	ResetButton string `json:"reset_button,omitempty"`
	// Update is how the device updates itself (package update).
	Update *Update `json:"update,omitempty"`
	// TLS is the personal node's own certificate for its name (nil: on,
	// from Let's Encrypt).
	TLS *NodeTLS `json:"tls,omitempty"`
	// NTP lists the time servers (host names or IP addresses) gokrazy's
	// NTP client asks; empty: its default, the gokrazy zone of
	// pool.ntp.org. A board without a real-time clock (a Raspberry Pi)
	// starts at 1970 and the device's network waits for this clock.
	NTP []string `json:"ntp,omitempty"`
}

// MaxNTPServers bounds Settings.NTP.
const MaxNTPServers = 8

// NodeTLS is where a personal node gets the certificate for its name,
// with which visitors' TLS ends on the device and not at a supernode.
type NodeTLS struct {
	// Off: no certificate of its own; the gateways terminate TLS (and
	// could read the traffic).
	Off bool `json:"off,omitempty"`
	// ACMECA is the ACME directory URL (default Let's Encrypt),
	// ACMECARoot PEM roots of a private CA's own HTTPS, ACMEEmail the
	// ACME account's contact.
	ACMECA     string `json:"acme_ca,omitempty"`
	ACMECARoot string `json:"acme_ca_root,omitempty"`
	ACMEEmail  string `json:"acme_email,omitempty"`
}

// Gateway is the supernode web gateway's part of the settings. When the
// perm partition holds the operator key of a domain (pc2/operator.key),
// the gateway grants its names.
type Gateway struct {
	// HTTPS serves port 443 with ACME certificates (port 80 then answers
	// challenges and redirects); false: plain HTTP on port 80.
	HTTPS bool `json:"https,omitempty"`
	// ACMECA is the ACME directory URL (default Let's Encrypt),
	// ACMECARoot PEM roots of a private CA's own HTTPS, ACMEEmail the
	// ACME account's contact.
	ACMECA     string `json:"acme_ca,omitempty"`
	ACMECARoot string `json:"acme_ca_root,omitempty"`
	ACMEEmail  string `json:"acme_email,omitempty"`
	// NamePolicy is open (default), invite or allowlist; Invites are its
	// codes and Allow its DIDs.
	NamePolicy string   `json:"name_policy,omitempty"`
	Invites    []string `json:"invites,omitempty"`
	Allow      []string `json:"allow,omitempty"`
	// TLS is where visitors' TLS ends for the domains whose names this
	// supernode grants: auto (default: at the node once it holds a
	// certificate), end-to-end (only at the node) or gateway (always at
	// the gateways).
	TLS string `json:"tls,omitempty"`
	// MeshOpen lets the mesh's other gateways serve the names of the
	// domains whose names this supernode grants (supernode
	// GatewayConfig.MeshOpen).
	MeshOpen bool `json:"mesh_open,omitempty"`
	// CustomDomains serves owners' own domains: "open" (any node with a
	// valid proof), "invite" (hosts registered with one of
	// CustomDomainInvites) or "" (off).
	CustomDomains       string   `json:"custom_domains,omitempty"`
	CustomDomainInvites []string `json:"custom_domain_invites,omitempty"`
}

// NameService is a domain whose names a personal node may claim.
type NameService struct {
	Domain string `json:"domain"`
	// API is the names API base URL; empty: https://<domain>.
	API string `json:"api,omitempty"`
	// Operator, if set, pins the domain's operator DID (see
	// cloud.NameService).
	Operator string `json:"operator,omitempty"`
}

// Domain pins the operator key of a domain a supernode serves.
type Domain struct {
	Domain   string `json:"domain"`
	Operator string `json:"operator"` // did:boson:...
}

// Parse decodes and checks a settings file. Unknown fields are refused,
// trailing white space (the padding) is fine.
func Parse(data []byte) (*Settings, error) {
	var s Settings
	if err := config.Decode(BootFile, data, &s); err != nil {
		return nil, err
	}
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	return &s, nil
}

// Check reports the first problem with s that does not need the network
// stack to see (profile.Check adds the supernode address checks).
func (s *Settings) Check() error {
	switch s.Profile {
	case Personal, Supernode:
	case "":
		return errors.New("profile is required (personal or supernode)")
	default:
		return fmt.Errorf("unknown profile %q (want personal or supernode)", s.Profile)
	}
	if s.Hostname != "" {
		if err := checkHostname(s.Hostname); err != nil {
			return err
		}
	}
	if err := s.Network.Check(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := s.checkWiFi(); err != nil {
		return err
	}
	if s.AdminPasswordHash != "" {
		if err := password.Check(s.AdminPasswordHash); err != nil {
			return fmt.Errorf("admin_password_hash: %w", err)
		}
	}
	if g := s.Gateway; g != nil {
		switch g.NamePolicy {
		case "", "open", "invite", "allowlist":
		default:
			return fmt.Errorf("gateway: name_policy %q: want open, invite or allowlist", g.NamePolicy)
		}
		if g.HTTPS && len(s.Domains) == 0 {
			return errors.New("gateway: https needs domains to get certificates for")
		}
		switch g.TLS {
		case "", "auto", "end-to-end", "gateway":
		default:
			return fmt.Errorf("gateway: tls %q: want auto, end-to-end or gateway", g.TLS)
		}
		if g.CustomDomains != "" && g.CustomDomains != "open" && g.CustomDomains != "invite" {
			return fmt.Errorf("gateway: custom_domains %q: want open, invite or nothing", g.CustomDomains)
		}
		if len(g.CustomDomainInvites) > 0 && g.CustomDomains != "invite" {
			return errors.New("gateway: custom_domain_invites are for custom_domains invite")
		}
	}
	for i, ns := range s.NameServices {
		if ns.Domain == "" {
			return fmt.Errorf("name_services[%d]: domain is required", i)
		}
		if ns.API != "" && !strings.HasPrefix(ns.API, "http://") && !strings.HasPrefix(ns.API, "https://") {
			return fmt.Errorf("name_services[%d]: api %q is not an http(s) URL", i, ns.API)
		}
		if ns.Operator != "" {
			if _, err := identity.ParseDID(ns.Operator); err != nil {
				return fmt.Errorf("name_services[%d]: operator: %w", i, err)
			}
		}
	}
	if s.Quota < 0 {
		return fmt.Errorf("quota %d is negative", s.Quota)
	}
	if len(s.NTP) > MaxNTPServers {
		return fmt.Errorf("ntp: %d servers, at most %d", len(s.NTP), MaxNTPServers)
	}
	for _, h := range s.NTP {
		if err := checkNTPServer(h); err != nil {
			return err
		}
	}
	if s.Update != nil {
		if err := s.Update.Check(); err != nil {
			return err
		}
	}
	if s.ResetButton != "" && !strings.HasPrefix(s.ResetButton, "GPIO") {
		return fmt.Errorf("reset_button %q: want a GPIO pin name such as GPIO17", s.ResetButton)
	}
	return nil
}

// MaxWiFiNetworks bounds WiFi and WiFiNetworks together.
const MaxWiFiNetworks = 8

// checkWiFi checks the Wi-Fi networks: each as the wifi service checks
// it, none twice, more only with a first.
func (s *Settings) checkWiFi() error {
	if s.WiFi == nil {
		if len(s.WiFiNetworks) > 0 {
			return errors.New("wifi_networks: more Wi-Fi networks need a first one (wifi)")
		}
		return nil
	}
	all := append([]WiFi{*s.WiFi}, s.WiFiNetworks...)
	if len(all) > MaxWiFiNetworks {
		return fmt.Errorf("wifi: %d networks, at most %d", len(all), MaxWiFiNetworks)
	}
	seen := map[string]bool{}
	for _, w := range all {
		if err := w.Config().Validate(); err != nil {
			return err
		}
		if seen[w.SSID] {
			return fmt.Errorf("wifi: network %q listed twice", w.SSID)
		}
		seen[w.SSID] = true
	}
	return nil
}

// checkHostname accepts one RFC 1123 label.
func checkHostname(h string) error {
	if len(h) > 63 {
		return fmt.Errorf("hostname %q is longer than 63 characters", h)
	}
	for i, c := range h {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(h)-1
		if !ok {
			return fmt.Errorf("hostname %q: letters, digits and inner hyphens only", h)
		}
	}
	return nil
}

// checkNTPServer accepts an IP address or a DNS name: gokrazy's NTP client
// takes each as a command line argument, so nothing else (no option, no
// port) may pass.
func checkNTPServer(h string) error {
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) == 0 || len(h) > 253 {
		return fmt.Errorf("ntp: server %q: want a host name or IP address", h)
	}
	for _, label := range strings.Split(h, ".") {
		if err := checkHostname(label); err != nil || label == "" {
			return fmt.Errorf("ntp: server %q: want a host name or IP address", h)
		}
	}
	return nil
}

// Encode returns the file contents for s: indented JSON padded with spaces
// to ReservedSize.
func Encode(s *Settings) ([]byte, error) {
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("settings: encode: %w", err)
	}
	b = append(b, '\n')
	if len(b) > ReservedSize {
		return nil, fmt.Errorf("settings: %d bytes do not fit the %d reserved on the boot partition", len(b), ReservedSize)
	}
	return append(b, bytes.Repeat([]byte(" "), ReservedSize-len(b))...), nil
}

// Redacted returns a copy of s safe to show: secrets replaced by "(set)".
func (s *Settings) Redacted() *Settings {
	c := *s
	redact := func(w WiFi) WiFi {
		if w.Passphrase != "" {
			w.Passphrase = "(set)"
		}
		return w
	}
	if c.WiFi != nil {
		w := redact(*c.WiFi)
		c.WiFi = &w
	}
	c.WiFiNetworks = nil
	for _, w := range s.WiFiNetworks {
		c.WiFiNetworks = append(c.WiFiNetworks, redact(w))
	}
	if c.AdminPasswordHash != "" {
		c.AdminPasswordHash = "(set)"
	}
	return &c
}

// DHCPOn reports whether the wired interface name (eth0, or usb0 on a
// Raspberry Pi) should get its address from the device's DHCP client: not
// when the network settings make it static. An interface without a name
// in the settings is the first Ethernet interface, which is eth0 on
// every board that has one.
func (s *Settings) DHCPOn(name string) bool {
	if s.Network == nil {
		return true
	}
	for _, i := range s.Network.Interfaces {
		if i.Mode == ModeStatic && (i.Name == name || i.Name == "" && name == "eth0") {
			return false
		}
	}
	return true
}
