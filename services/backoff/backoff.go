// Package backoff retries an operation with capped, jittered exponential
// backoff: joining the DHT at boot (the network or the supernodes may come
// up later than the node), publishing, and later reconnecting tunnels.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy says how long to wait between attempts. The zero value waits
// 250 ms, doubling up to 30 s, with 20 % jitter.
type Policy struct {
	Initial time.Duration // first wait (default 250 ms)
	Max     time.Duration // cap (default 30 s)
	// Jitter is the fraction of each wait that is random, so that many
	// nodes restarted together do not retry in lockstep (default 0.2; a
	// negative value disables it).
	Jitter float64
	// Rand returns a number in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// Wait returns the wait after the given failed attempt (1-based).
func (p Policy) Wait(attempt int) time.Duration {
	initial, max, jitter := p.Initial, p.Max, p.Jitter
	if initial <= 0 {
		initial = 250 * time.Millisecond
	}
	if max <= 0 {
		max = 30 * time.Second
	}
	if jitter == 0 {
		jitter = 0.2
	}
	d := initial
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	if jitter > 0 {
		r := rand.Float64
		if p.Rand != nil {
			r = p.Rand
		}
		d -= time.Duration(float64(d) * jitter * r())
	}
	return d
}

// Retry calls op until it succeeds or ctx ends, waiting Policy.Wait between
// attempts and telling onErr (which may be nil) about each failure. It
// returns nil on success, else ctx's error.
func Retry(ctx context.Context, p Policy, op func(ctx context.Context, attempt int) error, onErr func(attempt int, err error, wait time.Duration)) error {
	for attempt := 1; ; attempt++ {
		err := op(ctx, attempt)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := p.Wait(attempt)
		if onErr != nil {
			onErr(attempt, err, wait)
		}
		if !Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// Sleep waits d or until ctx ends; it reports whether d passed (false:
// ctx ended first).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
