package nattest

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/proc"
)

// Proc is a process a scenario runs on a Host: a supernode or node that
// the test talks to over the network.
type Proc struct {
	kill func() error
	done chan struct{}
	log  string
}

// Kill ends the process at once, as a machine losing power.
func (p *Proc) Kill() {
	p.kill()
	<-p.done
}

// Log returns what the process wrote to stderr so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// StartProc runs argv on h with env added to the test's environment, and
// waits until it prints a line "ready" on stdout. Its stderr and the rest
// of its stdout go to a log whose last lines the test shows if it fails;
// the process is killed when the test ends.
func StartProc(t testing.TB, h *Host, name string, argv []string, env ...string) *Proc {
	t.Helper()
	cmd := h.Command(context.Background(), argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{kill: cmd.Process.Kill, done: make(chan struct{}), log: logf.Name()}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			} else {
				logf.Write(append(sc.Bytes(), '\n')) // a test binary's own output
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s on %s log:\n%s", name, h, proc.Tail(p.Log(), 60))
		}
	})
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("%s on %s exited before it was ready:\n%s", name, h, proc.Tail(p.Log(), 40))
	case <-time.After(60 * time.Second):
		t.Fatalf("%s on %s not ready within 60 s", name, h)
	}
	return p
}
