package password

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pc2/pc2/internal/netaddr"
)

// Attempt limits of a Guard, the same for every password of the product
// (the owner's login and WebDAV, setup codes, the device admin API): per
// client, 5 at once, then one every 6 s; all clients from elsewhere
// together, 20 at once, then 2 a second, so guessing from many addresses
// stays slow too, and all clients on the local network together the
// same, in a bucket of their own: strangers on the internet guessing
// cannot lock the owner out at home. A client is an IPv4 address or an
// IPv6 /64 (one home's prefix: a guesser cannot rotate through its
// addresses). Clients whose password passed before (KnownFor) are not
// counted in either global limit.
var (
	AttemptsPerClient      = rate.Every(6 * time.Second)
	AttemptsPerClientBurst = 5
	AttemptsGlobal         = rate.Limit(2)
	AttemptsGlobalBurst    = 20
	KnownFor               = 30 * 24 * time.Hour
)

// maxKnown bounds the remembered good clients; the least recent go first.
const maxKnown = 256

// Client is who makes an attempt.
type Client struct {
	// Addr is the client's IP address (or another name for clients that
	// have none, which then share one limit).
	Addr string
	// Local: the client is on the device's local network (it connected
	// directly from a private, loopback or link-local address).
	Local bool
}

// key is the client's per-client bucket: its IPv4 address, or its
// IPv6 /64.
func (c Client) key() string { return netaddr.ClientKey(c.Addr) }

// ErrLimited means a client has used up its attempts (or all clients
// together have): the password was not even checked.
var ErrLimited = errors.New("password: too many attempts, try again later")

// verifiedFor is how long a password that passed argon2id is taken again
// without it: clients such as WebDAV and `pc2 update` send it with every
// request, and argon2id costs 19 MiB and tens of milliseconds on a Pi.
const verifiedFor = 10 * time.Minute

// Guard checks passwords within attempt limits. Its zero value is not
// usable; use NewGuard.
type Guard struct {
	now func() time.Time

	mu        sync.Mutex
	perClient map[string]*rate.Limiter
	global    *rate.Limiter        // clients from elsewhere
	local     *rate.Limiter        // clients on the local network
	known     map[string]time.Time // client key -> until when it is known good
	pruned    time.Time
	// verified remembers passwords that passed, keyed by an HMAC of hash
	// and password under a per-process key, never the password itself.
	verified  map[string]time.Time
	verifyKey []byte
}

// NewGuard returns a Guard on the clock now (nil: time.Now) and random
// source rnd (nil: crypto/rand) for its HMAC key.
func NewGuard(now func() time.Time, rnd io.Reader) (*Guard, error) {
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	g := &Guard{now: now, perClient: map[string]*rate.Limiter{}, known: map[string]time.Time{},
		global:   rate.NewLimiter(AttemptsGlobal, AttemptsGlobalBurst),
		local:    rate.NewLimiter(AttemptsGlobal, AttemptsGlobalBurst),
		verified: map[string]time.Time{}, verifyKey: make([]byte, 32)}
	if _, err := io.ReadFull(rnd, g.verifyKey); err != nil {
		return nil, errors.New("password: guard key: " + err.Error())
	}
	return g, nil
}

// Allow spends one attempt of client (a password check or any other
// secret a client may guess, such as a setup code) and reports whether it
// had one.
func (g *Guard) Allow(c Client) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if now.Sub(g.pruned) > 10*time.Minute {
		// Full buckets carry no information; drop them.
		for k, l := range g.perClient {
			if l.TokensAt(now) >= float64(AttemptsPerClientBurst) {
				delete(g.perClient, k)
			}
		}
		for k, until := range g.known {
			if !now.Before(until) {
				delete(g.known, k)
			}
		}
		g.pruned = now
	}
	k := c.key()
	l := g.perClient[k]
	if l == nil {
		l = rate.NewLimiter(AttemptsPerClient, AttemptsPerClientBurst)
		g.perClient[k] = l
	}
	return l.AllowN(now, 1) && (g.known[k].After(now) || g.bucket(c).AllowN(now, 1))
}

// bucket is the global limit c counts in; g.mu is held.
func (g *Guard) bucket(c Client) *rate.Limiter {
	if c.Local {
		return g.local
	}
	return g.global
}

// cacheKey is the verified-cache key of hash and pw.
func (g *Guard) cacheKey(hash, pw string) string {
	m := hmac.New(sha256.New, g.verifyKey)
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(pw))
	return string(m.Sum(nil))
}

// Remembered reports whether pw passed against hash within verifiedFor,
// so that Check will not run argon2id for it.
func (g *Guard) Remembered(hash, pw string) bool {
	key := g.cacheKey(hash, pw)
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.verified[key]
	return ok && g.now().Before(until)
}

// Check verifies pw against hash for client c: nil when it matches,
// ErrLimited when c (or every stranger together) is out of attempts,
// ErrMismatch when it does not match, another error for an unusable
// hash. A limited client gets ErrLimited even for the right password:
// else guessing on would tell a right guess. A password that passed
// within verifiedFor is taken without spending an attempt, and a client
// whose password passed is known good for KnownFor.
func (g *Guard) Check(c Client, hash, pw string) error {
	key := g.cacheKey(hash, pw)
	ck := c.key()
	now := g.now()
	g.mu.Lock()
	until, seen := g.verified[key]
	l := g.perClient[ck]
	blocked := (l != nil && l.TokensAt(now) < 1) || (!g.known[ck].After(now) && g.bucket(c).TokensAt(now) < 1)
	g.mu.Unlock()
	if blocked {
		return ErrLimited
	}
	if !seen || !now.Before(until) {
		if !g.Allow(c) {
			return ErrLimited
		}
		if err := Verify(hash, pw); err != nil {
			return err
		}
	}
	g.mu.Lock()
	for k, t := range g.verified {
		if !now.Before(t) {
			delete(g.verified, k)
		}
	}
	g.verified[key] = now.Add(verifiedFor)
	if _, ok := g.known[ck]; !ok && len(g.known) >= maxKnown {
		oldest := ""
		for k, t := range g.known {
			if oldest == "" || t.Before(g.known[oldest]) {
				oldest = k
			}
		}
		delete(g.known, oldest)
	}
	g.known[ck] = now.Add(KnownFor)
	g.mu.Unlock()
	return nil
}

// Forget drops the remembered passwords (after a password change).
func (g *Guard) Forget() {
	g.mu.Lock()
	clear(g.verified)
	g.mu.Unlock()
}
