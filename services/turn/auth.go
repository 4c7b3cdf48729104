package turn

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	pionturn "github.com/pion/turn/v4"

	"github.com/pc2/pc2/internal/netaddr"
)

// password is the TURN REST API password for username.
func password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

var (
	errNoSeparator = errors.New("no ':' between expiry and user")
	errBadExpiry   = errors.New("expiry is not a unix time")
	errNoUser      = errors.New("empty user")
)

// maxExpiry (9999-12-31) keeps time.Unix away from overflow.
const maxExpiry = 253402300799

// parseUsername splits a "<unix expiry>:<user>" username. The user may
// itself contain ':'.
func parseUsername(username string) (expires time.Time, user string, err error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok {
		return time.Time{}, "", errNoSeparator
	}
	// Digits only: ParseInt would also take a sign.
	if ts == "" || len(ts) > 19 || strings.Trim(ts, "0123456789") != "" {
		return time.Time{}, "", errBadExpiry
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec > maxExpiry {
		return time.Time{}, "", errBadExpiry
	}
	if user == "" {
		return time.Time{}, "", errNoUser
	}
	return time.Unix(sec, 0), user, nil
}

// userOf is the user part of a username that authenticate accepted.
func userOf(username string) string {
	_, user, _ := strings.Cut(username, ":")
	return user
}

// logName shortens an untrusted username for the log.
func logName(username string) string {
	const max = 120
	if len(username) > max {
		return username[:max] + "..."
	}
	return username
}

// authenticate is pion's AuthHandler: it returns the long-term key for a
// well-formed, unexpired username in our realm. Whether the client knows
// the password is pion's MESSAGE-INTEGRITY check (reported to onAuth).
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	refuse := func(reason string, args ...any) ([]byte, bool) {
		args = append([]any{"reason", reason, "username", logName(username), "client", src.String()}, args...)
		s.log.Warn("turn: credentials refused", args...)
		return nil, false
	}
	if realm != s.realm {
		return refuse("wrong realm", "realm", logName(realm), "want", s.realm)
	}
	expires, _, err := parseUsername(username)
	if err != nil {
		return refuse("malformed username: " + err.Error())
	}
	if now := s.now(); !now.Before(expires) {
		return refuse("expired", "expired", expires.UTC().Format(time.RFC3339))
	}
	return pionturn.GenerateAuthKey(username, realm, password(s.secret, username)), true
}

// onAuth logs failed integrity checks: a forged password, or a password
// for another username or secret.
func (s *Server) onAuth(src, dst net.Addr, proto, username, realm, method string, ok bool) {
	if ok {
		s.log.Debug("turn: authenticated", "username", logName(username), "client", src.String(), "method", method)
		return
	}
	s.log.Warn("turn: credentials refused", "reason", "bad password", "username", logName(username), "client", src.String(), "method", method)
}

// quota enforces the per-user and per-address allocation limits. pion asks admit before
// creating an allocation and reports the outcome through the event
// handler. Allocate requests on different TCP connections are handled
// concurrently, so an admitted request holds a pending slot, keyed by
// client address, until created or failed converts or frees it.
type quota struct {
	limit, addrLimit int
	now              func() time.Time
	log              *slog.Logger

	mu         sync.Mutex
	active     map[string]int          // by user
	activeAddr map[string]int          // by client address key (addrKey)
	pending    map[string]pendingAlloc // by client address
}

type pendingAlloc struct {
	user, addr string
	since      time.Time
}

// addrKey is the client that per-address limits count: its IPv4 address
// or IPv6 /64.
func addrKey(src net.Addr) string { return netaddr.ClientKey(netaddr.Host(src.String())) }

// pendingTimeout frees a pending slot whose outcome pion never reported.
// It should not happen; this keeps a bug from leaking quota forever.
const pendingTimeout = time.Minute

// admit is pion's QuotaHandler.
func (q *quota) admit(username, realm string, src net.Addr) bool {
	user, addr := userOf(username), addrKey(src)
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	n, na := q.active[user], q.activeAddr[addr]
	for k, p := range q.pending {
		if now.Sub(p.since) > pendingTimeout {
			delete(q.pending, k)
			continue
		}
		if p.user == user {
			n++
		}
		if p.addr == addr {
			na++
		}
	}
	if n >= q.limit {
		q.log.Warn("turn: allocation refused", "reason", "per-user limit reached", "user", logName(user), "limit", q.limit, "client", src.String())
		return false
	}
	if na >= q.addrLimit {
		q.log.Warn("turn: allocation refused", "reason", "per-address limit reached", "user", logName(user), "limit", q.addrLimit, "client", src.String())
		return false
	}
	q.pending[src.String()] = pendingAlloc{user: user, addr: addr, since: now}
	return true
}

func (q *quota) created(src, dst net.Addr, proto, username, realm string, relay net.Addr, requestedPort int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, src.String())
	q.active[userOf(username)]++
	q.activeAddr[addrKey(src)]++
}

func (q *quota) deleted(src, dst net.Addr, proto, username, realm string) {
	user := userOf(username)
	q.mu.Lock()
	defer q.mu.Unlock()
	decrement(q.active, user)
	decrement(q.activeAddr, addrKey(src))
}

// decrement counts one less for k, dropping it at zero.
func decrement(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

// failed is pion's OnAllocationError, called whenever handling a packet
// from src failed; if that was an admitted Allocate, its slot is free.
func (q *quota) failed(src, dst net.Addr, proto, message string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, src.String())
}
