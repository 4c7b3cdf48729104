// Package certs gets, keeps and renews TLS certificates from an ACME CA
// through github.com/caddyserver/certmagic, which also renews them (its
// own timers: the clock is not injectable, nor need it be). The gateway
// and the personal node both use it.
//
// Three ways to choose the names and prove control of them:
//
//   - on demand (Config.Allow; the gateway without a DNS provider): the
//     first TLS handshake for a name asks Allow, and only a name it
//     allows (a registered name, a served apex) gets a certificate,
//     through HTTP-01 on port 80 (HTTPHandler) or TLS-ALPN-01 on port
//     443 (TLSConfig). One certificate per name: Let's Encrypt allows 50
//     new ones per registered domain per week, so this suits small
//     domains.
//   - DNS-01 (Config.DNS): Manage obtains a wildcard *.<domain> and
//     <domain> for each served domain by writing TXT records through the
//     operator's DNS provider: two certificates cover every name.
//   - ahead (Config.Keep; the personal node): Keep obtains certificates
//     for the names given to it, through TLS-ALPN-01 answered by
//     TLSConfig wherever the CA's connection to port 443 arrives (at a
//     node, through the gateway's splice), and keeps them renewed; State
//     tells how each name stands.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/pc2/pc2/internal/netaddr"
)

// Config configures a Manager.
type Config struct {
	// CA is the ACME directory URL; empty: Let's Encrypt production.
	CA string
	// CARoots, if not nil, are the roots trusted for the CA's own HTTPS
	// (a private or test CA); nil: the system's.
	CARoots *x509.CertPool
	// Email is the ACME account's contact; empty: none. Using a Manager
	// accepts the CA's terms of service.
	Email string
	// Dir holds the ACME account, the keys and the certificates (e.g.
	// <data dir>/certs); required. What is there is served after a
	// restart without asking the CA.
	Dir string
	// Allow says whether name (lowercase) may get a certificate on
	// demand: nil for a registered name or a served apex. A name it
	// refuses gets no certificate request. It runs in TLS handshakes of
	// names without a certificate in memory, so it should be cheap for
	// names it has seen. Required unless DNS is set.
	Allow func(ctx context.Context, name string) error
	// DNS, if set, gets certificates through DNS-01 (see Manage) and
	// turns on-demand certificates off.
	DNS *DNSConfig
	// HTTPPort and TLSALPNPort are the local ports of the listeners
	// serving HTTPHandler and TLSConfig when the CA's ports 80 and 443
	// reach them elsewhere (a port forward, a test); 0: 80 and 443.
	// certmagic opens a listener of its own for a challenge only when
	// nothing listens there.
	HTTPPort, TLSALPNPort int
	// DisableHTTP01 and DisableTLSALPN01 turn a challenge type off,
	// e.g. when port 80 is not reachable from the internet.
	DisableHTTP01, DisableTLSALPN01 bool
	// ListenHost is the address certmagic's own challenge listeners
	// bind to (see HTTPPort); empty: all. A node, whose challenges
	// arrive through the gateway's splice, binds them to loopback.
	ListenHost string
	// Keep turns certificates on demand off: Keep names the names to
	// obtain ahead and renew (a node's own names). Allow is then unused.
	Keep bool
	// RenewCheck is how often certificates are checked for renewal
	// (0: certmagic's 10 minutes; a test with short-lived ones).
	RenewCheck time.Duration
	// OrdersPerWeek bounds new certificate orders (renewals not
	// counted): a fifth of them at once, the rest spread over the week
	// (<= 0: DefaultOrdersPerWeek). Whoever can make names be allowed
	// (claims under an open policy) could otherwise use up the CA's
	// limit for the domain; a name beyond it gets no certificate until
	// the bucket refills. Domains with many new names a week want DNS-01
	// wildcards instead.
	OrdersPerWeek int
	// Logger; nil discards. certmagic's chatter goes to Debug (its
	// warnings and errors stay what they are); certificates obtained
	// or failed are logged at Info and Error.
	Logger *slog.Logger
}

// DefaultOrdersPerWeek is Let's Encrypt's limit of new certificates per
// registered domain and week.
const DefaultOrdersPerWeek = 50

// ErrOrderLimit means a certificate was not ordered: the gateway's
// orders of the week are used up (Config.OrdersPerWeek).
var ErrOrderLimit = errors.New("certs: new certificate orders limited; try again later")

// DNS providers for Config.DNS.
const (
	// DNSRFC2136 sends TSIG-signed dynamic updates (RFC 2136) to the
	// zone's primary: BIND, Knot, PowerDNS and most others take them.
	DNSRFC2136 = "rfc2136"
	// DNSHTTPReq posts records to a web endpoint of the operator's, the
	// protocol of lego's httpreq provider (see httpReqProvider).
	DNSHTTPReq = "httpreq"
)

// DNSConfig is the operator's DNS provider for DNS-01 challenges.
type DNSConfig struct {
	// Provider is DNSRFC2136 or DNSHTTPReq.
	Provider string `json:"provider"`

	// Server is the primary's address for rfc2136 ("ns1.example.org"
	// or "192.0.2.1:53"); KeyName, KeyAlg (default hmac-sha256) and Key
	// (base64) its TSIG key.
	Server  string `json:"server,omitempty"`
	KeyName string `json:"key_name,omitempty"`
	KeyAlg  string `json:"key_alg,omitempty"`
	Key     string `json:"key,omitempty"`

	// Endpoint is the httpreq base URL (it gets /present and
	// /cleanup); Username and Password, if set, go as basic auth.
	Endpoint string `json:"endpoint,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// Zones are the DNS zones the challenge records go into: a record
	// goes into the longest zone it is under. Empty, or no zone fits:
	// the zone is found by an SOA lookup.
	Zones []string `json:"zones,omitempty"`
	// Resolvers ("host:port") are watched for the record before the CA
	// is asked to look, and used for SOA lookups; empty: the zone's
	// authoritative servers (and the system's resolvers for SOA).
	Resolvers []string `json:"resolvers,omitempty"`
}

// Manager gets, keeps and renews certificates.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	ctx    context.Context // background work (Manage's retries); ends with Close
	cancel context.CancelFunc
	closed sync.Once

	orders *rate.Limiter // new certificate orders (OrdersPerWeek)

	mu     sync.Mutex
	cached chan struct{}         // closed and replaced when a certificate is cached
	names  map[string]*nameState // what became of each name's orders
}

// nameState is what a Manager knows of one name's orders (mu held).
type nameState struct {
	ordering  time.Time // an order started then (zero: none running)
	lastError string
	lastTry   time.Time
}

// New returns a Manager for cfg; Close stops its background work.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("certs: no storage directory")
	}
	if cfg.DNS == nil && cfg.Allow == nil && !cfg.Keep {
		return nil, errors.New("certs: Allow is required for on-demand certificates (or configure a DNS provider, or Keep)")
	}
	if cfg.CA == "" {
		cfg.CA = certmagic.LetsEncryptProductionCA
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OrdersPerWeek <= 0 {
		cfg.OrdersPerWeek = DefaultOrdersPerWeek
	}
	c := &Manager{cfg: cfg, log: cfg.Logger, cached: make(chan struct{}), names: map[string]*nameState{},
		orders: rate.NewLimiter(rate.Every(7*24*time.Hour/time.Duration(cfg.OrdersPerWeek)), max(1, cfg.OrdersPerWeek/5))}
	zl := zap.New(slogCore{h: cfg.Logger.Handler()})

	var solver acmez.Solver
	if cfg.DNS != nil {
		s, err := newDNSSolver(cfg.DNS, cfg.Logger, zl)
		if err != nil {
			return nil, err
		}
		solver = s
	}

	c.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return c.magic, nil },
		RenewCheckInterval: cfg.RenewCheck,
		Logger:             zl,
	})
	c.magic = certmagic.New(c.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: cfg.Dir},
		OnEvent: c.onEvent,
		// Not the per-handshake events: building them costs every handshake.
		ShouldEmitFunc: func(event string) bool {
			return event == "cert_obtained" || event == "cert_failed" || event == "cached_managed_cert"
		},
		Logger: zl,
	})
	if cfg.DNS == nil && !cfg.Keep {
		c.magic.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: c.decide}
	}
	c.issuer = certmagic.NewACMEIssuer(c.magic, certmagic.ACMEIssuer{
		CA:                      cfg.CA,
		Email:                   cfg.Email,
		Agreed:                  true,
		TrustedRoots:            cfg.CARoots,
		AltHTTPPort:             cfg.HTTPPort,
		AltTLSALPNPort:          cfg.TLSALPNPort,
		ListenHost:              cfg.ListenHost,
		DisableHTTPChallenge:    cfg.DisableHTTP01,
		DisableTLSALPNChallenge: cfg.DisableTLSALPN01,
		DNS01Solver:             solver,
		Logger:                  zl,
	})
	c.magic.Issuers = []certmagic.Issuer{c.issuer}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close stops renewals and Manage's retries.
func (c *Manager) Close() {
	c.closed.Do(func() {
		c.cancel()
		c.cache.Stop()
	})
}

// TLSConfig is the :443 listener's TLS config: certificates by SNI
// (obtained on demand when that is on), HTTP/2 and HTTP/1.1, and the
// TLS-ALPN-01 challenge.
func (c *Manager) TLSConfig() *tls.Config {
	tc := c.magic.TLSConfig()
	tc.NextProtos = []string{"h2", "http/1.1", acmez.ACMETLS1Protocol}
	tc.MinVersion = tls.VersionTLS12
	return tc
}

// HTTPHandler is the :80 handler: it answers HTTP-01 challenges and
// redirects everything else to the same host and path over HTTPS (308,
// which keeps the method and body). Requests without a host name to
// redirect to (no or a malformed Host, an IP address) go to next; nil
// answers 404.
func (c *Manager) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		if certmagic.LooksLikeHTTPChallenge(r) {
			http.NotFound(w, r) // a token we did not ask for: no redirect
			return
		}
		host, ok := netaddr.CanonicalHost(r.Host)
		if !ok || net.ParseIP(host) != nil {
			if next == nil {
				http.NotFound(w, r)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// Manage gets the DNS-01 certificates, *.<domain> and <domain> for each
// of domains, from storage or from the CA, and keeps them renewed. It
// returns once all are ready, or with ctx's error while some are still
// being obtained: retries go on in the background until Close. Without
// a DNS provider it does nothing: certificates come on demand.
func (c *Manager) Manage(ctx context.Context, domains []string) error {
	if c.cfg.DNS == nil {
		return nil
	}
	var names []string
	for _, d := range domains {
		names = append(names, "*."+d, d)
	}
	if err := c.magic.ManageAsync(c.ctx, names); err != nil {
		return fmt.Errorf("certs: manage %s: %w", strings.Join(names, " "), err)
	}
	for {
		c.mu.Lock()
		cached := c.cached
		c.mu.Unlock()
		var missing []string
		for _, n := range names {
			if len(c.cache.AllMatchingCertificates(n)) == 0 {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-cached:
		case <-ctx.Done():
			return fmt.Errorf("certs: no certificate yet for %s: %w", strings.Join(missing, ", "), ctx.Err())
		}
	}
}

// decide is certmagic's on-demand DecisionFunc.
func (c *Manager) decide(ctx context.Context, name string) error {
	err := c.cfg.Allow(ctx, name)
	if err != nil {
		c.log.Debug("no certificate for this name", "name", name, "err", err)
	}
	return err
}

// onEvent logs what an operator wants to know, keeps each name's state
// and wakes Manage.
func (c *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	switch event {
	case "cert_obtained":
		c.log.Info("certificate obtained", "name", name, "renewal", data["renewal"], "issuer", data["issuer"])
		c.order(name, false, "")
	case "cert_obtaining":
		// Returning an error aborts the order (certmagic's obtain), at
		// once rather than with its retries (ErrNoRetry).
		if renewal, _ := data["renewal"].(bool); !renewal && !c.orders.Allow() {
			c.log.Warn("certificate not ordered: the week's new orders are used up", "name", name, "per_week", c.cfg.OrdersPerWeek)
			c.order(name, false, ErrOrderLimit.Error())
			return certmagic.ErrNoRetry{Err: ErrOrderLimit}
		}
		c.order(name, true, "")
	case "cert_failed":
		c.log.Error("certificate not obtained", "name", name, "renewal", data["renewal"], "err", data["error"])
		msg := "the certificate authority refused"
		if err, ok := data["error"].(error); ok {
			msg = err.Error()
		}
		c.order(name, false, msg)
	case "cached_managed_cert":
		c.mu.Lock()
		close(c.cached)
		c.cached = make(chan struct{})
		c.mu.Unlock()
	}
	return nil
}

// order records that name's order started (running) or ended, with
// failure the error it ended with ("" on success).
func (c *Manager) order(name string, running bool, failure string) {
	if name == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.names[name]
	if st == nil {
		if len(c.names) >= maxNames {
			clear(c.names) // bounded: on-demand names are many
		}
		st = &nameState{}
		c.names[name] = st
	}
	now := time.Now()
	if running {
		st.ordering = now
		return
	}
	st.ordering, st.lastTry, st.lastError = time.Time{}, now, failure
}

// maxNames bounds the names whose orders a Manager remembers.
const maxNames = 10000

// orderTimeout is how long an order counts as running without an end
// being heard of (certmagic's obtain gives up well before).
const orderTimeout = 15 * time.Minute

// Ordering reports whether this Manager has an order for name under way,
// so that a TLS-ALPN-01 connection for name is its own to answer (a
// gateway tells its own challenges from those of the node it splices
// to; certmagic's table of challenges is shared by the whole process).
func (c *Manager) Ordering(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.names[name]
	return st != nil && !st.ordering.IsZero() && time.Since(st.ordering) < orderTimeout
}

// Keep obtains certificates for names (from storage, or from the CA)
// and renews them, in the background until Close (Config.Keep). Names
// already kept stay kept.
func (c *Manager) Keep(names ...string) error {
	if !c.cfg.Keep {
		return errors.New("certs: Keep needs Config.Keep")
	}
	if err := c.magic.ManageAsync(c.ctx, names); err != nil {
		return fmt.Errorf("certs: keep %s: %w", strings.Join(names, " "), err)
	}
	return nil
}

// Drop stops keeping names (a node's old name): their certificates leave
// memory and are no longer renewed; storage keeps them.
func (c *Manager) Drop(names ...string) {
	subjects := make([]certmagic.SubjectIssuer, 0, len(names))
	for _, n := range names {
		subjects = append(subjects, certmagic.SubjectIssuer{Subject: n})
	}
	c.cache.RemoveManaged(subjects)
}

// NameState is how one name's certificate stands.
type NameState struct {
	// Held: a certificate for the name is in memory, valid until
	// NotAfter, from Issuer (its subject's common name).
	Held     bool      `json:"held"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Issuer   string    `json:"issuer,omitempty"`
	// Ordering: an order is under way.
	Ordering bool `json:"ordering,omitempty"`
	// LastError is why the last order failed ("" if it did not), at
	// LastTry.
	LastError string    `json:"last_error,omitempty"`
	LastTry   time.Time `json:"last_try,omitzero"`
}

// State tells how name's certificate stands.
func (c *Manager) State(name string) NameState {
	var s NameState
	now := time.Now()
	for _, crt := range c.cache.AllMatchingCertificates(name) {
		if crt.Leaf == nil || !now.Before(crt.Leaf.NotAfter) {
			continue
		}
		if !s.Held || crt.Leaf.NotAfter.After(s.NotAfter) {
			s.Held, s.NotAfter, s.Issuer = true, crt.Leaf.NotAfter, crt.Leaf.Issuer.CommonName
		}
	}
	s.Ordering = c.Ordering(name)
	c.mu.Lock()
	if st := c.names[name]; st != nil {
		s.LastError, s.LastTry = st.lastError, st.lastTry
	}
	c.mu.Unlock()
	return s
}

// Roots reads the roots of a private or test CA's HTTPS (Config.CARoots)
// from PEM text or a PEM file (the file wins); nil, nil when both are
// empty.
func Roots(pemText, file string) (*x509.CertPool, error) {
	b := []byte(pemText)
	if file != "" {
		var err error
		if b, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("certs: CA roots: %w", err)
		}
	}
	if len(b) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("certs: the CA roots hold no PEM certificate")
	}
	return pool, nil
}

// dnsProvider is what DNS-01 needs of a libdns provider.
type dnsProvider interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

// DNS-01 timing.
const (
	dnsRecordTTL          = 60 * time.Second
	dnsPropagationTimeout = 2 * time.Minute
	dnsPropagationPoll    = time.Second
)

// dnsSolver solves DNS-01 through a libdns provider. It stands in for
// certmagic.DNS01Solver, which always finds the zone by an SOA lookup
// and checks propagation its own way: here the operator can name the
// zones and the servers to watch, which a split-horizon or private DNS
// needs (and so do the tests).
type dnsSolver struct {
	provider  dnsProvider
	zones     []string // FQDNs, longest first
	resolvers []string
	log       *slog.Logger
	zlog      *zap.Logger

	mu      sync.Mutex
	records map[string]dnsRecord // by FQDN and value
}

type dnsRecord struct {
	zone string
	rec  libdns.Record
}

func newDNSSolver(cfg *DNSConfig, log *slog.Logger, zlog *zap.Logger) (*dnsSolver, error) {
	s := &dnsSolver{resolvers: cfg.Resolvers, log: log, zlog: zlog, records: map[string]dnsRecord{}}
	switch cfg.Provider {
	case DNSRFC2136:
		if cfg.Server == "" || cfg.KeyName == "" || cfg.Key == "" {
			return nil, errors.New("certs: rfc2136 needs server, key_name and key")
		}
		server := cfg.Server
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(server, "53")
		}
		alg := cfg.KeyAlg
		if alg == "" {
			alg = dns.HmacSHA256
		}
		s.provider = &rfc2136.Provider{Server: server, KeyName: cfg.KeyName, KeyAlg: alg, Key: cfg.Key}
	case DNSHTTPReq:
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("certs: httpreq endpoint %q is not an http(s) URL", cfg.Endpoint)
		}
		s.provider = &httpReqProvider{
			endpoint: strings.TrimSuffix(cfg.Endpoint, "/"),
			username: cfg.Username, password: cfg.Password,
			client: &http.Client{Timeout: 30 * time.Second},
		}
	default:
		return nil, fmt.Errorf("certs: unknown DNS provider %q (want %s or %s)", cfg.Provider, DNSRFC2136, DNSHTTPReq)
	}
	for _, z := range cfg.Zones {
		s.zones = append(s.zones, dns.Fqdn(strings.ToLower(z)))
	}
	slices.SortFunc(s.zones, func(a, b string) int { return len(b) - len(a) })
	return s, nil
}

// zone returns the zone fqdn's record goes into.
func (s *dnsSolver) zone(ctx context.Context, fqdn string) (string, error) {
	for _, z := range s.zones {
		if fqdn == z || strings.HasSuffix(fqdn, "."+z) {
			return z, nil
		}
	}
	z, err := certmagic.FindZoneByFQDN(ctx, s.zlog, fqdn, certmagic.RecursiveNameservers(s.resolvers))
	if err != nil {
		return "", fmt.Errorf("dns-01: zone of %s (set zones to skip the lookup): %w", fqdn, err)
	}
	return dns.Fqdn(z), nil
}

// Present adds the challenge's TXT record.
func (s *dnsSolver) Present(ctx context.Context, chal acme.Challenge) error {
	fqdn := dns.Fqdn(chal.DNS01TXTRecordName())
	value := chal.DNS01KeyAuthorization()
	zone, err := s.zone(ctx, fqdn)
	if err != nil {
		return err
	}
	rec := libdns.TXT{Name: libdns.RelativeName(fqdn, zone), TTL: dnsRecordTTL, Text: value}
	if _, err := s.provider.AppendRecords(ctx, zone, []libdns.Record{rec}); err != nil {
		return fmt.Errorf("dns-01: add TXT %s in %s: %w", fqdn, zone, err)
	}
	s.mu.Lock()
	s.records[fqdn+" "+value] = dnsRecord{zone: zone, rec: rec}
	s.mu.Unlock()
	s.log.Debug("dns-01 record added", "name", fqdn, "zone", zone)
	return nil
}

// Wait waits until the record is visible on the servers to watch. When
// it is not by the timeout, or they cannot be asked, it says so and
// lets the CA look anyway: the CA may see what this host cannot.
func (s *dnsSolver) Wait(ctx context.Context, chal acme.Challenge) error {
	fqdn := dns.Fqdn(chal.DNS01TXTRecordName())
	value := chal.DNS01KeyAuthorization()
	servers := s.resolvers
	if len(servers) == 0 {
		s.mu.Lock()
		r, ok := s.records[fqdn+" "+value]
		s.mu.Unlock()
		if !ok {
			return nil
		}
		nss, err := net.DefaultResolver.LookupNS(ctx, r.zone)
		if err != nil || len(nss) == 0 {
			s.log.Warn("dns-01: cannot find the zone's name servers to watch; asking the CA anyway", "zone", r.zone, "err", err)
			return nil
		}
		for _, ns := range nss {
			servers = append(servers, net.JoinHostPort(strings.TrimSuffix(ns.Host, "."), "53"))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, dnsPropagationTimeout)
	defer cancel()
	tick := time.NewTicker(dnsPropagationPoll)
	defer tick.Stop()
	for {
		var waiting []string
		var lastErr error
		for _, srv := range servers {
			ok, err := txtHas(ctx, srv, fqdn, value)
			if err != nil {
				lastErr = err
			}
			if !ok {
				waiting = append(waiting, srv)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			s.log.Warn("dns-01: record not visible yet; asking the CA anyway", "name", fqdn, "servers", waiting, "err", lastErr)
			return nil
		}
	}
}

// txtHas says whether server answers value among fqdn's TXT records.
func txtHas(ctx context.Context, server, fqdn, value string) (bool, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeTXT)
	c := &dns.Client{Timeout: 5 * time.Second}
	in, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return false, err
	}
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.Join(t.Txt, "") == value {
			return true, nil
		}
	}
	return false, nil
}

// CleanUp removes the challenge's TXT record.
func (s *dnsSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	fqdn := dns.Fqdn(chal.DNS01TXTRecordName())
	key := fqdn + " " + chal.DNS01KeyAuthorization()
	s.mu.Lock()
	r, ok := s.records[key]
	delete(s.records, key)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	// The challenge's context may be over; the record must go anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := s.provider.DeleteRecords(ctx, r.zone, []libdns.Record{r.rec}); err != nil {
		return fmt.Errorf("dns-01: remove TXT %s in %s: %w", fqdn, r.zone, err)
	}
	return nil
}

// httpReqProvider is lego's "httpreq" DNS provider as a libdns provider:
// a record is added by POSTing {"fqdn": "_acme-challenge.example.org.",
// "value": "..."} to <endpoint>/present and removed by the same to
// <endpoint>/cleanup, with optional basic auth; any 2xx is success. It
// lets an operator put any DNS API behind a few lines of their own, and
// endpoints written for lego work unchanged. It is written here because
// no maintained library has it: libdns has no httpreq provider, and
// lego's lives inside lego's provider framework, far too much to pull in
// for one POST.
type httpReqProvider struct {
	endpoint           string
	username, password string
	client             *http.Client
}

// AppendRecords presents each TXT record.
func (p *httpReqProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, r := range recs {
		if err := p.post(ctx, "present", zone, r.RR()); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// DeleteRecords cleans each TXT record up.
func (p *httpReqProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, r := range recs {
		if err := p.post(ctx, "cleanup", zone, r.RR()); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

func (p *httpReqProvider) post(ctx context.Context, op, zone string, rr libdns.RR) error {
	if rr.Type != "TXT" {
		return fmt.Errorf("httpreq: %s record: only TXT is supported", rr.Type)
	}
	body, _ := json.Marshal(struct {
		FQDN  string `json:"fqdn"`
		Value string `json:"value"`
	}{dns.Fqdn(libdns.AbsoluteName(rr.Name, zone)), rr.Data})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint+"/"+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("httpreq %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if p.username != "" || p.password != "" {
		req.SetBasicAuth(p.username, p.password)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("httpreq %s: %w", op, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("httpreq %s %s: %s: %s", op, p.endpoint, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// slogCore is a zapcore.Core writing to an slog.Handler, so certmagic's
// zap logging joins the gateway's log. Its Info is routine detail (locks,
// challenges served, each step of an order) and goes to Debug; onEvent
// logs the outcomes at Info.
type slogCore struct{ h slog.Handler }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.InfoLevel:
		return slog.LevelDebug
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c slogCore) With(fs []zapcore.Field) zapcore.Core {
	return slogCore{h: c.h.WithAttrs(slogAttrs(fs))}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(slogAttrs(fs)...)
	return c.h.Handle(context.Background(), r)
}

func (slogCore) Sync() error { return nil }

// slogAttrs converts zap fields, in order.
func slogAttrs(fs []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	attrs := make([]slog.Attr, 0, len(fs))
	for _, f := range fs {
		f.AddTo(enc)
		if v, ok := enc.Fields[f.Key]; ok {
			attrs = append(attrs, slog.Any(f.Key, v))
			delete(enc.Fields, f.Key)
		}
	}
	return attrs
}
