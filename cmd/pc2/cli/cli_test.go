package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

func TestServiceCommandsExit125WithoutConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.json")
	for _, cmd := range []string{"node", "supernode"} {
		err := Execute(context.Background(), []string{cmd, "--config", missing}, Env{Stderr: &bytes.Buffer{}})
		if got := ExitCode(err); got != 125 {
			t.Errorf("%s without config: exit %d (%v), want 125", cmd, got, err)
		}
		if got := ExitCode(Execute(context.Background(), []string{cmd}, Env{Stderr: &bytes.Buffer{}})); got != 2 {
			t.Errorf("%s without --config: exit %d, want 2", cmd, got)
		}
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	fs := newFlagSet("x", Env{Stderr: &bytes.Buffer{}})
	b := fs.String("bootstrap", "", "")
	pos, err := parseFlags(fs, []string{"alice.pc2.test", "--bootstrap", "B", "extra"})
	if err != nil || *b != "B" || len(pos) != 2 || pos[0] != "alice.pc2.test" || pos[1] != "extra" {
		t.Fatalf("got %v %q %v, want [alice.pc2.test extra] B", pos, *b, err)
	}
	if _, err := parseFlags(fs, []string{"--nope"}); ExitCode(err) != 2 {
		t.Fatalf("unknown flag: got %v, want a usage error", err)
	}
}
