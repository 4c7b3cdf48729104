package cloud

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// The wizard: identity (create and confirm, restore, or keep a
// provisioned one), owner password, name. It answers only until setup is
// done, and only to browsers on the local network or that gave the
// one-time setup code, which the node logs (the console on the
// appliance). Its state is per browser (cookie pc2_setup), in memory: an
// interrupted wizard starts again, and the identity it already wrote is
// offered to keep.
const (
	setupCookie = "pc2_setup"
	wizardTTL   = time.Hour
	maxWizards  = 16
)

// Wizard steps.
const (
	stepIdentity  = "identity" // choose create / restore / keep
	stepWords     = "words"    // the 24 words, shown once
	stepConfirm   = "confirm"  // three of them asked back
	stepRestore   = "restore"  // type the 24 words
	stepData      = "data"     // restore the data too? (when the node has backups)
	stepRestoring = "restoring"
	stepPassword  = "password"
	stepName      = "name"
)

type wizSession struct {
	created time.Time
	csrf    string
	step    string
	words   string // while being shown and confirmed
	ask     [3]int // word positions (0-based) asked back
	pwHash  string
	name    string
	nameAPI string
	nameOp  string           // the operator of name's grant
	found   *backup.Location // the backup record's location
	dataErr string           // why finding or restoring the data failed
}

type wizard struct {
	s *Server

	mu       sync.Mutex
	setup    string // the current one-time code
	sessions map[string]*wizSession
}

func newWizard(s *Server) *wizard {
	return &wizard{s: s, sessions: map[string]*wizSession{}}
}

// codeAlphabet avoids look-alikes (0/O, 1/I/L): 31 symbols, 10 of them
// are about 50 bits, out of reach at the login rate limit.
const codeAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

func (z *wizard) code() string {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.setup == "" {
		z.setup = z.newCode()
	}
	return z.setup
}

func (z *wizard) newCode() string {
	var b strings.Builder
	buf := make([]byte, 8)
	for i := 0; i < 10; i++ {
		if i == 5 {
			b.WriteByte('-')
		}
		if _, err := z.s.opts.Rand.Read(buf); err != nil {
			panic("cloud: random source failed: " + err.Error())
		}
		b.WriteByte(codeAlphabet[binary.LittleEndian.Uint64(buf)%uint64(len(codeAlphabet))])
	}
	return b.String()
}

// useCode checks a setup code; a right one is used up and replaced by a
// new one (logged for the next browser).
func (z *wizard) useCode(got string) bool {
	got = strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(got), " ", ""))
	if len(got) == 10 {
		got = got[:5] + "-" + got[5:]
	}
	z.mu.Lock()
	if z.setup == "" || subtle.ConstantTimeCompare([]byte(got), []byte(z.setup)) != 1 {
		z.mu.Unlock()
		return false
	}
	z.setup = z.newCode()
	next := z.setup
	z.mu.Unlock()
	z.s.log.Info("setup code used; a new one for another browser", "setup_code", next)
	if z.s.opts.ShowSetupCode != nil {
		z.s.opts.ShowSetupCode(next)
	}
	return true
}

// session returns the wizard state of r's browser, making one for local
// browsers; nil when the browser must give the setup code first.
func (z *wizard) session(w http.ResponseWriter, r *http.Request, create bool) *wizSession {
	now := z.s.opts.Now()
	z.mu.Lock()
	defer z.mu.Unlock()
	for k, ws := range z.sessions {
		if now.Sub(ws.created) > wizardTTL {
			delete(z.sessions, k)
		}
	}
	if c, err := r.Cookie(setupCookie); err == nil {
		if ws := z.sessions[tokenHash(c.Value)]; ws != nil {
			return ws
		}
	}
	if !create && !clientOf(r).Local {
		return nil
	}
	evictOldest(z.sessions, maxWizards-1, func(ws *wizSession) time.Time { return ws.created })
	t := token(z.s.opts.Rand, 32)
	ws := &wizSession{created: now, csrf: token(z.s.opts.Rand, 24), step: stepIdentity}
	z.sessions[tokenHash(t)] = ws
	setCookie(w, r, setupCookie, t, "/_/", wizardTTL)
	return ws
}

// existing is the wizard state of r's browser, if it has one.
func (z *wizard) existing(r *http.Request) *wizSession {
	c, err := r.Cookie(setupCookie)
	if err != nil {
		return nil
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.sessions[tokenHash(c.Value)]
}

func (z *wizard) stepOf(ws *wizSession) string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return ws.step
}

// wizardPage is the template data of the wizard.
type wizardPage struct {
	Step      string
	CSRF      string
	Error     string
	NeedCode  bool
	DID       string
	Pending   bool // the device made an identity of its own
	Words     []string
	Ask       [3]int // 1-based positions
	Services  []NameService
	Name      string
	NameURL   string
	MinLength int
	// The data step: the location the backup record names, a problem,
	// a restore's progress.
	Found    string
	DataErr  string
	Location backup.Location
	Progress *backup.Progress
}

func (s *Server) handleSetup(w http.ResponseWriter, r *http.Request) {
	z := s.wiz
	if s.state.setupDone() {
		// A restore brought the owner back (setup is done from then
		// on): its browser follows it to the end, then logs in as
		// before.
		if ws := z.existing(r); ws != nil && z.stepOf(ws) == stepRestoring {
			if s.restoreFinished(ws) {
				z.finish(w)
				http.Redirect(w, r, "/_/login?restored=1", http.StatusSeeOther)
				return
			}
			if z.stepOf(ws) == stepRestoring {
				s.renderWizard(w, r, http.StatusOK, ws, "")
				return
			}
		}
		http.Redirect(w, r, "/_/login", http.StatusSeeOther)
		return
	}
	if r.Method == http.MethodPost && r.PostFormValue("action") == "code" {
		if !sameOrigin(r) {
			s.fail(w, r, http.StatusForbidden, "cross-site request refused")
			return
		}
		if !s.auth.allowAttempt(clientOf(r)) {
			s.renderWizard(w, r, http.StatusTooManyRequests, nil, "Too many attempts; wait a minute and try again.")
			return
		}
		if !z.useCode(r.PostFormValue("code")) {
			s.log.Warn("wrong setup code", "client", clientOf(r).IP)
			s.renderWizard(w, r, http.StatusForbidden, nil, "That is not the setup code. It is printed on the device's console.")
			return
		}
		z.session(w, r, true)
		http.Redirect(w, r, "/_/setup", http.StatusSeeOther)
		return
	}
	ws := z.session(w, r, false)
	if ws == nil {
		s.renderWizard(w, r, http.StatusOK, nil, "")
		return
	}
	if r.Method != http.MethodPost {
		s.restoreFinished(ws)
		s.renderWizard(w, r, http.StatusOK, ws, "")
		return
	}
	z.mu.Lock()
	csrf := ws.csrf
	z.mu.Unlock()
	if !csrfOK(r, csrf) {
		s.renderWizard(w, r, http.StatusForbidden, ws, "The form was too old or came from another site; try again.")
		return
	}
	code, msg := s.wizardAction(w, r, ws)
	if msg != "" || code != 0 {
		if code == 0 {
			code = http.StatusUnprocessableEntity
		}
		s.renderWizard(w, r, code, ws, msg)
		return
	}
	if s.state.setupDone() {
		http.Redirect(w, r, "/_/", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/_/setup", http.StatusSeeOther)
}

// wizardAction performs one POSTed step; a message is a problem to show.
func (s *Server) wizardAction(w http.ResponseWriter, r *http.Request, ws *wizSession) (int, string) {
	z := s.wiz
	node := s.opts.Node
	z.mu.Lock()
	step := ws.step
	z.mu.Unlock()
	set := func(f func()) { z.mu.Lock(); f(); z.mu.Unlock() }
	action := r.PostFormValue("action")
	switch {
	case action == "start-over":
		set(func() { ws.step, ws.words = stepIdentity, "" })
	case step == stepIdentity && action == "create":
		words := node.PendingWords()
		if words == "" {
			var err error
			if words, err = newWords(s); err != nil {
				return http.StatusInternalServerError, err.Error()
			}
		}
		set(func() { ws.words, ws.step = words, stepWords })
	case step == stepIdentity && action == "restore":
		set(func() { ws.step = stepRestore })
	case step == stepIdentity && action == "keep":
		if node.DID() == "" || node.PendingWords() != "" {
			return 0, "There is no confirmed identity to keep; create or restore one."
		}
		set(func() { ws.step = stepPassword })
	case step == stepWords && action == "written":
		set(func() { ws.ask, ws.step = pickPositions(s), stepConfirm })
	case step == stepConfirm && action == "confirm":
		z.mu.Lock()
		words, ask := strings.Fields(ws.words), ws.ask
		z.mu.Unlock()
		for i, pos := range ask {
			got := strings.ToLower(strings.TrimSpace(r.PostFormValue("word" + strconv.Itoa(i))))
			if got != words[pos] {
				return 0, fmt.Sprintf("Word %d is not right. Check your written copy and try again, or start over with a new identity.", pos+1)
			}
		}
		did, err := node.SetIdentity(strings.Join(words, " "), "")
		if err != nil {
			return http.StatusInternalServerError, "Could not save the identity: " + err.Error()
		}
		s.log.Info("wizard: identity confirmed", "did", did)
		set(func() { ws.words, ws.step = "", stepPassword })
	case step == stepRestore && action == "restore-words":
		did, err := node.SetIdentity(r.PostFormValue("words"), r.PostFormValue("passphrase"))
		if err != nil {
			return 0, "Could not restore: " + err.Error()
		}
		s.log.Info("wizard: identity restored", "did", did)
		next := stepPassword
		if s.opts.Backups != nil {
			next = stepData
		}
		set(func() { ws.step, ws.found, ws.dataErr = next, nil, "" })
	case step == stepData && action == "find-backup":
		ctx, cancel := context.WithTimeout(r.Context(), 90*time.Second)
		defer cancel()
		loc, err := s.opts.Backups.Find(ctx)
		if err != nil {
			set(func() { ws.dataErr = "No backup found for this identity: " + err.Error() })
			return 0, ""
		}
		set(func() { ws.found, ws.dataErr = &loc, "" })
	case step == stepData && (action == "restore-data" || action == "restore-data-at"):
		z.mu.Lock()
		loc := ws.found
		z.mu.Unlock()
		if action == "restore-data-at" {
			l := s.locationOf(r)
			if err := l.Check(); err != nil {
				return 0, err.Error()
			}
			loc = &l
		}
		if loc == nil {
			return 0, "Look for your backup first, or type where it is."
		}
		if err := s.startRestore(loc, "latest", nil, true); err != nil {
			return 0, err.Error()
		}
		set(func() { ws.step, ws.dataErr = stepRestoring, "" })
	case step == stepData && action == "skip-data":
		set(func() { ws.step, ws.dataErr = stepPassword, "" })
	case step == stepPassword && action == "password":
		pw := r.PostFormValue("password")
		if pw != r.PostFormValue("password2") {
			return 0, "The two passwords differ."
		}
		if len(pw) < password.MinLength {
			return 0, fmt.Sprintf("Use at least %d characters.", password.MinLength)
		}
		hash, err := password.Hash(pw)
		if err != nil {
			return 0, err.Error()
		}
		set(func() { ws.pwHash, ws.step = hash, stepName })
	case step == stepName && (action == "claim" || action == "skip"):
		if action == "claim" {
			c, err := s.claimName(r.Context(), r)
			if err != nil {
				return 0, err.Error()
			}
			set(func() { ws.name, ws.nameAPI, ws.nameOp = c.name, c.api, c.operator })
		}
		z.mu.Lock()
		hash, claimed := ws.pwHash, claimed{ws.name, ws.nameAPI, ws.nameOp}
		z.mu.Unlock()
		if err := s.state.updateOwner(func(o *owner) {
			now := s.opts.Now()
			o.SetupDone, o.SetupAt, o.PasswordHash, o.PasswordAt = true, now, hash, now
			claimed.into(o)
		}); err != nil {
			return http.StatusInternalServerError, "Could not save the setup: " + err.Error()
		}
		z.finish(w)
		if err := s.login(w, r); err != nil {
			return http.StatusInternalServerError, err.Error()
		}
		s.log.Info("personal cloud set up", "did", node.DID(), "name", claimed.name)
	default:
		return http.StatusConflict, "That step is not the current one (another tab went on?); here is where the wizard is now."
	}
	return 0, ""
}

// finish ends every wizard session: setup is done.
func (z *wizard) finish(w http.ResponseWriter) {
	z.mu.Lock()
	clear(z.sessions)
	z.setup = ""
	z.mu.Unlock()
	clearCookie(w, setupCookie, "/_/")
}

// restoreFinished moves ws on once the data restore it started has
// ended: to the password step (or the login, when the backup held the
// owner), or back to the data step with the error.
func (s *Server) restoreFinished(ws *wizSession) bool {
	z := s.wiz
	z.mu.Lock()
	defer z.mu.Unlock()
	if ws.step != stepRestoring {
		return false
	}
	running, _, err, _, _ := s.restore.get()
	if running {
		return false
	}
	if err != "" {
		ws.step, ws.dataErr = stepData, "Restoring your data failed: "+err
		return false
	}
	ws.step = stepPassword
	return true
}

// claimed is a name the node holds: where it was claimed and by whose
// grant.
type claimed struct {
	name, api, operator string
}

// into records c as the owner's name.
func (c claimed) into(o *owner) {
	o.Name, o.NameAPI, o.NameOperator, o.NameLost = c.name, c.api, c.operator, ""
}

// claimName claims (or, for its holder, renews) the name of the form's
// label and name service with the node key.
func (s *Server) claimName(ctx context.Context, r *http.Request) (claimed, error) {
	key := s.opts.Node.Key()
	if key == nil {
		return claimed{}, errors.New("the node has no identity yet")
	}
	domain := strings.ToLower(strings.TrimSpace(r.PostFormValue("domain")))
	api := strings.TrimSpace(r.PostFormValue("api"))
	if i, err := strconv.Atoi(r.PostFormValue("service")); err == nil && i >= 0 && i < len(s.opts.NameServices) {
		domain, api = s.opts.NameServices[i].Domain, s.opts.NameServices[i].API
	}
	if api != "" {
		if u, err := url.Parse(api); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return claimed{}, fmt.Errorf("the names API address %q is not an http(s) URL", api)
		}
	}
	label := strings.ToLower(strings.TrimSpace(r.PostFormValue("label")))
	name := label + "." + domain
	if _, _, err := records.SplitName(name); err != nil {
		return claimed{}, fmt.Errorf("%q cannot be a name: %v", name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c := &namesapi.Client{API: api, HTTP: s.opts.HTTPClient, Now: s.opts.Now}
	ni, err := c.Claim(cctx, key, name, strings.TrimSpace(r.PostFormValue("invite")))
	if err != nil {
		var ae *namesapi.APIError
		if errors.As(err, &ae) {
			return claimed{}, fmt.Errorf("%s could not be claimed: %s", name, ae.Message)
		}
		return claimed{}, fmt.Errorf("%s could not be claimed: %v", name, err)
	}
	s.log.Info("name claimed", "name", name, "api", api)
	return claimed{name, api, ni.Operator}, nil
}

func newWords(s *Server) (string, error) {
	return identity.NewMnemonic(s.opts.Rand)
}

// pickPositions chooses three different word positions to ask back.
func pickPositions(s *Server) [3]int {
	var out [3]int
	buf := make([]byte, 8)
	for i := 0; i < 3; {
		if _, err := s.opts.Rand.Read(buf); err != nil {
			panic("cloud: random source failed: " + err.Error())
		}
		p := int(binary.LittleEndian.Uint64(buf) % 24)
		dup := false
		for _, q := range out[:i] {
			dup = dup || q == p
		}
		if !dup {
			out[i] = p
			i++
		}
	}
	// In reading order, as on paper.
	for i := 0; i < 3; i++ {
		for j := i + 1; j < 3; j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func (s *Server) renderWizard(w http.ResponseWriter, r *http.Request, code int, ws *wizSession, msg string) {
	p := wizardPage{Error: msg, NeedCode: ws == nil, Services: s.opts.NameServices, MinLength: password.MinLength}
	node := s.opts.Node
	p.DID = node.DID()
	p.Pending = node.PendingWords() != ""
	if ws != nil {
		s.wiz.mu.Lock()
		p.Step, p.CSRF = ws.step, ws.csrf
		if ws.step == stepWords {
			p.Words = strings.Fields(ws.words)
		}
		for i, a := range ws.ask {
			p.Ask[i] = a + 1
		}
		p.Name = ws.name
		if ws.found != nil {
			p.Found = ws.found.String()
		}
		p.DataErr = ws.dataErr
		s.wiz.mu.Unlock()
		if p.Step == stepRestoring && s.opts.Backups != nil {
			p.Progress = s.opts.Backups.Status().Progress
		}
	}
	w.Header().Set("Cache-Control", "no-store") // the words must not stay in a cache
	s.render(w, r, code, "setup", "Set up your PC2 cloud", p)
}
