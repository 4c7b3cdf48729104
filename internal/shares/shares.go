// Package shares counts what each caller holds of a bounded resource (a
// node's streams), so that no one caller takes all of it.
package shares

import "sync"

// Counter counts holdings by key. Its zero value is ready to use.
type Counter[K comparable] struct {
	mu   sync.Mutex
	held map[K]int
}

// Take counts one more for k unless k already holds limit; release gives
// it back (once).
func (c *Counter[K]) Take(k K, limit int) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[k] >= limit {
		return nil, false
	}
	if c.held == nil {
		c.held = map[K]int{}
	}
	c.held[k]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.held[k]--; c.held[k] <= 0 {
				delete(c.held, k)
			}
			c.mu.Unlock()
		})
	}, true
}

// Held is what k holds now.
func (c *Counter[K]) Held(k K) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[k]
}
