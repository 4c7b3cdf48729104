package deptest

import (
	"slices"
	"testing"
)

// TestLayers holds the whole module to the layer rule.
func TestLayers(t *testing.T) {
	pkgs := List(t, "./...")
	if len(pkgs) < 20 {
		t.Fatalf("go list ./...: %d packages, want the whole module", len(pkgs))
	}
	for _, v := range Violations(pkgs) {
		t.Error(v)
	}
}

// The rule itself: each kind of bad import is caught, the allowed ones are
// not.
func TestViolations(t *testing.T) {
	m := func(rel string) string { return Module + "/" + rel }
	pkgs := []Package{
		{ImportPath: m("services/relay"), Imports: []string{m("provisioning/identity"), m("services/dht"), "net/http"}},
		{ImportPath: m("provisioning/identity"), Imports: []string{m("appliance/config")}},
		{ImportPath: m("services/gateway"), Imports: []string{m("internal/testing/testlog")}, XTestImports: []string{m("appliance/supernode"), m("internal/testing/gwtest")}},
		{ImportPath: m("internal/testing/gwtest"), Imports: []string{m("appliance/supernode")}},
		{ImportPath: m("cmd/pc2/cli"), Imports: []string{m("appliance/device"), m("image/vm")}},
		{ImportPath: m("widgets/x"), Imports: nil},
	}
	got := Violations(pkgs)
	want := []string{
		`deptest: top-level folder "widgets" of widgets/x has no layer; add it to the rule in internal/testing/deptest`,
		"provisioning/identity (layer 0) imports appliance/config (layer 2): upward",
		"services/gateway imports test support internal/testing/testlog",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Violations:\ngot  %q\nwant %q", got, want)
	}
}
