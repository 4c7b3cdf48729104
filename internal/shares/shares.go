// Package shares counts what each caller holds of a bounded resource (a
// node's streams), so that no one caller takes all of it; a caller over
// its share may wait in line for a slot instead of being refused.
package shares

import (
	"context"
	"sync"
)

// Counter counts holdings by key. Its zero value is ready to use.
type Counter[K comparable] struct {
	mu   sync.Mutex
	held map[K]*holding[K]
}

// holding is what one key holds and who waits for it.
type holding[K comparable] struct {
	n     int
	queue []chan struct{} // closed when a released slot passes to its waiter
}

// Take counts one more for k unless k already holds limit; release gives
// it back (once).
func (c *Counter[K]) Take(k K, limit int) (release func(), ok bool) {
	return c.Wait(context.Background(), k, limit, 0)
}

// Wait is Take that, when k holds limit, waits in line (first come,
// first served) until a slot of k's is released or ctx ends, unless
// queue callers already wait for k. ok is false when it got no slot.
func (c *Counter[K]) Wait(ctx context.Context, k K, limit, queue int) (release func(), ok bool) {
	c.mu.Lock()
	if c.held == nil {
		c.held = map[K]*holding[K]{}
	}
	h := c.held[k]
	if h == nil {
		h = &holding[K]{}
		c.held[k] = h
	}
	if h.n < limit {
		h.n++
		c.mu.Unlock()
		return c.releaser(k, h), true
	}
	if len(h.queue) >= queue || ctx.Err() != nil {
		c.mu.Unlock()
		return nil, false
	}
	ch := make(chan struct{})
	h.queue = append(h.queue, ch)
	c.mu.Unlock()
	select {
	case <-ch:
		return c.releaser(k, h), true
	case <-ctx.Done():
	}
	c.mu.Lock()
	for i, w := range h.queue {
		if w == ch {
			h.queue = append(h.queue[:i], h.queue[i+1:]...)
			c.mu.Unlock()
			return nil, false
		}
	}
	c.mu.Unlock()
	// The slot was handed over as ctx ended: pass it on.
	c.releaser(k, h)()
	return nil, false
}

// releaser gives one of h's slots back once: to the first waiter, or
// to the count.
func (c *Counter[K]) releaser(k K, h *holding[K]) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(h.queue) > 0 {
				close(h.queue[0])
				h.queue = h.queue[1:]
				return
			}
			if h.n--; h.n <= 0 && c.held[k] == h {
				delete(c.held, k)
			}
		})
	}
}

// Held is what k holds now.
func (c *Counter[K]) Held(k K) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.held[k]; h != nil {
		return h.n
	}
	return 0
}
