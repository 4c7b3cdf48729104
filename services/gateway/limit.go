package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ipLimiter is a token bucket per client IP. Buckets idle long enough to
// be full again are dropped when the table grows, so its size follows the
// number of recently active clients.
type ipLimiter struct {
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	sweep   int // table size that triggers the next sweep
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(r rate.Limit, burst int, now func() time.Time) *ipLimiter {
	return &ipLimiter{rate: r, burst: burst, now: now, buckets: map[string]*bucket{}, sweep: 1024}
}

// allow takes a token from ip's bucket.
func (l *ipLimiter) allow(ip string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= l.sweep {
			l.dropIdle(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// dropIdle removes buckets that have refilled (l.mu held).
func (l *ipLimiter) dropIdle(now time.Time) {
	full := time.Duration(float64(l.burst) / float64(l.rate) * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, ip)
		}
	}
	l.sweep = max(1024, 2*len(l.buckets))
}
