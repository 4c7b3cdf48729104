// Package testenv holds the rule every test that needs something from the
// machine (root, QEMU, a tool from apt) follows: skip with a clear message
// on a developer's machine, fail under CI=true, where .ci/run has installed
// everything and a skip would let a green run hide an untested path.
package testenv

import (
	"fmt"
	"os"
	"testing"
	"time"
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

// WaitFor polls cond every 10 ms until it holds, and fails t when it does
// not within d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}
