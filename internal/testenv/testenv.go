// Package testenv holds the rule every test that needs something from the
// machine (root, QEMU, a tool from apt) follows: skip with a clear message
// on a developer's machine, fail under CI=true, where .ci/run has installed
// everything and a skip would let a green run hide an untested path.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// SkipOrFail skips t with the formatted reason, or fails it under CI=true.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, cannot skip: %s", msg)
	}
	t.Skip(msg)
}
