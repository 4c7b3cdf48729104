//go:build linux

package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sparseImage writes a 16 MiB image with data at its start, in the
// middle and at its end, holes elsewhere, and returns its path and bytes.
func sparseImage(t testing.TB) (string, []byte) {
	t.Helper()
	const size = 16 << 20
	want := make([]byte, size)
	for _, r := range [][2]int{{0, 20 << 10}, {5 << 20, 6<<20 + 4096}, {size - 20<<10, size}} {
		for i := r[0]; i < r[1]; i++ {
			want[i] = byte(i*7 + 1)
		}
	}
	p := filepath.Join(t.TempDir(), "pc2.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 20 << 10}, {5 << 20, 6<<20 + 4096}, {size - 20<<10, size}} {
		if _, err := f.WriteAt(want[r[0]:r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	return p, want
}

func runFlashCmd(t testing.TB, stdin string, args ...string) (stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = Execute(context.Background(), append([]string{"flash"}, args...), Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
	})
	t.Logf("pc2 flash %s: err=%v\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	return errb.String(), err
}

func TestFlashYesToFile(t *testing.T) {
	img, want := sparseImage(t)
	target := filepath.Join(t.TempDir(), "card.img")
	stderr, err := runFlashCmd(t, "", "--image", img, "--device", target, "--yes")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("target differs from the image")
	}
	for _, w := range []string{target + ": new file", "writing: 100%", "verified 1.0 MiB in "} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr got %q, want it to contain %q", stderr, w)
		}
	}
	if strings.Contains(stderr, "type yes") {
		t.Errorf("asked for confirmation despite --yes")
	}
}

func TestFlashConfirm(t *testing.T) {
	img, want := sparseImage(t)
	for _, tc := range []struct {
		stdin string
		err   error
	}{{"no\n", errNotConfirmed}, {"", errNotConfirmed}, {"YES please\n", errNotConfirmed}, {"yes\n", nil}} {
		target := filepath.Join(t.TempDir(), "card.img")
		if err := os.WriteFile(target, []byte("old contents"), 0o644); err != nil {
			t.Fatal(err)
		}
		stderr, err := runFlashCmd(t, tc.stdin, "--device", target, "--image", img)
		if !errors.Is(err, tc.err) {
			t.Fatalf("stdin %q: got %v, want %v", tc.stdin, err, tc.err)
		}
		if !strings.Contains(stderr, "type yes to overwrite "+target) || !strings.Contains(stderr, "regular file, 12 B") {
			t.Errorf("stderr got %q, want the target described and a question", stderr)
		}
		got, _ := os.ReadFile(target)
		if tc.err != nil && string(got) != "old contents" {
			t.Errorf("stdin %q: target was written (%d bytes)", tc.stdin, len(got))
		}
		if tc.err == nil && !bytes.Equal(got, want) {
			t.Errorf("stdin %q: target differs from the image", tc.stdin)
		}
	}
	// Nothing is created either.
	target := filepath.Join(t.TempDir(), "new.img")
	if _, err := runFlashCmd(t, "no\n", "--device", target, "--image", img); !errors.Is(err, errNotConfirmed) {
		t.Fatalf("got %v, want %v", err, errNotConfirmed)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: got %v, want it not to exist", target, err)
	}
}

func TestFlashUsage(t *testing.T) {
	img, _ := sparseImage(t)
	for _, args := range [][]string{{}, {"--image", img}, {"--device", "x"}, {"--image", img, "--device", "x", "extra"}} {
		if _, err := runFlashCmd(t, "", args...); ExitCode(err) != 2 {
			t.Errorf("args %q: got exit code %d (%v), want 2", args, ExitCode(err), err)
		}
	}
	// The image onto itself: refused even with --force.
	if _, err := runFlashCmd(t, "", "--image", img, "--device", img, "--yes", "--force"); err == nil || !strings.Contains(err.Error(), "image itself") {
		t.Errorf("got %v, want a refusal", err)
	}
}

func TestProgressBar(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	for _, tc := range []struct {
		tty   bool
		step  time.Duration
		lines int // updates drawn for 100 calls, one per step
	}{
		{tty: true, step: 50 * time.Millisecond, lines: 100 * 50 / 200}, // 5 a second
		{tty: false, step: 50 * time.Millisecond, lines: 100 * 50 / 2000},
	} {
		var b bytes.Buffer
		p := newProgressBar(&b, "writing", tc.tty, clock)
		const total = 100 << 20
		for i := 1; i <= 100; i++ {
			now = now.Add(tc.step)
			p.update(int64(i)<<20, total)
		}
		p.update(total, total) // repeated final call draws nothing
		out := b.String()
		t.Logf("tty=%v:\n%q", tc.tty, out)
		sep := "\n"
		if tc.tty {
			sep = "\r"
		}
		// Every update is a redraw; the final one is always drawn.
		if got := strings.Count(out, sep); got < tc.lines || got > tc.lines+2 {
			t.Errorf("tty=%v: got %d updates, want about %d", tc.tty, got, tc.lines)
		}
		if !strings.Contains(out, "100%  100.0/100.0 MiB   20.0 MiB/s") {
			t.Errorf("tty=%v: got %q, want a final 100%% at 20 MiB/s", tc.tty, out)
		}
		if !strings.HasSuffix(out, "\n") {
			t.Errorf("tty=%v: output does not end the line", tc.tty)
		}
	}
}
