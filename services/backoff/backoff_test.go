package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestWait(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: -1}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		if got := p.Wait(attempt); got != want {
			t.Errorf("attempt %d: got %v, want %v", attempt, got, want)
		}
	}
	p.Jitter, p.Rand = 0.5, func() float64 { return 0.5 }
	if got := p.Wait(2); got != 150*time.Millisecond {
		t.Errorf("with jitter: got %v, want 150ms", got)
	}
	if got := (Policy{Rand: func() float64 { return 0 }}).Wait(1); got != 250*time.Millisecond {
		t.Errorf("zero policy: got %v, want 250ms", got)
	}
}

func TestRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var waits []time.Duration
		err := Retry(context.Background(), Policy{Initial: time.Second, Jitter: -1}, func(ctx context.Context, attempt int) error {
			if attempt < 4 {
				return errors.New("not yet")
			}
			return nil
		}, func(_ int, _ error, wait time.Duration) { waits = append(waits, wait) })
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 7*time.Second || len(waits) != 3 {
			t.Fatalf("got %v over %d waits, want 7s over 3 (1+2+4)", got, len(waits))
		}
	})
}

func TestRetryStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		calls := 0
		err := Retry(ctx, Policy{Jitter: -1}, func(context.Context, int) error { calls++; return errors.New("down") }, nil)
		if !errors.Is(err, context.DeadlineExceeded) || calls < 3 {
			t.Fatalf("got %v after %d calls, want deadline exceeded after several", err, calls)
		}
	})
}
