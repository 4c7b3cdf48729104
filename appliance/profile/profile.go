// Package profile turns device settings (package settings) into what an
// appliance runs. At image-build time, Build gives the image builder the
// programs under /user, the root file system's fixed files (the service
// table the init reads, gokrazy's web interface ports) and the boot
// partition's settings file. On the device, NodeConfig and SupernodeConfig
// give `pc2 device` the config of the services its profile runs: the
// settings can change after the image was built (`pc2 image settings`),
// so nothing derived from them is baked into the root.
//
// The two profiles are "personal" (personal node) and "supernode" (DHT
// server, later relay, TURN and gateway).
package profile

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/appliance/svctable"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway"
)

// Paths on the device. The service configs put their files under the perm
// partition (PermDir on the device; tests pass another directory).
const (
	ServicesFile = svctable.Path
	PermDir      = "/perm"
	PC2Binary    = "/user/pc2"
	PC2Package   = "github.com/pc2/pc2/cmd/pc2"
	// ResticBinary is the backup engine (issue 17): restic, built from the
	// module proxy at a pinned version into every image.
	ResticBinary = "/user/restic"
)

// Restic is the backup engine's module and version.
var Restic = image.External{Module: backup.ResticModule, Version: backup.ResticVersion, Package: backup.ResticPackage}

// ResticMemoryLimit is restic's GOMEMLIMIT on the appliance: a Pi with
// 1 GiB runs the node and a backup (docs/benchmarks.md, issue 17).
const ResticMemoryLimit = "64MiB"

// ResticConnections bounds restic's connections on the appliance: a
// restore holds a pack in memory for each.
const ResticConnections = 2

// KeyFile is the node key under perm, DataDir PC2's directory there.
func KeyFile(perm string) string { return filepath.Join(perm, "pc2", "node.key") }
func DataDir(perm string) string { return filepath.Join(perm, "pc2") }

// gokrazy's web interface ports, away from the gateway's 80 and 443 (a
// settings change can turn any device into a supernode).
const (
	GokrazyHTTPPort  = 8080
	GokrazyHTTPSPort = 8443
)

// Profiles.
const (
	Personal  = settings.Personal
	Supernode = settings.Supernode
)

// Check reports the first problem with s, including the checks that need
// the DHT's address parser.
func Check(s *settings.Settings) error {
	if err := s.Check(); err != nil {
		return err
	}
	if s.Profile == Personal && len(s.Supernodes) == 0 && len(s.NameServices) == 0 {
		return errors.New("profile personal needs a supernode, or a name service to learn them from")
	}
	if _, err := dht.ParseAddrInfos(s.Supernodes); err != nil {
		return fmt.Errorf("supernodes: %w", err)
	}
	for _, d := range slices.Concat(s.Domains, s.Mesh) {
		if err := records.ValidDomain(d.Domain); err != nil {
			return fmt.Errorf("domains: %w", err)
		}
	}
	if _, err := SupernodeConfig(s, PermDir).Trust(); err != nil {
		return fmt.Errorf("domains: %w", err)
	}
	if s.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(s.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen %q: %w", s.MetricsListen, err)
		}
	}
	return nil
}

// Image is what the image builder needs from a profile.
type Image struct {
	Programs  map[string]string         // /user/<name> -> Go package
	External  map[string]image.External // /user/<name> -> a program of another module
	Files     map[string][]byte         // root file system path -> contents
	BootFiles map[string][]byte         // boot partition path -> contents
}

// Build returns the programs and files of an image with settings s.
func Build(s *settings.Settings) (*Image, error) {
	if err := Check(s); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	boot, err := settings.Encode(s)
	if err != nil {
		return nil, err
	}
	img, err := Root()
	if err != nil {
		return nil, err
	}
	img.BootFiles = map[string][]byte{"/" + settings.BootFile: boot}
	return img, nil
}

// Root returns the programs and root files every image has, whatever its
// settings (what a release bundle's root carries); BootFiles is empty.
func Root() (*Image, error) {
	table, err := svctable.Encode([]svctable.Service{{Name: "device", Path: PC2Binary, Args: []string{"device"}}})
	if err != nil {
		return nil, err
	}
	return &Image{
		Programs: map[string]string{"pc2": PC2Package},
		External: map[string]image.External{"restic": Restic},
		Files: map[string][]byte{
			ServicesFile:          table,
			"/etc/http-port.txt":  []byte(fmt.Sprint(GokrazyHTTPPort)),
			"/etc/https-port.txt": []byte(fmt.Sprint(GokrazyHTTPSPort)),
		},
	}, nil
}

// NodeConfig is the personal node's config for settings s, with its files
// under perm.
func NodeConfig(s *settings.Settings, perm string) *personal.Config {
	// No key is made at boot: without a provisioned one, the personal
	// cloud's setup wizard makes or restores the identity with the owner.
	// The cloud's data dir is the default, cloud/ next to the key on perm.
	// Backups (the owner picks where on the dashboard) take the settings'
	// perm copy along with the cloud's data.
	c := &personal.Config{KeyFile: KeyFile(perm), Supernodes: s.Supernodes, PublicURL: s.PublicURL,
		NameServices: nameServices(s.NameServices), Quota: s.Quota, OtherOperators: s.OtherOperators,
		PinSupernodes: s.PinSupernodes, MetricsListen: s.MetricsListen,
		Backup: personal.BackupConfig{Restic: ResticBinary, MemoryLimit: ResticMemoryLimit, Connections: ResticConnections,
			Include: map[string]string{"settings": filepath.Join(DataDir(perm), filepath.Base(settings.PermFile))}}}
	// Visitors' TLS ends on the device unless the settings turn it off.
	switch t := s.TLS; {
	case t == nil:
		c.TLS = &personal.TLSConfig{}
	case !t.Off:
		c.TLS = &personal.TLSConfig{CA: t.ACMECA, CARoot: t.ACMECARoot, Email: t.ACMEEmail}
	}
	return c
}

// nameServices are the settings' name services as the personal cloud's.
func nameServices(ns []settings.NameService) []cloud.NameService {
	var out []cloud.NameService
	for _, n := range ns {
		out = append(out, cloud.NameService{Domain: n.Domain, API: n.API, Operator: n.Operator})
	}
	return out
}

// SupernodeConfig is the supernode's config for settings s, with its files
// under perm.
func SupernodeConfig(s *settings.Settings, perm string) *supernode.Config {
	c := &supernode.Config{KeyFile: KeyFile(perm), CreateKey: true, DataDir: filepath.Join(DataDir(perm), "supernode"),
		Bootstrap: s.Supernodes, Listen: s.Listen, Announce: s.Announce, Domains: s.Domains, Mesh: s.Mesh,
		// STUN/TURN on the standard port, relaying on the machine's own
		// (public) address.
		TURNListen:        ":3478",
		AllowPrivateDials: s.PrivateNetwork, TURNAllowPrivatePeers: s.PrivateNetwork, MetricsListen: s.MetricsListen}
	if len(s.Domains) > 0 {
		c.Gateway = gatewayConfig(s, perm)
	}
	return c
}

// OperatorKeyFile is where a supernode keeps the operator key of the
// domains it grants names for.
func OperatorKeyFile(perm string) string { return filepath.Join(perm, "pc2", "operator.key") }

// DelegationFile is where a supernode keeps the operator's delegation
// (pc2 operator delegate) to grant domain's names with its own key.
func DelegationFile(perm, domain string) string {
	return filepath.Join(perm, "pc2", "delegation-"+domain+".json")
}

// gatewayConfig is the web gateway's config for s: port 80, and 443 with
// ACME when s asks for HTTPS; it grants the names of the domains whose
// pinned operator is the key at OperatorKeyFile.
func gatewayConfig(s *settings.Settings, perm string) *supernode.GatewayConfig {
	g := &supernode.GatewayConfig{HTTPListen: ":80"}
	for _, d := range s.Domains {
		if _, err := os.Stat(DelegationFile(perm, d.Domain)); err == nil {
			if g.Delegations == nil {
				g.Delegations = map[string]string{}
			}
			g.Delegations[d.Domain] = DelegationFile(perm, d.Domain)
		}
	}
	if sg := s.Gateway; sg != nil {
		g.Policy = gateway.Policy{Mode: sg.NamePolicy, Invites: sg.Invites, Allow: sg.Allow}
		if sg.CustomDomains != "" {
			g.CustomDomains = &supernode.CustomDomainsConfig{Policy: sg.CustomDomains, Invites: sg.CustomDomainInvites}
		}
		if sg.HTTPS {
			g.HTTPSListen = ":443"
			g.ACME = supernode.ACMEConfig{CA: sg.ACMECA, CARoot: sg.ACMECARoot, Email: sg.ACMEEmail}
		}
	}
	if key, err := identity.LoadKeyFile(OperatorKeyFile(perm)); err == nil {
		if id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey)); err == nil {
			for _, d := range s.Domains {
				if d.Operator == id.DID() {
					if g.OperatorKeys == nil {
						g.OperatorKeys = map[string]string{}
					}
					g.OperatorKeys[d.Domain] = OperatorKeyFile(perm)
					if sg := s.Gateway; sg != nil && sg.MeshOpen {
						g.MeshOpen = append(g.MeshOpen, d.Domain)
					}
					if sg := s.Gateway; sg != nil && sg.TLS != "" {
						if g.TLS == nil {
							g.TLS = map[string]string{}
						}
						g.TLS[d.Domain] = sg.TLS
					}
				}
			}
		}
	}
	return g
}
