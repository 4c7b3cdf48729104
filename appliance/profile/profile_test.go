package profile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/appliance/svctable"
)

const snAddr = "/ip4/10.0.2.2/tcp/4001/p2p/12D3KooWHHzSeKaY8xuZVzkLbKFfvNgPPeKhFBGrMbNzbm5akpqu"

// loadFile writes img's file at path to disk and loads it like the service
// would, so the generated configs are checked by the real loaders.
func loadFile(t *testing.T, img *Image, path string, v any) {
	t.Helper()
	if err := config.Load(writeTemp(t, img.Files[path]), v); err != nil {
		t.Fatal(err)
	}
}

func TestPersonal(t *testing.T) {
	img, err := Build(Settings{Profile: Personal, Hostname: "box", Supernodes: []string{snAddr}, PublicURL: "https://alice.ela.city"})
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := svctable.Parse(img.Files[ServicesFile])
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || strings.Join(svcs[0].Args, " ") != "node --config "+NodeConfig {
		t.Fatalf("got services %+v, want pc2 node", svcs)
	}
	var c personal.Config
	loadFile(t, img, NodeConfig, &c)
	if c.KeyFile != KeyFile || !c.CreateKey || c.Supernodes[0] != snAddr || c.PublicURL != "https://alice.ela.city" {
		t.Fatalf("got node config %+v", c)
	}
	if string(img.Files["/etc/hostname"]) != "box\n" || img.Programs["pc2"] != PC2Package {
		t.Fatalf("hostname or programs wrong: %q %v", img.Files["/etc/hostname"], img.Programs)
	}
	if _, ok := img.Files["/etc/http-port.txt"]; ok {
		t.Fatalf("personal profile moved gokrazy's web interface")
	}
}

func TestSupernode(t *testing.T) {
	img, err := Build(Settings{Profile: Supernode, Supernodes: []string{snAddr},
		Domains: []supernode.DomainTrust{{Domain: "ela.city", Operator: "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := supernode.LoadConfig(writeTemp(t, img.Files[SNConfig]))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != DataDir+"/supernode" || c.Bootstrap[0] != snAddr || !c.CreateKey {
		t.Fatalf("got supernode config %+v", c)
	}
	if string(img.Files["/etc/http-port.txt"]) != "8080" || string(img.Files["/etc/https-port.txt"]) != "8443" {
		t.Fatalf("gokrazy's web interface not moved off 80/443")
	}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSettingsErrors(t *testing.T) {
	for _, c := range []struct {
		s    Settings
		want string
	}{
		{Settings{}, "profile is required"},
		{Settings{Profile: "router"}, `unknown profile "router"`},
		{Settings{Profile: Personal}, "at least one supernode"},
		{Settings{Profile: Personal, Supernodes: []string{"/ip4/1.2.3.4/tcp/1"}}, "supernodes"},
		{Settings{Profile: Supernode, Domains: []supernode.DomainTrust{{Domain: "Bad_Domain"}}}, "domains"},
	} {
		if _, err := Build(c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.s, err, c.want)
		}
	}
}
