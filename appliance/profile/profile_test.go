package profile

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/appliance/svctable"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway"
)

const snAddr = "/ip4/10.0.2.2/tcp/4001/p2p/12D3KooWHHzSeKaY8xuZVzkLbKFfvNgPPeKhFBGrMbNzbm5akpqu"

const operator = "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"

// TestBuild checks an image's files: one device service whatever the
// profile, gokrazy's web interface off 80/443, and the settings on the boot
// partition, padded and parsing back to what went in.
func TestBuild(t *testing.T) {
	s := &settings.Settings{Profile: Personal, Hostname: "box", Supernodes: []string{snAddr}, PublicURL: "https://alice.ela.city"}
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := svctable.Parse(img.Files[ServicesFile])
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Path != PC2Binary || strings.Join(svcs[0].Args, " ") != "device" {
		t.Fatalf("got services %+v, want pc2 device", svcs)
	}
	if string(img.Files["/etc/http-port.txt"]) != "8080" || string(img.Files["/etc/https-port.txt"]) != "8443" {
		t.Fatalf("gokrazy's web interface not moved off 80/443")
	}
	boot := img.BootFiles["/"+settings.BootFile]
	if len(boot) != settings.ReservedSize {
		t.Fatalf("settings file is %d bytes, want padded to %d", len(boot), settings.ReservedSize)
	}
	back, err := settings.Parse(boot)
	if err != nil || back.Hostname != "box" || back.Supernodes[0] != snAddr || back.PublicURL != s.PublicURL {
		t.Fatalf("settings back: %+v, %v", back, err)
	}
}

func TestConfigs(t *testing.T) {
	s := &settings.Settings{Profile: Supernode, Supernodes: []string{snAddr}, PublicURL: "https://x.ela.city",
		Domains: []settings.Domain{{Domain: "ela.city", Operator: operator}}}
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	n := NodeConfig(s, PermDir)
	if n.KeyFile != "/perm/pc2/node.key" || n.CreateKey || n.Supernodes[0] != snAddr || n.PublicURL != s.PublicURL {
		t.Fatalf("node config %+v", n)
	}
	c := SupernodeConfig(s, PermDir)
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/perm/pc2/supernode" || c.Bootstrap[0] != snAddr || !c.CreateKey || c.Domains[0].Operator != operator {
		t.Fatalf("supernode config %+v", c)
	}
	if g := c.Gateway; g == nil || g.HTTPListen != ":80" || g.HTTPSListen != "" || len(g.OperatorKeys) != 0 {
		t.Fatalf("gateway of a supernode with domains and no operator key: %+v", g)
	}
}

// TestGatewayConfig: HTTPS and the name policy come from the settings;
// the operator key on perm grants the names of the domains it governs.
func TestGatewayConfig(t *testing.T) {
	perm := t.TempDir()
	key, err := identity.NodeKeyFromMnemonic("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "+
		"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art", "")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(DataDir(perm), 0o700)
	if err := identity.WriteKeyFile(OperatorKeyFile(perm), key); err != nil {
		t.Fatal(err)
	}
	s := &settings.Settings{Profile: Supernode, Domains: []settings.Domain{{Domain: "ela.city", Operator: operator},
		{Domain: "other.city", Operator: "did:boson:HDqZVK6fLr8DZs6QguPrwkU2a9tGCv7CJEk71PNxqood"}},
		Gateway: &settings.Gateway{HTTPS: true, ACMEEmail: "ops@ela.city", NamePolicy: "invite", Invites: []string{"welcome-1234"}}}
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	c := SupernodeConfig(s, perm)
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	g := c.Gateway
	if g.HTTPSListen != ":443" || g.ACME.Email != "ops@ela.city" || g.Policy.Mode != "invite" || len(g.Policy.Invites) != 1 {
		t.Fatalf("gateway config %+v", g)
	}
	if len(g.OperatorKeys) != 1 || g.OperatorKeys["ela.city"] != OperatorKeyFile(perm) {
		t.Fatalf("operator keys %v, want ela.city's only", g.OperatorKeys)
	}
	s.Gateway.TLS = "end-to-end"
	if g := SupernodeConfig(s, perm).Gateway; len(g.TLS) != 1 || g.TLS["ela.city"] != "end-to-end" {
		t.Fatalf("tls modes %v, want ela.city's only", g.TLS)
	}
	s.Gateway.TLS = "sometimes"
	if err := Check(s); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("bad tls mode: %v", err)
	}
	s.Gateway.TLS = ""
	s.Gateway.NamePolicy = "lottery"
	if err := Check(s); err == nil || !strings.Contains(err.Error(), "name_policy") {
		t.Fatalf("bad name policy: %v", err)
	}
}

func TestSettingsErrors(t *testing.T) {
	for _, c := range []struct {
		s    settings.Settings
		want string
	}{
		{settings.Settings{}, "profile is required"},
		{settings.Settings{Profile: "router"}, `unknown profile "router"`},
		{settings.Settings{Profile: Personal}, "needs a supernode, or a name service"},
		{settings.Settings{Profile: Personal, Supernodes: []string{"/ip4/1.2.3.4/tcp/1"}}, "supernodes"},
		{settings.Settings{Profile: Supernode, Domains: []settings.Domain{{Domain: "Bad_Domain"}}}, "domains"},
		{settings.Settings{Profile: Supernode, Domains: []settings.Domain{{Domain: "ela.city", Operator: "did:boson:x"}}}, "domains"},
		{settings.Settings{Profile: Supernode, Hostname: "-box"}, "hostname"},
		{settings.Settings{Profile: Supernode, AdminPasswordHash: "secret"}, "admin_password_hash"},
		{settings.Settings{Profile: Supernode, WiFi: &settings.WiFi{SSID: "home", Passphrase: "short"}}, "passphrase"},
	} {
		if _, err := Build(&c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.s, err, c.want)
		}
	}
}

// TestFullConfigs converts settings with every field a profile uses into
// the configs of both profiles' services, written out as they were when
// the settings held the services' types.
func TestFullConfigs(t *testing.T) {
	s := &settings.Settings{Profile: Personal, Supernodes: []string{snAddr}, PublicURL: "https://alice.ela.city",
		NameServices: []settings.NameService{{Domain: "ela.city"}, {Domain: "pc2.test", API: "http://10.0.2.2:8080"}},
		Quota:        1 << 30, Listen: []string{"/ip4/0.0.0.0/tcp/8090"},
		Domains: []settings.Domain{{Domain: "ela.city", Operator: operator}},
		Gateway: &settings.Gateway{HTTPS: true, ACMECA: "https://ca.test/dir", ACMECARoot: "PEM", ACMEEmail: "ops@ela.city",
			NamePolicy: "allowlist", Invites: []string{"welcome-1234"}, Allow: []string{"did:boson:y"}},
		TLS: &settings.NodeTLS{ACMECA: "https://ca.test/dir", ACMECARoot: "PEM", ACMEEmail: "alice@ela.city"}}
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	wantNode := &personal.Config{KeyFile: "/perm/pc2/node.key", Supernodes: []string{snAddr}, PublicURL: "https://alice.ela.city",
		NameServices: []cloud.NameService{{Domain: "ela.city"}, {Domain: "pc2.test", API: "http://10.0.2.2:8080"}},
		Quota:        1 << 30,
		Backup:       personal.BackupConfig{Restic: "/user/restic", MemoryLimit: "64MiB", Connections: 2, Include: map[string]string{"settings": settings.PermFile}},
		TLS:          &personal.TLSConfig{CA: "https://ca.test/dir", CARoot: "PEM", Email: "alice@ela.city"}}
	if got := NodeConfig(s, PermDir); !reflect.DeepEqual(got, wantNode) {
		t.Errorf("node config\n got %+v\nwant %+v", got, wantNode)
	}
	// The node's own certificate: on by default (Let's Encrypt), off
	// when the settings say so.
	for _, c := range []struct {
		tls  *settings.NodeTLS
		want *personal.TLSConfig
	}{{nil, &personal.TLSConfig{}}, {&settings.NodeTLS{Off: true}, nil}} {
		s.TLS = c.tls
		if got := NodeConfig(s, PermDir).TLS; !reflect.DeepEqual(got, c.want) {
			t.Errorf("settings tls %+v: node tls %+v, want %+v", c.tls, got, c.want)
		}
	}
	wantSN := &supernode.Config{KeyFile: "/perm/pc2/node.key", CreateKey: true, DataDir: "/perm/pc2/supernode",
		Bootstrap: []string{snAddr}, Listen: []string{"/ip4/0.0.0.0/tcp/8090"},
		Domains: []supernode.DomainTrust{{Domain: "ela.city", Operator: operator}}, TURNListen: ":3478",
		Gateway: &supernode.GatewayConfig{HTTPListen: ":80", HTTPSListen: ":443",
			Policy: gateway.Policy{Mode: "allowlist", Invites: []string{"welcome-1234"}, Allow: []string{"did:boson:y"}},
			ACME:   supernode.ACMEConfig{CA: "https://ca.test/dir", CARoot: "PEM", Email: "ops@ela.city"}}}
	if got := SupernodeConfig(s, PermDir); !reflect.DeepEqual(got, wantSN) {
		t.Errorf("supernode config\n got %+v\nwant %+v", got, wantSN)
	}
	// No name services: none for the cloud either.
	s.NameServices = nil
	if got := NodeConfig(s, PermDir).NameServices; got != nil {
		t.Errorf("no name services: the cloud got %+v", got)
	}
}

// TestSupernodeMeshSettings (issue 20): the image's settings carry the
// mesh, mesh_open and custom domains into the supernode's config, and a
// delegation on perm makes it grant that domain with its own key.
func TestSupernodeMeshSettings(t *testing.T) {
	perm := t.TempDir()
	if err := os.MkdirAll(filepath.Join(perm, "pc2"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, op, _ := ed25519.GenerateKey(nil)
	opID, _ := identity.IDFromPublicKey(op.Public().(ed25519.PublicKey))
	if err := identity.WriteKeyFile(OperatorKeyFile(perm), op); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(DelegationFile(perm, "pc2.net"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"
	s := &settings.Settings{Profile: Supernode,
		Domains: []settings.Domain{{Domain: "ela.city", Operator: opID.DID()}, {Domain: "pc2.net", Operator: other}},
		Mesh:    []settings.Domain{{Domain: "ela.net", Operator: other}},
		Gateway: &settings.Gateway{MeshOpen: true, CustomDomains: "open"}}
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	c := SupernodeConfig(s, perm)
	g := c.Gateway
	switch {
	case !reflect.DeepEqual(c.Mesh, []supernode.DomainTrust{{Domain: "ela.net", Operator: other}}):
		t.Errorf("mesh %+v", c.Mesh)
	case !reflect.DeepEqual(g.MeshOpen, []string{"ela.city"}):
		t.Errorf("mesh_open %v, want the domain of the operator key", g.MeshOpen)
	case g.Delegations["pc2.net"] != DelegationFile(perm, "pc2.net") || len(g.Delegations) != 1:
		t.Errorf("delegations %v", g.Delegations)
	case g.CustomDomains == nil || g.CustomDomains.Policy != "open":
		t.Errorf("custom domains %+v", g.CustomDomains)
	}
	s.Gateway.CustomDomains, s.Gateway.CustomDomainInvites = "invite", []string{"d0m-welcome-alice"}
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	if g := SupernodeConfig(s, "/perm").Gateway.CustomDomains; g.Policy != "invite" || len(g.Invites) != 1 {
		t.Errorf("custom domains by invite: %+v", g)
	}
	s.Gateway.CustomDomains = "open"
	if err := Check(s); err == nil || !strings.Contains(err.Error(), "custom_domain_invites") {
		t.Errorf("invites with the open policy: %v", err)
	}
	s.Gateway.CustomDomainInvites = nil
	s.Gateway.CustomDomains = "everyone"
	if err := Check(s); err == nil || !strings.Contains(err.Error(), "custom_domains") {
		t.Errorf("custom_domains everyone: %v", err)
	}
	s.Gateway.CustomDomains = ""
	s.Mesh = append(s.Mesh, settings.Domain{Domain: "ela.city", Operator: other})
	if err := Check(s); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("a domain both served and in the mesh: %v", err)
	}
}
