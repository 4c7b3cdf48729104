// Package profile turns device settings into what an appliance image runs:
// the programs under /user, the service table the init reads
// (/etc/pc2/services.json) and each service's config file. The two
// profiles are "personal" (personal node) and "supernode" (DHT server, later
// relay, TURN and gateway).
package profile

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/appliance/svctable"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

// Paths on the device.
const (
	ServicesFile = svctable.Path
	NodeConfig   = "/etc/pc2/node.json"
	SNConfig     = "/etc/pc2/supernode.json"
	KeyFile      = "/perm/pc2/node.key"
	DataDir      = "/perm/pc2"
	PC2Binary    = "/user/pc2"
	PC2Package   = "github.com/pc2/pc2/cmd/pc2"
)

// gokrazy's web interface ports on a supernode, away from the gateway's.
const (
	GokrazySupernodeHTTPPort  = 8080
	GokrazySupernodeHTTPSPort = 8443
)

// Profiles.
const (
	Personal  = "personal"
	Supernode = "supernode"
)

// Settings are a device's settings, given at image-build time.
type Settings struct {
	Hostname string `json:"hostname,omitempty"`
	Profile  string `json:"profile"`
	// Supernodes: full multiaddrs of the supernodes to use (personal) or to
	// bootstrap from (supernode).
	Supernodes []string `json:"supernodes,omitempty"`
	// Domains a supernode trusts, with their operators.
	Domains []supernode.DomainTrust `json:"domains,omitempty"`
	// PublicURL of the personal node, published in its did record.
	PublicURL string `json:"public_url,omitempty"`
	// Listen overrides the supernode's libp2p listeners.
	Listen []string `json:"listen,omitempty"`
}

// Check reports the first problem with s.
func (s *Settings) Check() error {
	switch s.Profile {
	case Personal:
		if len(s.Supernodes) == 0 {
			return errors.New("profile personal needs at least one supernode")
		}
	case Supernode:
	case "":
		return errors.New("profile is required (personal or supernode)")
	default:
		return fmt.Errorf("unknown profile %q (want personal or supernode)", s.Profile)
	}
	if _, err := dht.ParseAddrInfos(s.Supernodes); err != nil {
		return fmt.Errorf("supernodes: %w", err)
	}
	for _, d := range s.Domains {
		if err := records.ValidDomain(d.Domain); err != nil {
			return fmt.Errorf("domains: %w", err)
		}
	}
	return nil
}

// Image is what the image builder needs from a profile.
type Image struct {
	Programs map[string]string // /user/<name> -> Go package
	Files    map[string][]byte // root file system path -> contents
}

// Build returns the programs and root files for s.
func Build(s Settings) (*Image, error) {
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	img := &Image{
		Programs: map[string]string{"pc2": PC2Package},
		Files:    map[string][]byte{},
	}
	if s.Hostname != "" {
		img.Files["/etc/hostname"] = []byte(s.Hostname + "\n")
	}
	var services []svctable.Service
	switch s.Profile {
	case Personal:
		cfg := personal.Config{KeyFile: KeyFile, CreateKey: true, Supernodes: s.Supernodes, PublicURL: s.PublicURL}
		if err := addJSON(img, NodeConfig, cfg); err != nil {
			return nil, err
		}
		services = append(services, svctable.Service{Name: "node", Path: PC2Binary, Args: []string{"node", "--config", NodeConfig}})
	case Supernode:
		cfg := supernode.Config{KeyFile: KeyFile, CreateKey: true, DataDir: DataDir + "/supernode",
			Bootstrap: s.Supernodes, Domains: s.Domains, Listen: s.Listen}
		if err := addJSON(img, SNConfig, cfg); err != nil {
			return nil, err
		}
		services = append(services, svctable.Service{Name: "supernode", Path: PC2Binary, Args: []string{"supernode", "--config", SNConfig}})
		// 80 and 443 belong to the web gateway: move gokrazy's web
		// interface (read from /etc/http-port.txt and https-port.txt).
		img.Files["/etc/http-port.txt"] = []byte(fmt.Sprint(GokrazySupernodeHTTPPort))
		img.Files["/etc/https-port.txt"] = []byte(fmt.Sprint(GokrazySupernodeHTTPSPort))
	}
	table, err := svctable.Encode(services)
	if err != nil {
		return nil, err
	}
	img.Files[ServicesFile] = table
	return img, nil
}

func addJSON(img *Image, path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	img.Files[path] = append(b, '\n')
	return nil
}
