package promtext

import (
	"strings"
	"testing"
)

// TestParse: series summed by name, comments skipped, a bad value an
// error.
func TestParse(t *testing.T) {
	m, err := Parse(strings.NewReader("# HELP a x\n# TYPE a counter\na{code=\"200\"} 3\na{code=\"503\"} 2\nb 1.5e3\nc_bucket{le=\"+Inf\"} 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m["a"] != 5 || m["b"] != 1500 || m["c_bucket"] != 7 || len(m) != 3 {
		t.Fatalf("got %v", m)
	}
	if _, err := Parse(strings.NewReader("a x\n")); err == nil {
		t.Fatal("a value that is not a number: no error")
	}
}
