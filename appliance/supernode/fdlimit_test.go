package supernode

import (
	"log/slog"
	"syscall"
	"testing"

	"github.com/pc2/pc2/services/dht"
)

// A supernode whose open-file limit cannot be raised far enough takes
// as many nodes as the limit allows, not more; with a limit it may
// raise, it takes them all.
func TestSizeForFDs(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	var asked uint64
	raise := func(to uint64) func(uint64) (uint64, error) {
		return func(need uint64) (uint64, error) { asked = need; return min(need, to), nil }
	}
	if got := sizeForFDs(4096, raise(1<<20), log); got != 4096 || asked != uint64((dht.Limits{Peers: 4096}).Descriptors(dht.ModeServer)+fdReserve) {
		t.Errorf("a limit that rises: %d nodes (asked %d open files), want 4096", got, asked)
	}
	got := sizeForFDs(4096, raise(6000), log)
	if want := dht.PeersFor(6000 - fdReserve); got != want || got >= 4096 {
		t.Errorf("6000 open files: %d nodes, want %d", got, want)
	}
	if need := (dht.Limits{Peers: got}).Descriptors(dht.ModeServer) + fdReserve; need > 6000 {
		t.Errorf("%d nodes need %d open files, above the 6000 there are", got, need)
	}
	if got := sizeForFDs(4096, raise(1024), log); got < 1 || got > 100 {
		t.Errorf("1024 open files: %d nodes, want a few", got)
	}

	// The process's own limit: raised to what it already has, nothing
	// changes.
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if got, err := raiseFDLimit(l.Cur); err != nil || got != l.Cur {
		t.Errorf("raise to the current limit %d: %d %v", l.Cur, got, err)
	}
}
