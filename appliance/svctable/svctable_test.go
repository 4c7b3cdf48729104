package svctable

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := []Service{{Name: "node", Path: "/user/pc2", Args: []string{"node", "--config", "/etc/pc2/node.json"}}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "services.json")
	os.WriteFile(p, b, 0o644)
	out, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Name != "node" || strings.Join(out[0].Args, " ") != "node --config /etc/pc2/node.json" {
		t.Fatalf("got %+v, want %+v", out, in)
	}
	if svcs, err := Read(filepath.Join(t.TempDir(), "none")); err != nil || svcs != nil {
		t.Fatalf("missing table: got %v, %v; want empty", svcs, err)
	}
}

func TestParseErrors(t *testing.T) {
	for body, want := range map[string]string{
		`{`:                "unexpected end",
		`[{"name": "a"}]`:  "lacks a name or path",
		`[{"path": "/x"}]`: "lacks a name or path",
		`[{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]`: "listed twice",
	} {
		if _, err := Parse([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", body, err, want)
		}
	}
}
