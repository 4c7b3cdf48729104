package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pc2/pc2/internal/atomicfile"
	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
	"github.com/pc2/pc2/services/metrics"
)

// The names API, served on the apex of each domain:
//
//	GET    /api/health                  this gateway, its domains and what it grants
//	GET    /api/supernodes              the domain's supernodes (a node's entry point)
//	GET    /api/names/{name}            the name's grant (404 when nobody holds it)
//	GET    /api/names/{name}/available  whether a claim could succeed, and why not
//	POST   /api/names                   claim or renew: {"claim": SignedClaim, "invite": "..."}
//	DELETE /api/names/{name}            release: {"claim": SignedClaim with action release}
//
// {name} is a label ("alice") or a full name under the apex
// ("alice.ela.city"). A claim is a records.Claim signed by the DID's key;
// the grant this supernode signs with the domain's operator key binds the
// claim in a name record, published in the DHT, so every supernode of the
// domain serves it. Errors are JSON: {"error": "...", "code": "..."}.

// NameStore is where names live (dht.Node).
type NameStore interface {
	// CurrentName is the newest valid record of fqdn, or an error
	// wrapping dht.ErrNotFound.
	CurrentName(ctx context.Context, fqdn string) (*records.Name, error)
	// Publish stores a signed record and keeps it published;
	// Unpublish stops republishing it.
	Publish(ctx context.Context, key string, value []byte) (dht.PutResult, error)
	Unpublish(key string)
	// CurrentTally is the newest valid tally of domain's subject
	// (records.Tally), or an error wrapping dht.ErrNotFound.
	CurrentTally(ctx context.Context, domain, subject string) (*records.Tally, error)
}

// Name policies: who may claim a name that nobody holds.
const (
	PolicyOpen      = "open"      // anyone
	PolicyInvite    = "invite"    // whoever brings an unused invite code
	PolicyAllowlist = "allowlist" // the listed DIDs
)

// Policy is the operator's rule for new claims. Renewing or releasing a
// name one holds is always allowed.
type Policy struct {
	Mode    string   `json:"mode,omitempty"`    // open (default), invite or allowlist
	Invites []string `json:"invites,omitempty"` // codes, each good for one new name
	Allow   []string `json:"allow,omitempty"`   // did:boson:... for the allowlist
}

// DefaultReserved are labels nobody can claim.
var DefaultReserved = []string{
	"www", "api", "admin", "administrator", "root", "mail", "email", "smtp", "imap", "pop", "pop3",
	"ftp", "ns1", "ns2", "ns3", "dns", "mx", "www1", "support", "help", "status", "gateway",
	"relay", "turn", "stun", "dht", "supernode", "node", "proxy", "login", "auth", "account",
	"accounts", "billing", "security", "abuse", "postmaster", "hostmaster", "webmaster", "noc",
	"blog", "cdn", "static", "assets", "docs", "autodiscover", "autoconfig", "localhost", "pc2",
	"wpad", "isatap", "operator",
}

// Defaults of NamesConfig.
const (
	// DefaultGrantTTL is how long a name stays reserved to its holder
	// after the last renewal (records.Grant.Expires): a node that is off
	// for weeks keeps its name.
	DefaultGrantTTL = 90 * 24 * time.Hour
	// DefaultRouteTTL is how long a grant routes visitors
	// (records.Grant.RouteUntil): short, so an old grant that DHT nodes
	// replay after a release or a revocation is honoured for that long
	// at most. Nodes renew at half of it.
	DefaultRouteTTL    = 24 * time.Hour
	DefaultClaimWindow = 10 * time.Minute
	// DefaultMaxNamesPerDID is how many names one DID may hold through
	// this supernode's grants.
	DefaultMaxNamesPerDID = 3
	// DefaultNewNamesPerClient new names per client address (IPv4, or
	// IPv6 /64) at once, then one an hour more; DefaultNewNames for all
	// clients together, then that many a day: fresh keys are free, so the
	// per-DID cap alone does not bound a squatter.
	DefaultNewNamesPerClient = 5
	DefaultNewNames          = 200
	// MaxAPIBody bounds a names API request body.
	MaxAPIBody = 16 << 10
)

// NamesConfig configures the names API.
type NamesConfig struct {
	// Store reads and publishes name records. Required.
	Store NameStore
	// Operators are the operator keys of the domains this supernode grants
	// names for with the operator's own key.
	Operators map[string]ed25519.PrivateKey
	// Delegations are the domains this supernode grants names for under
	// the operator's delegation, signing with Key. A served domain with
	// neither answers lookups; its claims get a 503 naming the reason.
	Delegations map[string]records.SignedDelegation
	// Key is this supernode's own key (required with Delegations).
	Key ed25519.PrivateKey
	// Policy applies to new claims on every domain.
	Policy Policy
	// Reserved labels are refused on top of DefaultReserved.
	Reserved []string
	// GrantTTL is how long a grant keeps the name reserved to its
	// holder; RouteTTL how long it routes visitors. Holders renew by
	// claiming again, at half of RouteTTL.
	GrantTTL, RouteTTL time.Duration
	// ClaimWindow is how old (by its issued-at) a claim may be when it
	// arrives; older ones are refused as replays.
	ClaimWindow time.Duration
	// MaxNamesPerDID bounds the names one DID holds through this
	// supernode (<= 0: DefaultMaxNamesPerDID).
	MaxNamesPerDID int
	// NewNamesPerClient and NewNames bound new names per client address
	// and overall (<= 0: the defaults); renewals do not count.
	NewNamesPerClient, NewNames int
	// StateFile keeps used invite codes and the names granted here (for
	// the per-DID cap and look-alike checks) across restarts (required
	// with PolicyInvite).
	StateFile string
	// Custom, when its policy is CustomInvite, lets owners register
	// their own domains here (POST /api/hosts; the same settings the
	// gateway serves them by).
	Custom *Custom
	// Metrics, if set, receives the API's calls by call and result
	// (pc2_names_api_calls_total).
	Metrics prometheus.Registerer
	// Changed is told a name's record changed (the gateway's cache).
	Changed func(fqdn string)
	// Supernodes, if set, lists a domain's supernodes for
	// GET /api/supernodes (a node's entry point).
	Supernodes func(ctx context.Context, domain string) []namesapi.SupernodeEntry
	// Self is this supernode's DID, shown by /api/health.
	Self   identity.ID
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Names serves the names API.
type Names struct {
	cfg      NamesConfig
	log      *slog.Logger
	grants   map[string]granter // by domain: how this supernode signs its grants
	reserved map[string]bool
	allow    map[identity.ID]bool
	invites  map[string]bool // hashed codes the operator issued
	// hostInvites are the hashed codes of Custom.Invites.
	hostInvites map[string]bool

	reservedKeys map[string]string // look-alike key -> reserved label

	mu      sync.Mutex             // serialises decisions: one claim at a time
	used    map[string]string      // hashed invite code -> name it was used for
	seen    map[[32]byte]time.Time // recent claims, against replays within the window
	held    map[string]heldName    // names granted here and active, by full name
	perAddr *ipLimiter             // new names per client
	global  *rate.Limiter          // new names overall

	calls *prometheus.CounterVec // API calls by call and result
}

// heldName is a name this supernode granted and nobody released.
type heldName struct {
	DID     identity.ID `json:"did"`
	Key     string      `json:"key"` // look-alike key (skeletonOf)
	Expires int64       `json:"expires"`
}

// NewNames checks cfg and returns the API handler.
func NewNames(cfg NamesConfig) (*Names, error) {
	if cfg.Store == nil {
		return nil, errors.New("names: a store is required")
	}
	if cfg.GrantTTL <= 0 {
		cfg.GrantTTL = DefaultGrantTTL
	}
	if cfg.GrantTTL > records.MaxNameLifetime {
		return nil, fmt.Errorf("names: grant lifetime %v is above the %v records allow", cfg.GrantTTL, records.MaxNameLifetime)
	}
	if cfg.RouteTTL <= 0 {
		cfg.RouteTTL = DefaultRouteTTL
	}
	if cfg.RouteTTL > cfg.GrantTTL {
		cfg.RouteTTL = cfg.GrantTTL
	}
	if cfg.ClaimWindow <= 0 {
		cfg.ClaimWindow = DefaultClaimWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxNamesPerDID <= 0 {
		cfg.MaxNamesPerDID = DefaultMaxNamesPerDID
	}
	if cfg.NewNamesPerClient <= 0 {
		cfg.NewNamesPerClient = DefaultNewNamesPerClient
	}
	if cfg.NewNames <= 0 {
		cfg.NewNames = DefaultNewNames
	}
	grants := map[string]granter{}
	for d, k := range cfg.Operators {
		if err := records.ValidDomain(d); err != nil {
			return nil, fmt.Errorf("names: %w", err)
		}
		if len(k) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("names: operator key of %s is not an Ed25519 private key", d)
		}
		id, err := identity.IDFromPublicKey(k.Public().(ed25519.PublicKey))
		if err != nil {
			return nil, fmt.Errorf("names: operator key of %s: %w", d, err)
		}
		grants[d] = granter{key: k, operator: id}
	}
	for d, sd := range cfg.Delegations {
		if _, dup := grants[d]; dup {
			continue // the operator's own key signs
		}
		del, err := records.ParseDelegation(sd)
		if err != nil {
			return nil, fmt.Errorf("names: delegation for %s: %w", d, err)
		}
		if del.Domain != d {
			return nil, fmt.Errorf("names: the delegation given for %s is for %s", d, del.Domain)
		}
		if len(cfg.Key) != ed25519.PrivateKeySize {
			return nil, errors.New("names: delegations need the supernode's key")
		}
		if self, err := identity.IDFromPublicKey(cfg.Key.Public().(ed25519.PublicKey)); err != nil || self != del.Supernode {
			return nil, fmt.Errorf("names: the delegation for %s is to %s, not this supernode", d, del.Supernode.DID())
		}
		grants[d] = granter{key: cfg.Key, operator: del.Operator, delegation: &sd, self: del.Supernode, until: time.Unix(del.Expires, 0)}
	}
	n := &Names{grants: grants, cfg: cfg, log: cfg.Logger, reserved: map[string]bool{}, allow: map[identity.ID]bool{},
		invites: map[string]bool{}, used: map[string]string{}, seen: map[[32]byte]time.Time{},
		reservedKeys: map[string]string{}, held: map[string]heldName{},
		perAddr: newIPLimiter(rate.Every(time.Hour), cfg.NewNamesPerClient, cfg.Now),
		global:  rate.NewLimiter(rate.Every(24*time.Hour/time.Duration(cfg.NewNames)), cfg.NewNames)}
	for _, l := range append(slices.Clone(DefaultReserved), cfg.Reserved...) {
		l = strings.ToLower(l)
		n.reserved[l] = true
		if k, err := skeletonOf(l); err == nil {
			n.reservedKeys[k] = l
		}
	}
	switch cfg.Policy.Mode {
	case "", PolicyOpen:
	case PolicyInvite:
		if len(cfg.Policy.Invites) == 0 {
			return nil, errors.New("names: the invite policy needs invite codes")
		}
		if cfg.StateFile == "" {
			return nil, errors.New("names: the invite policy needs a state file for used codes")
		}
		for _, c := range cfg.Policy.Invites {
			if len(c) < 8 {
				return nil, fmt.Errorf("names: invite code %q is shorter than 8 characters", c)
			}
			n.invites[hashCode(c)] = true
		}
	case PolicyAllowlist:
		for _, d := range cfg.Policy.Allow {
			id, err := identity.ParseDID(d)
			if err != nil {
				return nil, fmt.Errorf("names: allowlist: %w", err)
			}
			n.allow[id] = true
		}
	default:
		return nil, fmt.Errorf("names: policy %q: want open, invite or allowlist", cfg.Policy.Mode)
	}
	if err := n.initHosts(); err != nil {
		return nil, err
	}
	n.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "names", Name: "api_calls_total",
		Help: "Names API calls, by call (claim, release, lookup, ...) and result (ok, or the refusal's code: taken, invite_used, ...)."},
		[]string{"call", "result"})
	if err := metrics.Register(cfg.Metrics, n.calls); err != nil {
		return nil, err
	}
	if cfg.StateFile != "" {
		if err := n.load(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func hashCode(code string) string {
	h := sha256.Sum256([]byte("pc2-invite\x00" + code))
	return hex.EncodeToString(h[:])
}

// state is the StateFile's content.
type namesState struct {
	UsedInvites map[string]string   `json:"used_invites"` // hashed code -> name
	Held        map[string]heldName `json:"held,omitempty"`
}

func (n *Names) load() error {
	b, err := os.ReadFile(n.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("names: state: %w", err)
	}
	var st namesState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("names: state %s: %w", n.cfg.StateFile, err)
	}
	if st.UsedInvites != nil {
		n.used = st.UsedInvites
	}
	if st.Held != nil {
		n.held = st.Held
	}
	return nil
}

// save writes the state file (n.mu held); without one, state is kept in
// memory only.
func (n *Names) save() error {
	if n.cfg.StateFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(namesState{UsedInvites: n.used, Held: n.held}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(n.cfg.StateFile, append(b, '\n'), 0o600)
}

// apiError is an API refusal.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func refuse(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP routes an API request for the apex domain in r.Host.
func (n *Names) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	domain, ok := netaddr.CanonicalHost(r.Host)
	if !ok {
		writeJSON(w, http.StatusBadRequest, errorBody(refuse(http.StatusBadRequest, "bad_host", "malformed Host")))
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	var v any
	var err error
	status := http.StatusOK
	call := "other"
	defer func() {
		result := "ok"
		var ae *apiError
		if errors.As(err, &ae) {
			result = ae.code
		} else if err != nil {
			result = "unavailable"
		}
		n.calls.WithLabelValues(call, result).Inc()
	}()
	switch {
	case path == "/api/health" && r.Method == http.MethodGet:
		call, v = "health", n.health(domain)
	case path == "/api/supernodes" && r.Method == http.MethodGet && n.cfg.Supernodes != nil:
		call = "supernodes"
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		v = namesapi.SupernodeList{Domain: domain, Supernodes: n.cfg.Supernodes(ctx, domain)}
	case path == "/api/hosts" && r.Method == http.MethodPost && n.hostInvites != nil:
		call = "register_host"
		v, status, err = n.registerHost(r, domain)
	case path == "/api/names" && r.Method == http.MethodPost:
		call = "claim"
		v, status, err = n.claim(r, domain)
	case strings.HasPrefix(path, "/api/names/"):
		rest := strings.TrimPrefix(path, "/api/names/")
		name, sub, _ := strings.Cut(rest, "/")
		switch {
		case sub == "" && r.Method == http.MethodGet:
			call = "lookup"
			v, err = n.lookup(r.Context(), name, domain)
		case sub == "available" && r.Method == http.MethodGet:
			call = "available"
			v, err = n.available(r.Context(), name, domain)
		case sub == "" && r.Method == http.MethodDelete:
			call = "release"
			v, err = n.release(r, name, domain)
		default:
			err = refuse(http.StatusNotFound, "not_found", "no such API call: %s %s", r.Method, r.URL.Path)
		}
	case path == "" || path == "/":
		page(w, http.StatusOK, domain, "This is a PC2 gateway. Names under "+domain+" reach their owners' personal clouds; the names API is at /api/.")
		return
	default:
		err = refuse(http.StatusNotFound, "not_found", "no such API call: %s %s", r.Method, r.URL.Path)
	}
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			n.log.Warn("names API failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ae = refuse(http.StatusServiceUnavailable, "unavailable", "%v", err)
		}
		writeJSON(w, ae.status, errorBody(ae))
		return
	}
	writeJSON(w, status, v)
}

func errorBody(e *apiError) map[string]string {
	return map[string]string{"error": e.msg, "code": e.code}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (n *Names) health(domain string) namesapi.Health {
	h := namesapi.Health{Status: "ok", Domain: domain, Time: n.cfg.Now().UTC()}
	if n.cfg.Self != (identity.ID{}) {
		h.Gateway = n.cfg.Self.DID()
	}
	if _, ok := n.grants[domain]; ok {
		h.Grants = true
		h.Policy = n.cfg.Policy.Mode
		if h.Policy == "" {
			h.Policy = PolicyOpen
		}
	}
	return h
}

func info(g *records.Grant) *namesapi.NameInfo {
	ni := &namesapi.NameInfo{Name: g.Name, DID: g.DID.DID(), Status: g.Status, Seq: g.Seq,
		IssuedAt: time.Unix(g.IssuedAt, 0).UTC(), Expires: time.Unix(g.Expires, 0).UTC(), Operator: g.Operator.DID()}
	if g.Status == records.StatusActive {
		ni.URL = "https://" + g.Name
	}
	if g.Signer != (identity.ID{}) {
		ni.Signer = g.Signer.DID()
	}
	if g.Since != 0 {
		ni.Since = time.Unix(g.Since, 0).UTC()
	}
	if g.RouteUntil != 0 {
		ni.RouteUntil = time.Unix(g.RouteUntil, 0).UTC()
	}
	ni.Reason = g.Reason
	return ni
}

// fqdn turns the {name} of a path (label or full name) into a full name
// under domain.
func fqdn(name, domain string) (string, error) {
	name = strings.ToLower(name)
	full := name
	if !strings.Contains(name, ".") {
		full = name + "." + domain
	}
	_, d, err := records.SplitName(full)
	if err != nil {
		return "", refuse(http.StatusBadRequest, "invalid_name", "%v", err)
	}
	if d != domain {
		return "", refuse(http.StatusNotFound, "other_domain", "%s is not under %s", full, domain)
	}
	return full, nil
}

// current is the name's newest record, nil when nobody holds or held it.
func (n *Names) current(ctx context.Context, full string) (*records.Name, error) {
	cur, err := n.cfg.Store.CurrentName(ctx, full)
	switch {
	case errors.Is(err, dht.ErrNotFound), errors.Is(err, records.ErrExpired):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("look up %s: %w", full, err)
	}
	return cur, nil
}

func (n *Names) lookup(ctx context.Context, name, domain string) (*namesapi.NameInfo, error) {
	full, err := fqdn(name, domain)
	if err != nil {
		return nil, err
	}
	cur, err := n.current(ctx, full)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, refuse(http.StatusNotFound, "not_registered", "%s is not registered", full)
	}
	return info(&cur.Grant), nil
}

func (n *Names) available(ctx context.Context, name, domain string) (*namesapi.Availability, error) {
	full, err := fqdn(name, domain)
	if err != nil {
		return nil, err
	}
	a := &namesapi.Availability{Name: full}
	if _, err := n.checkLabel(full); err != nil {
		a.Reason = err.Error()
		return a, nil
	}
	cur, err := n.current(ctx, full)
	if err != nil {
		return nil, err
	}
	switch {
	case cur == nil, cur.Grant.Status == records.StatusReleased:
		a.Available = true
	case cur.Grant.Status == records.StatusRevoked:
		a.Reason = full + " was revoked by the operator"
		if cur.Grant.Reason != "" {
			a.Reason += ": " + cur.Grant.Reason
		}
	default:
		a.Reason = full + " is held by " + cur.Grant.DID.DID()
	}
	return a, nil
}

// checkLabel refuses reserved names, their look-alikes and labels no one
// should hold (skeletonOf); it returns the label's look-alike key.
func (n *Names) checkLabel(full string) (string, error) {
	label, _, _ := strings.Cut(full, ".")
	if n.reserved[label] {
		return "", refuse(http.StatusForbidden, "reserved", "%s is reserved", full)
	}
	key, err := skeletonOf(label)
	switch {
	case errors.Is(err, errLookalike):
		return "", refuse(http.StatusForbidden, "lookalike", "%v", err)
	case err != nil:
		return "", refuse(http.StatusBadRequest, "invalid_name", "%v", err)
	}
	if r, ok := n.reservedKeys[key]; ok {
		return "", refuse(http.StatusForbidden, "lookalike", "%s looks like the reserved %q", full, r)
	}
	return key, nil
}

// lookalikeHeld refuses a new name of did whose look-alike key is that
// of a name someone else holds: one granted here, or the name the key
// itself spells (n.mu held).
func (n *Names) lookalikeHeld(ctx context.Context, full, key string, did identity.ID) error {
	_, domain, _ := records.SplitName(full)
	now := n.cfg.Now().Unix()
	for other, h := range n.held {
		if other != full && h.Key == key && h.DID != did && h.Expires > now && strings.HasSuffix(other, "."+domain) {
			return refuse(http.StatusForbidden, "lookalike", "%s looks like %s, which another DID holds", full, other)
		}
	}
	if records.ValidLabel(key) != nil || key+"."+domain == full {
		return nil
	}
	cur, err := n.current(ctx, key+"."+domain)
	if err != nil {
		return err
	}
	if cur != nil && cur.Grant.Status == records.StatusActive && cur.Grant.DID != did {
		return refuse(http.StatusForbidden, "lookalike", "%s looks like %s.%s, which another DID holds", full, key, domain)
	}
	return nil
}

// capNew applies the per-DID cap and the new-name rates to a new name of
// did asked from client (n.mu held).
func (n *Names) capNew(did identity.ID, client string) error {
	now := n.cfg.Now()
	count := 0
	for name, h := range n.held {
		switch {
		case h.Expires <= now.Unix():
			delete(n.held, name) // saved with the next grant
		case h.DID == did:
			count++
		}
	}
	if count >= n.cfg.MaxNamesPerDID {
		return refuse(http.StatusForbidden, "too_many_names", "%s holds %d names here, the most one DID may", did.DID(), count)
	}
	if !n.perAddr.allow(client) {
		return refuse(http.StatusTooManyRequests, "rate_limited", "too many new names from this address; try again in an hour")
	}
	if !n.global.AllowN(now, 1) {
		return refuse(http.StatusTooManyRequests, "rate_limited", "this gateway grants no more new names today; try again later")
	}
	return nil
}

// readClaim decodes and verifies a request's signed claim.
func (n *Names) readClaim(r *http.Request, domain string, want records.Action) (*namesapi.ClaimRequest, *records.Claim, error) {
	body := http.MaxBytesReader(nil, r.Body, MaxAPIBody)
	var req namesapi.ClaimRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, refuse(http.StatusRequestEntityTooLarge, "too_large", "request body over %d bytes", MaxAPIBody)
		}
		return nil, nil, refuse(http.StatusBadRequest, "bad_request", "request body: %v", err)
	}
	c, err := records.ParseClaim(req.Claim)
	switch {
	case errors.Is(err, records.ErrBadSignature):
		return nil, nil, refuse(http.StatusUnauthorized, "bad_signature", "%v", err)
	case errors.Is(err, records.ErrInvalidName):
		return nil, nil, refuse(http.StatusBadRequest, "invalid_name", "%v", err)
	case err != nil:
		return nil, nil, refuse(http.StatusBadRequest, "bad_claim", "%v", err)
	}
	if c.Action != want {
		return nil, nil, refuse(http.StatusBadRequest, "bad_claim", "the claim asks to %s, this call is for %s", actionText(c.Action), actionText(want))
	}
	if _, d, _ := records.SplitName(c.Name); d != domain {
		return nil, nil, refuse(http.StatusBadRequest, "other_domain", "the claim is for %s, not under %s", c.Name, domain)
	}
	now := n.cfg.Now()
	issued := time.Unix(c.IssuedAt, 0)
	switch {
	case issued.After(now.Add(records.DefaultClockSkew)):
		return nil, nil, refuse(http.StatusBadRequest, "clock", "the claim is issued in the future (%s); check the clock", issued.UTC().Format(time.RFC3339))
	case now.Sub(issued) > n.cfg.ClaimWindow:
		return nil, nil, refuse(http.StatusConflict, "replayed", "the claim was issued at %s, more than %v ago: sign a new one", issued.UTC().Format(time.RFC3339), n.cfg.ClaimWindow)
	}
	return &req, c, nil
}

func actionText(a records.Action) string {
	b, _ := a.MarshalText()
	return string(b)
}

// fresh refuses a claim this API has seen before, or one older than the
// claim behind the name's current record (n.mu held).
func (n *Names) fresh(sc records.SignedClaim, c *records.Claim, cur *records.Name) error {
	h := sha256.Sum256(sc.Body)
	now := n.cfg.Now()
	for k, t := range n.seen {
		if now.Sub(t) > n.cfg.ClaimWindow+records.DefaultClockSkew {
			delete(n.seen, k)
		}
	}
	if _, dup := n.seen[h]; dup {
		return refuse(http.StatusConflict, "replayed", "this signed claim was already used: sign a new one")
	}
	if cur != nil && cur.Claim != nil && cur.Grant.DID == c.DID {
		if bytes.Equal(h[:], cur.Grant.ClaimHash) || c.IssuedAt < cur.Claim.IssuedAt {
			return refuse(http.StatusConflict, "replayed", "the claim is older than the one behind %s's current record", c.Name)
		}
	}
	return nil
}

// granter is how this supernode signs a domain's grants: with the
// operator's key, or with its own under the operator's delegation.
type granter struct {
	key        ed25519.PrivateKey
	operator   identity.ID
	delegation *records.SignedDelegation // nil: key is the operator's
	self       identity.ID               // the delegation's supernode
	until      time.Time                 // the delegation's end
}

func (gr granter) signTally(t *records.Tally) ([]byte, error) {
	t.Operator = gr.operator
	return records.SignTally(gr.key, gr.delegation, t)
}

func (gr granter) sign(g *records.Grant, sc *records.SignedClaim) ([]byte, error) {
	g.Operator = gr.operator
	if gr.delegation == nil {
		return records.SignGrant(gr.key, g, sc)
	}
	g.Signer = gr.self
	return records.SignDelegatedGrant(gr.key, *gr.delegation, g, sc)
}

// granterOf returns how this supernode grants domain's names.
func (n *Names) granterOf(domain string) (granter, error) {
	gr, ok := n.grants[domain]
	switch {
	case !ok:
		return granter{}, refuse(http.StatusServiceUnavailable, "not_granted_here",
			"this gateway serves %s but does not grant its names: claim through a supernode of the domain's operator", domain)
	case gr.delegation != nil && !n.cfg.Now().Before(gr.until):
		n.log.Error("the operator's delegation to grant names has expired", "domain", domain, "expired", gr.until)
		return granter{}, refuse(http.StatusServiceUnavailable, "not_granted_here",
			"this gateway's delegation to grant names under %s has expired: claim through another supernode of the domain", domain)
	}
	return gr, nil
}

// claim is POST /api/names.
func (n *Names) claim(r *http.Request, domain string) (*namesapi.NameInfo, int, error) {
	req, c, err := n.readClaim(r, domain, records.ActionHold)
	if err != nil {
		return nil, 0, err
	}
	lkey, err := n.checkLabel(c.Name)
	if err != nil {
		return nil, 0, err
	}
	gr, err := n.granterOf(domain)
	if err != nil {
		return nil, 0, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	cur, err := n.current(r.Context(), c.Name)
	if err != nil {
		return nil, 0, err
	}
	if err := n.fresh(req.Claim, c, cur); err != nil {
		return nil, 0, err
	}
	renewal := cur != nil && cur.Grant.Status == records.StatusActive
	var invite string
	switch {
	case renewal && cur.Grant.DID != c.DID:
		return nil, 0, refuse(http.StatusConflict, "taken", "%s is held by %s", c.Name, cur.Grant.DID.DID())
	case cur != nil && cur.Grant.Status == records.StatusRevoked:
		return nil, 0, refuse(http.StatusForbidden, "revoked", "%s was revoked by the operator", c.Name)
	case !renewal:
		if err := n.lookalikeHeld(r.Context(), c.Name, lkey, c.DID); err != nil {
			return nil, 0, err
		}
		if invite, err = n.admit(c, req.Invite); err != nil {
			return nil, 0, err
		}
		if err := n.inviteShared(r.Context(), domain, invite, c.Name); err != nil {
			return nil, 0, err
		}
		if err := n.capNew(c.DID, clientKey(r)); err != nil {
			return nil, 0, err
		}
		if err := n.capShared(r.Context(), domain, c); err != nil {
			return nil, 0, err
		}
	}
	g, err := n.grant(r.Context(), gr, c, req.Claim, records.StatusActive, cur, renewal)
	if err != nil {
		return nil, 0, err
	}
	if invite != "" {
		n.used[invite] = c.Name
		n.tally(r.Context(), gr, domain, records.TallyInvite+invite, func(names []records.TalliedName) []records.TalliedName {
			return append(names, records.TalliedName{Name: c.Name, Expires: g.Expires})
		})
	}
	n.tally(r.Context(), gr, domain, records.TallyDID+c.DID.String(), func(names []records.TalliedName) []records.TalliedName {
		half := n.cfg.Now().Add(n.cfg.GrantTTL / 2).Unix()
		if i := slices.IndexFunc(names, func(t records.TalliedName) bool { return t.Name == c.Name }); i >= 0 && names[i].Expires > half {
			return names // counted, for long enough: a renewal need not write
		}
		names = slices.DeleteFunc(names, func(t records.TalliedName) bool { return t.Name == c.Name })
		return append(names, records.TalliedName{Name: c.Name, Expires: g.Expires})
	})
	n.held[c.Name] = heldName{DID: c.DID, Key: lkey, Expires: g.Expires}
	if err := n.save(); err != nil {
		// The name is granted; only the state's record of it is lost.
		n.log.Error("names: state not saved", "name", c.Name, "err", err)
	}
	status := http.StatusCreated
	if renewal {
		status = http.StatusOK
	}
	n.log.Info("name granted", "name", c.Name, "did", c.DID.DID(), "renewal", renewal, "seq", g.Seq)
	return info(g), status, nil
}

// Shared limits: the domain's granting supernodes keep which names each
// invite code was used for and which names each DID holds in tally
// records (records.Tally) in the DHT, so an invite is good for one name
// in the domain and the per-DID cap holds for the domain, whichever of
// its supernodes a claim reaches. Each supernode keeps its own record
// too (names.json): the stricter of the two applies. Two claims at two
// supernodes in the same instant can both pass (the tally is read, then
// written); the window is one round trip.

// inviteShared refuses an invite code (its hash) the domain's tally
// says was used for another name (n.mu held).
func (n *Names) inviteShared(ctx context.Context, domain, invite, name string) error {
	if invite == "" {
		return nil
	}
	t, err := n.cfg.Store.CurrentTally(ctx, domain, records.TallyInvite+invite)
	switch {
	case errors.Is(err, dht.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("invite code: %w", err)
	}
	for _, used := range t.Live(n.cfg.Now().Unix()) {
		if used.Name != name {
			return refuse(http.StatusForbidden, "invite_used", "this invite code was already used")
		}
	}
	return nil
}

// capShared applies the per-DID cap to the names the domain's tally
// says c.DID holds (n.mu held).
func (n *Names) capShared(ctx context.Context, domain string, c *records.Claim) error {
	t, err := n.cfg.Store.CurrentTally(ctx, domain, records.TallyDID+c.DID.String())
	switch {
	case errors.Is(err, dht.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("names of %s: %w", c.DID.DID(), err)
	}
	count := 0
	for _, held := range t.Live(n.cfg.Now().Unix()) {
		if held.Name != c.Name {
			count++
		}
	}
	if count >= n.cfg.MaxNamesPerDID {
		return refuse(http.StatusForbidden, "too_many_names", "%s holds %d names under %s, the most one DID may", c.DID.DID(), count, domain)
	}
	return nil
}

// tally publishes domain's tally of subject with the names edit makes of
// the live ones (n.mu held). A failure is logged and returned (a claim
// it follows is decided: claims go on).
func (n *Names) tally(ctx context.Context, gr granter, domain, subject string, edit func([]records.TalliedName) []records.TalliedName) error {
	now := n.cfg.Now()
	var seq uint64
	var names []records.TalliedName
	cur, err := n.cfg.Store.CurrentTally(ctx, domain, subject)
	switch {
	case err == nil:
		seq, names = cur.Seq, cur.Live(now.Unix())
	case !errors.Is(err, dht.ErrNotFound):
		n.log.Warn("names: tally not read; not updated", "domain", domain, "subject", subject, "err", err)
		return fmt.Errorf("read the tally: %w", err)
	}
	before := slices.Clone(names)
	if names = edit(names); cur != nil && slices.Equal(before, names) {
		return nil // nothing to change
	}
	if len(names) > records.MaxTallied {
		names = names[len(names)-records.MaxTallied:]
	}
	t := &records.Tally{Version: records.Version, Domain: domain, Subject: subject, Seq: dht.NextSeq(seq, now),
		IssuedAt: now.Unix(), Expires: now.Add(n.cfg.GrantTTL).Unix(), Names: names}
	for _, tn := range names {
		t.Expires = max(t.Expires, tn.Expires)
	}
	val, err := gr.signTally(t)
	if err == nil {
		_, err = n.cfg.Store.Publish(ctx, records.TallyKey(domain, subject), val)
	}
	if err != nil {
		n.log.Warn("names: tally not published", "domain", domain, "subject", subject, "err", err)
		return fmt.Errorf("publish the tally: %w", err)
	}
	return nil
}

// admit applies the policy to a new claim and returns the hashed invite
// code it uses, if any.
func (n *Names) admit(c *records.Claim, invite string) (string, error) {
	switch n.cfg.Policy.Mode {
	case PolicyInvite:
		h := hashCode(invite)
		switch {
		case invite == "":
			return "", refuse(http.StatusForbidden, "invite_required", "names under this domain need an invite code")
		case !n.invites[h]:
			return "", refuse(http.StatusForbidden, "invite_invalid", "unknown invite code")
		case n.used[h] != "":
			return "", refuse(http.StatusForbidden, "invite_used", "this invite code was already used")
		}
		return h, nil
	case PolicyAllowlist:
		if !n.allow[c.DID] {
			return "", refuse(http.StatusForbidden, "not_allowed", "%s is not on this operator's allowlist", c.DID.DID())
		}
	}
	return "", nil
}

// grant signs and publishes a grant for claim (n.mu held): the next
// record of cur's holding when same is set (a renewal, a release), else
// the first of a new holding that follows cur.
func (n *Names) grant(ctx context.Context, gr granter, c *records.Claim, sc records.SignedClaim, st records.Status, cur *records.Name, same bool) (*records.Grant, error) {
	now := n.cfg.Now()
	g := &records.Grant{Version: records.Version, Name: c.Name, DID: c.DID, Status: st,
		IssuedAt: now.Unix(), Expires: now.Add(n.cfg.GrantTTL).Unix(), Since: now.Unix()}
	if st == records.StatusActive {
		g.RouteUntil = now.Add(n.cfg.RouteTTL).Unix()
	}
	var seq uint64
	if cur != nil {
		seq = cur.Grant.Seq
		if same {
			g.Since, g.After = cur.Grant.HoldingSince(), cur.Grant.After
		} else {
			g.After = cur.Grant.Seq
		}
	}
	g.Seq = dht.NextSeq(seq, now)
	val, err := gr.sign(g, &sc)
	if err != nil {
		return nil, err
	}
	key := records.NameKey(c.Name)
	_, perr := n.cfg.Store.Publish(ctx, key, val)
	if perr != nil || !same {
		// Another supernode of the domain may have granted the name to
		// someone else at the same moment: the first holding wins
		// everywhere (records.Beats), and the loser is told here.
		// (A tie in Beats went to the other record's bytes, as the
		// network holds it.)
		if won, err := n.cfg.Store.CurrentName(ctx, c.Name); err == nil && won.Grant.DID != c.DID &&
			records.Beats(&won.Grant, g) >= 0 {
			n.cfg.Store.Unpublish(key)
			n.log.Info("claim lost to an earlier one", "name", c.Name, "did", c.DID.DID(), "holder", won.Grant.DID.DID())
			return nil, refuse(http.StatusConflict, "taken", "%s was granted to %s by another supernode of the domain an instant earlier", c.Name, won.Grant.DID.DID())
		}
	}
	if perr != nil {
		return nil, fmt.Errorf("publish %s: %w", c.Name, perr)
	}
	n.seen[sha256.Sum256(sc.Body)] = now
	if n.cfg.Changed != nil {
		n.cfg.Changed(c.Name)
	}
	return g, nil
}

// release is DELETE /api/names/{name}.
func (n *Names) release(r *http.Request, name, domain string) (*namesapi.NameInfo, error) {
	full, err := fqdn(name, domain)
	if err != nil {
		return nil, err
	}
	req, c, err := n.readClaim(r, domain, records.ActionRelease)
	if err != nil {
		return nil, err
	}
	if c.Name != full {
		return nil, refuse(http.StatusBadRequest, "bad_claim", "the claim releases %s, not %s", c.Name, full)
	}
	gr, err := n.granterOf(domain)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	cur, err := n.current(r.Context(), full)
	if err != nil {
		return nil, err
	}
	if cur == nil || cur.Grant.Status != records.StatusActive {
		return nil, refuse(http.StatusNotFound, "not_registered", "%s is not held by anyone", full)
	}
	if cur.Grant.DID != c.DID {
		return nil, refuse(http.StatusForbidden, "not_holder", "%s is held by %s, not %s", full, cur.Grant.DID.DID(), c.DID.DID())
	}
	if err := n.fresh(req.Claim, c, cur); err != nil {
		return nil, err
	}
	g, err := n.grant(r.Context(), gr, c, req.Claim, records.StatusReleased, cur, true)
	if err != nil {
		return nil, err
	}
	n.tally(r.Context(), gr, domain, records.TallyDID+c.DID.String(), func(names []records.TalliedName) []records.TalliedName {
		return slices.DeleteFunc(names, func(t records.TalliedName) bool { return t.Name == full })
	})
	if _, ok := n.held[full]; ok {
		delete(n.held, full)
		if err := n.save(); err != nil {
			n.log.Error("names: state not saved", "name", full, "err", err)
		}
	}
	n.log.Info("name released", "name", full, "did", c.DID.DID(), "seq", g.Seq)
	return info(g), nil
}
