// The operator guide's examples are checked here so they cannot drift
// from the code. This is an external test package: checking the device
// settings example needs appliance/profile, which imports this package.
package supernode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/services/certs"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway"
)

const guidePath = "../../docs/operator-guide.md"

// jsonBlock is a ```json block of the guide.
type jsonBlock struct {
	line int // of the opening fence
	body string
}

func guideBlocks(t *testing.T) (string, []jsonBlock) {
	t.Helper()
	b, err := os.ReadFile(guidePath)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []jsonBlock
	var cur *jsonBlock
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```json":
			cur = &jsonBlock{line: i + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: json block not closed", guidePath, cur.line)
	}
	return string(b), blocks
}

// TestGuideConfigs decodes every JSON example of the operator guide as
// the supernode does: a block with "profile" is device settings, every
// other block a supernode config, or the part of one it shows. Full
// configs (with key_file) must pass Check; the gateway policies and DNS
// providers shown must be accepted by the services that take them.
func TestGuideConfigs(t *testing.T) {
	_, blocks := guideBlocks(t)
	var configs, parts, device int
	for _, b := range blocks {
		var top map[string]json.RawMessage
		if err := json.Unmarshal([]byte(b.body), &top); err != nil {
			t.Errorf("%s:%d: not a JSON object: %v", guidePath, b.line, err)
			continue
		}
		if _, ok := top["profile"]; ok {
			device++
			checkGuideSettings(t, b)
			continue
		}
		var c supernode.Config
		if err := config.Decode(fmt.Sprintf("%s:%d", guidePath, b.line), []byte(b.body), &c); err != nil {
			t.Error(err)
			continue
		}
		if _, ok := top["key_file"]; ok {
			configs++
			if err := c.Check(); err != nil {
				t.Errorf("%s:%d: %v", guidePath, b.line, err)
			}
			if _, err := dht.ParseAddrInfos(c.Bootstrap); err != nil {
				t.Errorf("%s:%d: bootstrap: %v", guidePath, b.line, err)
			}
		} else {
			parts++
		}
		if c.Gateway != nil {
			checkGuideGateway(t, b, c.Gateway)
		}
	}
	if configs < 2 || parts < 1 || device < 1 {
		t.Errorf("got %d full configs, %d config parts and %d device settings in %s, want at least 2, 1 and 1", configs, parts, device, guidePath)
	}
}

// checkGuideGateway runs the policy and DNS provider of g through the
// constructors that would refuse them at start (Check does not).
func checkGuideGateway(t *testing.T, b jsonBlock, g *supernode.GatewayConfig) {
	t.Helper()
	dir := t.TempDir()
	if _, err := gateway.NewNames(gateway.NamesConfig{Store: noNames{}, Policy: g.Policy, Reserved: g.Reserved,
		StateFile: filepath.Join(dir, "names.json")}); err != nil {
		t.Errorf("%s:%d: %v", guidePath, b.line, err)
	}
	if g.ACME.DNS != nil {
		certs, err := certs.New(certs.Config{Dir: filepath.Join(dir, "certs"), DNS: g.ACME.DNS})
		if err != nil {
			t.Errorf("%s:%d: %v", guidePath, b.line, err)
			return
		}
		certs.Close()
	}
}

// checkGuideSettings checks a device settings example as the image
// builder does, and the supernode config the device makes of it.
func checkGuideSettings(t *testing.T, b jsonBlock) {
	t.Helper()
	s, err := settings.Parse([]byte(b.body))
	if err != nil {
		t.Errorf("%s:%d: %v", guidePath, b.line, err)
		return
	}
	if err := profile.Check(s); err != nil {
		t.Errorf("%s:%d: %v", guidePath, b.line, err)
		return
	}
	if s.Profile != settings.Supernode {
		t.Errorf("%s:%d: profile %q, want the supernode profile", guidePath, b.line, s.Profile)
		return
	}
	c := profile.SupernodeConfig(s, t.TempDir())
	if err := c.Check(); err != nil {
		t.Errorf("%s:%d: the device's supernode config: %v", guidePath, b.line, err)
	}
	if c.Gateway != nil {
		checkGuideGateway(t, b, c.Gateway)
	}
}

// noNames is a NameStore that holds nothing (NewNames needs one).
type noNames struct{}

func (noNames) CurrentName(context.Context, string) (*records.Name, error) {
	return nil, dht.ErrNotFound
}

func (noNames) Publish(context.Context, string, []byte) (dht.PutResult, error) {
	return dht.PutResult{}, nil
}

// TestGuideDocumentsEveryField fails when a field of the supernode
// config, or of the device settings' gateway, is not in the guide.
func TestGuideDocumentsEveryField(t *testing.T) {
	guide, _ := guideBlocks(t)
	fields := map[string]bool{}
	jsonFields(reflect.TypeFor[supernode.Config](), fields)
	for f := range jsonFields(reflect.TypeFor[settings.Gateway](), map[string]bool{}) {
		fields["gateway."+f] = true
	}
	for f := range fields {
		if !strings.Contains(guide, "`"+f+"`") {
			t.Errorf("field %s is not in %s", f, guidePath)
		}
	}
	// Every reserved label is listed, so operators know what they are.
	for _, l := range gateway.DefaultReserved {
		if !strings.Contains(guide, "`"+l+"`") {
			t.Errorf("reserved label %q is not in %s", l, guidePath)
		}
	}
}

// jsonFields adds the JSON names of t's fields to into, and those of
// the structs it holds.
func jsonFields(t reflect.Type, into map[string]bool) map[string]bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return into
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		into[name] = true
		jsonFields(f.Type, into)
	}
	return into
}

func (noNames) Unpublish(string) {}

func (noNames) CurrentTally(context.Context, string, string) (*records.Tally, error) {
	return nil, dht.ErrNotFound
}
