package supernode

import (
	"context"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestGCTuner(t *testing.T) {
	r := gcReading{live: 10 << 20}
	var sets []int
	tu := newGCTuner(func() gcReading { return r }, func(p int) int { sets = append(sets, p); return 0 })
	step := func(what string, live uint64, gcCPU, used float64, want int) {
		t.Helper()
		r.live, r.gcCPU, r.used = live, r.gcCPU+gcCPU, r.used+used
		if got, _ := tu.step(); got != want {
			t.Errorf("%s: target %d, want %d", what, got, want)
		}
	}
	step("small heap", 10<<20, 0.01, 1, 100)
	step("heap at the headroom", 32<<20, 0.01, 1, 100)
	step("128 MiB of nodes", 128<<20, 0.01, 1, 25)
	step("256 MiB", 256<<20, 0.01, 1, 12)
	step("1 GiB: the floor", 1<<30, 0.01, 1, gcMinPercent)
	step("the same, quiet: no new setting", 1<<30, 0, 0, gcMinPercent)
	// The collector takes 60 % of the CPU.
	step("busy: the floor doubles from the target", 256<<20, 0.6, 1, 20)
	step("still busy", 256<<20, 0.6, 1, 40)
	step("still busy", 256<<20, 0.6, 1, 80)
	step("still busy: at most Go's default", 256<<20, 0.6, 1, 100)
	step("neither busy nor quiet: stays", 256<<20, 0.3, 1, 100)
	step("quiet again", 256<<20, 0.01, 1, 50)
	step("quiet", 256<<20, 0.01, 1, 25)
	step("quiet: back to the headroom's", 256<<20, 0.01, 1, 12)
	step("nodes gone", 20<<20, 0.01, 1, 100)
	want := []int{25, 12, gcMinPercent, 20, 40, 80, 100, 50, 25, 12, 100}
	if !slices.Equal(sets, want) {
		t.Errorf("settings %v, want %v", sets, want)
	}
}

// TestGCTunerRun: the tuner looks every gcCheckEvery, and sets Go's
// default again when the supernode stops.
func TestGCTunerRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var sets []int
		got := func() []int { mu.Lock(); defer mu.Unlock(); return slices.Clone(sets) }
		tu := newGCTuner(func() gcReading { return gcReading{live: 1 << 30} },
			func(p int) int { mu.Lock(); sets = append(sets, p); mu.Unlock(); return 0 })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { tu.run(ctx, slog.New(slog.DiscardHandler)); close(done) }()
		time.Sleep(gcCheckEvery - time.Millisecond)
		synctest.Wait()
		if s := got(); len(s) != 0 {
			t.Fatalf("set %v before the first look", s)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if s := got(); !slices.Equal(s, []int{gcMinPercent}) {
			t.Fatalf("after the first look: %v, want [%d]", s, gcMinPercent)
		}
		cancel()
		<-done
		if s := got(); !slices.Equal(s, []int{gcMinPercent, 100}) {
			t.Fatalf("after the stop: %v, want Go's default again", s)
		}
	})
}

func TestTuneGCLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	if tuneGC(context.Background(), nil) {
		t.Error("tuneGC tunes with GOGC set in the environment")
	}
}

func TestReadGC(t *testing.T) {
	runtime.GC() // the runtime's figures are updated by a collection
	r := readGC()
	if r.live == 0 || r.used <= 0 {
		t.Errorf("readGC = %+v: want a live heap and CPU time", r)
	}
}
