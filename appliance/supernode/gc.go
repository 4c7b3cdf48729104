package supernode

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The collector's target in a process that holds attached nodes.
//
// Go's default (GOGC=100) lets as much garbage as there is live heap
// accumulate between collections. A supernode's live heap is mostly its
// nodes' long-lived state (connections, sessions), and while they attach
// their handshakes' garbage fills the spans around that state; what a
// collection frees there stays resident in partly used spans. At 10,000
// nodes that headroom and those spans were a fifth of the supernode's
// memory (docs/benchmarks.md, "Relay: 10,000 attached nodes"). A lower
// target costs CPU in proportion to the allocation rate, whatever the
// heap's size: the gateway path spent 5 % of the supernode's CPU in the
// collector at GOGC=100, 11 % at 50 and 23 % at 20.
//
// So the tuner bounds the garbage between collections to gcHeadroom: Go's
// default while the live heap is below it, a lower target as nodes fill
// the heap, down to gcMinPercent (at 10,000 nodes, 503 MB in all against
// 546 MB at a fixed GOGC=50 and 582 MB at 100). The gateway's visitors
// of a small supernode pay nothing for it; those of a full one pay in
// the collector's CPU. Should the collector take more than gcBusy of the
// process's CPU, the tuner lets the target rise, doubling its floor each
// check, and lowers it again as the collector goes quiet. gcBusy is
// high because an attach storm itself keeps the collector busy: with it
// at a tenth or a quarter, the floor rose while the nodes attached and
// the memory at 10,000 nodes was 576 or 530 MB.

const (
	// gcHeadroom is the garbage allowed between collections whatever
	// the live heap (at most Go's default: as much again).
	gcHeadroom = 32 << 20
	// gcMinPercent is the lowest target.
	gcMinPercent = 10
	// gcBusy is the collector's share of the process's CPU time above
	// which the target rises: half, where Go's own limiter caps the
	// collector when it works to a memory limit.
	gcBusy = 0.5
	// gcCheckEvery is how often the tuner looks.
	gcCheckEvery = 2 * time.Second
)

// gcReading is what the tuner reads from the runtime.
type gcReading struct {
	live        uint64  // live heap marked by the last collection
	gcCPU, used float64 // CPU-seconds in the collector, and in all but idle
}

// gcTuner sets the target from the live heap and the collector's CPU.
type gcTuner struct {
	read  func() gcReading
	set   func(p int) int // debug.SetGCPercent
	cur   int             // the target set
	floor int             // the lowest target allowed now
	last  gcReading
}

func newGCTuner(read func() gcReading, set func(int) int) *gcTuner {
	return &gcTuner{read: read, set: set, cur: 100, floor: gcMinPercent, last: read()}
}

// step looks once: it sets the target if it changed and returns it and
// whether it changed.
func (t *gcTuner) step() (int, bool) {
	r := t.read()
	dgc, dused := r.gcCPU-t.last.gcCPU, r.used-t.last.used
	t.last = r
	if dused > 0 {
		switch share := dgc / dused; {
		case share > gcBusy:
			t.floor = min(100, max(2*t.floor, 2*t.cur))
		case share < gcBusy/2:
			t.floor = max(gcMinPercent, t.floor/2)
		}
	}
	p := 100
	if r.live > 0 {
		p = int(min(100, 100*gcHeadroom/r.live))
	}
	p = max(p, t.floor)
	if p == t.cur {
		return p, false
	}
	t.set(p)
	t.cur = p
	return p, true
}

// readGC reads the runtime's figures.
func readGC() gcReading {
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/cpu/classes/idle:cpu-seconds"},
	}
	metrics.Read(s)
	f := func(i int) float64 {
		if s[i].Value.Kind() != metrics.KindFloat64 {
			return 0
		}
		return s[i].Value.Float64()
	}
	var r gcReading
	if s[0].Value.Kind() == metrics.KindUint64 {
		r.live = s[0].Value.Uint64()
	}
	r.gcCPU, r.used = f(1), f(2)-f(3)
	return r
}

// tuneGC keeps the collector's target as above until ctx ends, then sets
// Go's default again; unless the environment sets GOGC, which stays the
// operator's to choose. It returns at once, reporting whether it tunes.
func tuneGC(ctx context.Context, log *slog.Logger) bool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if v := os.Getenv("GOGC"); v != "" {
		log.Info("garbage collector target from the environment", "gogc", v)
		return false
	}
	go newGCTuner(readGC, debug.SetGCPercent).run(ctx, log)
	return true
}

// run steps every gcCheckEvery until ctx ends, then sets Go's default
// again: the process may go on without the supernode (the appliance's
// device process, tests).
func (t *gcTuner) run(ctx context.Context, log *slog.Logger) {
	tick := time.NewTicker(gcCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if t.cur != 100 {
				t.set(100)
			}
			return
		case <-tick.C:
		}
		if p, changed := t.step(); changed {
			log.Debug("garbage collector target", "gogc", p, "live_heap", t.last.live)
		}
	}
}
