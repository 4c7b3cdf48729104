package shares

import (
	"context"
	"testing"
	"time"
)

func TestCounter(t *testing.T) {
	var c Counter[string]
	var releases []func()
	for i := range 3 {
		r, ok := c.Take("a", 3)
		if !ok {
			t.Fatalf("take %d refused within the limit", i)
		}
		releases = append(releases, r)
	}
	if _, ok := c.Take("a", 3); ok {
		t.Fatal("a take past the limit was granted")
	}
	if _, ok := c.Take("b", 3); !ok {
		t.Fatal("another key was refused")
	}
	releases[0]()
	releases[0]() // twice: counted once
	if got := c.Held("a"); got != 2 {
		t.Fatalf("held after one release (called twice): %d, want 2", got)
	}
	if _, ok := c.Take("a", 3); !ok {
		t.Fatal("a take after a release was refused")
	}
}

// A caller over the limit waits in line: released slots go to the
// waiters first come, first served; more than queue waiters are refused
// at once, and a waiter whose context ends leaves the line (a slot
// handed to it as it gave up passes on).
func TestWait(t *testing.T) {
	var c Counter[string]
	r1, _ := c.Take("a", 1)
	got := make(chan int, 3)
	var releases [3]func()
	for i := range 2 {
		go func() {
			r, ok := c.Wait(context.Background(), "a", 1, 2)
			if ok {
				releases[i] = r
				got <- i
			}
		}()
		waitQueued(t, &c, "a", i+1)
	}
	if _, ok := c.Wait(context.Background(), "a", 1, 2); ok {
		t.Fatal("a third waiter past the queue got a slot")
	}
	r1()
	if i := <-got; i != 0 {
		t.Fatalf("the slot went to waiter %d, want the first", i)
	}
	if c.Held("a") != 1 {
		t.Fatalf("held %d while the slot passed on, want 1", c.Held("a"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, ok := c.Wait(ctx, "a", 1, 2); ok {
		t.Fatal("a waiter whose context ended got a slot")
	}
	releases[0]()
	if i := <-got; i != 1 {
		t.Fatalf("the slot went to waiter %d, want the second", i)
	}
	releases[1]()
	if c.Held("a") != 0 {
		t.Fatalf("held %d after every release, want 0", c.Held("a"))
	}
}

// waitQueued waits until n callers wait for k.
func waitQueued(t *testing.T, c *Counter[string], k string, n int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		q := 0
		if h := c.held[k]; h != nil {
			q = len(h.queue)
		}
		c.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d waiters, want %d", q, n)
		}
	}
}
