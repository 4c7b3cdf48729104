package proc

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
)

func TestFreeAddrListens(t *testing.T) {
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on FreeAddr %s: %v", addr, err)
	}
	ln.Close()
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Errorf("FreePort: got %d, want 1-65535", p)
	}
}

func TestTailBufferKeepsLast(t *testing.T) {
	w := &TailBuffer{Max: 10}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); fmt.Fprintf(w, "line %02d\n", i) }()
	}
	wg.Wait()
	if w.Len() != 10 || len(w.String()) != 10 {
		t.Errorf("Len %d, String %q: want 10 bytes", w.Len(), w.String())
	}
	if !strings.HasSuffix(w.String(), "\n") {
		t.Errorf("got %q, want the end of the last write", w.String())
	}
	if w.Lines() != 50 {
		t.Errorf("Lines: got %d, want 50", w.Lines())
	}
	all := &TailBuffer{}
	all.Write([]byte("a\nb\n"))
	if all.String() != "a\nb\n" {
		t.Errorf("Max 0: got %q, want everything", all.String())
	}
}

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc", 2); got != "b\nc" {
		t.Errorf("Tail: got %q, want %q", got, "b\nc")
	}
	if got := Tail("a", 5); got != "a" {
		t.Errorf("Tail short: got %q, want %q", got, "a")
	}
}

func TestFreePortNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("FreePort handed out %d twice", p)
		}
		seen[p] = true
	}
}
