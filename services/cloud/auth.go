package cloud

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"net/http"
	"time"

	"github.com/pc2/pc2/provisioning/password"
)

// Session lifetimes: a login lasts 30 days, or until 7 days unused.
const (
	sessionMaxAge  = 30 * 24 * time.Hour
	sessionIdle    = 7 * 24 * time.Hour
	sessionCookie  = "pc2_session"
	maxSessions    = 64 // the oldest logins go first beyond this
	seenResolution = time.Hour
)

// Login attempts (passwords, setup codes, WebDAV Basic authentication)
// are limited per client address and for all clients together by a
// password.Guard (its AttemptsPerClient and AttemptsGlobal), which also
// remembers a password that passed argon2id for a while.
type auth struct {
	st    *stateStore
	now   func() time.Time
	rand  io.Reader
	guard *password.Guard
}

func newAuth(st *stateStore, now func() time.Time, rnd io.Reader) *auth {
	g, err := password.NewGuard(now, rnd)
	if err != nil {
		panic("cloud: random source failed: " + err.Error())
	}
	return &auth{st: st, now: now, rand: rnd, guard: g}
}

// token returns n random bytes, base64url.
func token(rnd io.Reader, n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rnd, b); err != nil {
		panic("cloud: random source failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenHash(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

// allowAttempt spends one login attempt of c.
func (a *auth) allowAttempt(c clientInfo) bool { return a.guard.Allow(c.guardClient()) }

// guardClient is c as the password guard counts it.
func (c clientInfo) guardClient() password.Client { return password.Client{Addr: c.IP, Local: c.Local} }

// checkPassword verifies the owner password, within the rate limit.
// It returns false for a wrong password; limited reports a refusal
// before checking (a limited client is refused even the right password).
func (a *auth) checkPassword(c clientInfo, pw string) (ok, limited bool) {
	hash := a.st.getOwner().PasswordHash
	if hash == "" {
		return false, false
	}
	err := a.guard.Check(c.guardClient(), hash, pw)
	return err == nil, errors.Is(err, password.ErrLimited)
}

// forgetPasswords drops remembered passwords (password change).
func (a *auth) forgetPasswords() { a.guard.Forget() }

// newSession logs a browser in and returns the cookie's token.
func (a *auth) newSession(c clientInfo, agent string) (string, *session, error) {
	t := token(a.rand, 32)
	now := a.now()
	if len(agent) > 200 {
		agent = agent[:200]
	}
	s := &session{CSRF: token(a.rand, 24), Created: now, Expires: now.Add(sessionMaxAge), Seen: now, IP: c.IP, Agent: agent}
	st := a.st
	st.mu.Lock()
	defer st.mu.Unlock()
	old := maps.Clone(st.sessions)
	for k, v := range st.sessions {
		if a.expired(v, now) {
			delete(st.sessions, k)
		}
	}
	evictOldest(st.sessions, maxSessions-1, func(v *session) time.Time { return v.Seen })
	st.sessions[tokenHash(t)] = s
	if err := st.save("sessions.json", st.sessions); err != nil {
		st.sessions = old
		return "", nil, err
	}
	return t, s, nil
}

func (a *auth) expired(s *session, now time.Time) bool {
	return !now.Before(s.Expires) || now.Sub(s.Seen) > sessionIdle
}

// session returns the logged-in session of r, or nil.
func (a *auth) session(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil
	}
	st := a.st
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.sessions[tokenHash(c.Value)]
	now := a.now()
	if s == nil || a.expired(s, now) {
		return nil
	}
	if now.Sub(s.Seen) > seenResolution {
		// Kept in memory; the file learns it with the next login or
		// logout (an idle expiry a little early after a restart is fine).
		s.Seen = now
	}
	cp := *s
	return &cp
}

// endSession logs r's browser out; all logs every browser out.
func (a *auth) endSession(r *http.Request, all bool) error {
	st := a.st
	st.mu.Lock()
	defer st.mu.Unlock()
	old := maps.Clone(st.sessions)
	if all {
		clear(st.sessions)
	} else if c, err := r.Cookie(sessionCookie); err == nil {
		delete(st.sessions, tokenHash(c.Value))
	}
	if err := st.save("sessions.json", st.sessions); err != nil {
		st.sessions = old
		return err
	}
	return nil
}

func (a *auth) sessionCount() int {
	st := a.st
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, s := range st.sessions {
		if !a.expired(s, a.now()) {
			n++
		}
	}
	return n
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, Secure: clientOf(r).Secure, SameSite: http.SameSiteLaxMode})
}

func clearCookie(w http.ResponseWriter, name, path string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// csrfOK checks a state-changing request: the token of the session in
// the X-CSRF-Token header or the csrf form field, and no foreign Origin.
func csrfOK(r *http.Request, want string) bool {
	if !sameOrigin(r) {
		return false
	}
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// sameOrigin refuses requests a browser marks as coming from another
// site (Sec-Fetch-Site) or origin; requests without the headers (curl,
// old browsers) pass, the CSRF token still binds them.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		host := o
		for _, p := range []string{"https://", "http://"} {
			if len(host) > len(p) && host[:len(p)] == p {
				host = host[len(p):]
				break
			}
		}
		if host != r.Host {
			return false
		}
	}
	return true
}

type ctxKey int

const (
	clientKey ctxKey = iota
	sessionKey
)

func withClient(ctx context.Context, c clientInfo) context.Context {
	return context.WithValue(ctx, clientKey, c)
}

func clientOf(r *http.Request) clientInfo {
	c, _ := r.Context().Value(clientKey).(clientInfo)
	return c
}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey).(*session)
	return s
}

// owner wraps h for the owner only: with a session (and, for anything
// but GET and HEAD, its CSRF token); others go to the login page (pages)
// or get a 401 (API).
func (s *Server) owner(h http.HandlerFunc) http.HandlerFunc { return s.ownerCheck(h, true) }

// ownerMultipart is owner for multipart uploads: parsing the form for
// the CSRF field would buffer the files, so the handler checks the
// form's first part (upload.go) or the header.
func (s *Server) ownerMultipart(h http.HandlerFunc) http.HandlerFunc { return s.ownerCheck(h, false) }

func (s *Server) ownerCheck(h http.HandlerFunc, checkCSRF bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.state.setupDone() {
			http.Redirect(w, r, "/_/setup", http.StatusSeeOther)
			return
		}
		sess := s.auth.session(r)
		if sess == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/_/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			s.fail(w, r, http.StatusUnauthorized, "log in first")
			return
		}
		if checkCSRF && r.Method != http.MethodGet && r.Method != http.MethodHead && !csrfOK(r, sess.CSRF) {
			s.fail(w, r, http.StatusForbidden, "the request did not come from this cloud's pages (CSRF check failed); reload the page")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey, sess)))
	}
}

// dav guards WebDAV with HTTP Basic authentication (any user name, the
// owner password), rate limited like logins.
func (s *Server) dav(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.state.setupDone() {
			http.Error(w, "the personal cloud is not set up yet", http.StatusServiceUnavailable)
			return
		}
		// A browser that has the password cached would send it with a
		// request another site makes it send.
		if !sameOrigin(r) {
			http.Error(w, "cross-site request refused", http.StatusForbidden)
			return
		}
		_, pw, ok := r.BasicAuth()
		if ok {
			good, limited := s.auth.checkPassword(clientOf(r), pw)
			if limited {
				w.Header().Set("Retry-After", "6")
				http.Error(w, "too many attempts; wait a few seconds", http.StatusTooManyRequests)
				return
			}
			if good {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="PC2 cloud", charset="UTF-8"`)
		http.Error(w, "owner password required", http.StatusUnauthorized)
	}
}

// evictOldest deletes the entries of m with the oldest times until at
// most keep are left.
func evictOldest[V any](m map[string]V, keep int, at func(V) time.Time) {
	for len(m) > keep {
		var oldest string
		for k, v := range m {
			if oldest == "" || at(v).Before(at(m[oldest])) {
				oldest = k
			}
		}
		delete(m, oldest)
	}
}
