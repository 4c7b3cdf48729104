package supernode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
)

const opDID = "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "supernode.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	good := `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}], "replicate_interval": "30m"}`
	c, err := LoadConfig(writeConfig(t, good))
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := c.Trust()
	if got := trust["ela.city"].DID(); got != opDID {
		t.Fatalf("got operator %s, want %s", got, opDID)
	}
	if got := time.Duration(c.ReplicateInterval); got != 30*time.Minute {
		t.Fatalf("got replicate interval %v, want 30m", got)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, config.ErrNotConfigured) {
		t.Fatalf("missing file: got %v, want ErrNotConfigured", err)
	}
	cases := []struct{ name, body, want string }{
		{"Garbage", `{"key_file": `, "unexpected EOF"},
		{"UnknownField", `{"key_file": "/k", "data_dir": "/d", "dataDir": "/x"}`, `unknown field "dataDir"`},
		{"NoKey", `{"data_dir": "/d"}`, "key_file is required"},
		{"NoDataDir", `{"key_file": "/k"}`, "data_dir is required"},
		{"BadDomain", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "Ela.City", "operator": "` + opDID + `"}]}`, "invalid name"},
		{"BadOperator", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "did:key:abc"}]}`, "operator of ela.city"},
		{"DuplicateDomain", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}, {"domain": "ela.city", "operator": "` + opDID + `"}]}`, "listed twice"},
		{"MeshAlsoServed", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}], "mesh": [{"domain": "ela.city", "operator": "` + opDID + `"}]}`, "listed twice"},
		{"BadMeshOperator", `{"key_file": "/k", "data_dir": "/d", "mesh": [{"domain": "pc2.net", "operator": "nobody"}]}`, "mesh: operator of pc2.net"},
		{"MeshOpenWithoutKey", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}], "gateway": {"http_listen": ":80", "mesh_open": ["ela.city"]}}`, "mesh_open lists ela.city"},
		{"BadCustomPolicy", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}], "gateway": {"http_listen": ":80", "custom_domains": {"policy": "everyone"}}}`, "custom_domains: policy"},
		{"CustomPerNodeOver", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}], "gateway": {"http_listen": ":80", "custom_domains": {"policy": "open", "per_node": 17}}}`, "per_node 17"},
		{"InvitesWithOpen", `{"key_file": "/k", "data_dir": "/d", "domains": [{"domain": "ela.city", "operator": "` + opDID + `"}], "gateway": {"http_listen": ":80", "custom_domains": {"policy": "open", "invites": ["abcdefgh1"]}}}`, "invites with policy"},
		{"BadDuration", `{"key_file": "/k", "data_dir": "/d", "republish_interval": "soon"}`, "invalid duration"},
		{"NegativeDuration", `{"key_file": "/k", "data_dir": "/d", "republish_interval": "-1h"}`, "negative"},
		{"BadTURNListen", `{"key_file": "/k", "data_dir": "/d", "turn_listen": "3478"}`, "turn_listen"},
		{"BadAnnounce", `{"key_file": "/k", "data_dir": "/d", "announce": ["203.0.113.7:8090"]}`, "announce"},
		{"BadTURNRelayIP", `{"key_file": "/k", "data_dir": "/d", "turn_relay_ip": "2001:db8::1"}`, "not an IPv4 address"},
		{"BadTURNPorts", `{"key_file": "/k", "data_dir": "/d", "turn_port_min": 50000, "turn_port_max": 40000}`, "not a port range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
