// Package cloud is the personal cloud a node serves on port 4200: the
// first-run wizard (identity, owner password, name), owner login with
// sessions, the dashboard, the owner's files in the browser and over
// WebDAV, the public site and share links. Every page and asset is served
// from the binary (no CDN), so it works offline and stays small on a Pi.
//
// URL space: /_/ is the owner's app (login, wizard, dashboard, files,
// shares; /_/assets/ its static files), /dav/ is WebDAV (HTTP Basic
// authentication with the owner password), /s/<token> are share links,
// and every other path is the public site: the files of the owner's
// public/ folder, without directory listings. User content (public site,
// share links, downloads) is served with a sandboxing CSP, so a script in
// an uploaded page runs in an opaque origin and cannot use the owner's
// session.
package cloud

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/services/cloud/files"
)

// Node is what the cloud needs of the node it runs on.
type Node interface {
	// DID is the node's identity; "" while it has none.
	DID() string
	// PendingWords are the 24 words of an identity the device made on
	// its own and the owner has not confirmed yet ("" when none).
	PendingWords() string
	// SetIdentity makes the identity of words (and passphrase) the
	// node's, replacing an identity the wizard has not completed, and
	// returns its DID.
	SetIdentity(words, passphrase string) (string, error)
	// Key is the node key (nil while there is none); it signs name claims.
	Key() ed25519.PrivateKey
	// Status is the node's connection state for the dashboard.
	Status() NodeStatus
}

// NodeStatus is the dashboard's view of the node.
type NodeStatus struct {
	State     string // starting, connecting, online, error, waiting
	Detail    string // what the state is about
	LastError string // the last error of publishing or attaching
	Mode      string // direct, relayed or offline
	// TLS is where visitors' TLS ends: "end-to-end" (on this device) or
	// "gateway" (the supernode can read the traffic); TLSWhy says why.
	// Empty without a name.
	TLS, TLSWhy string
	Supernodes  []string // attached (relayed) or configured supernodes
	Peers       int
	Started     time.Time
}

// NameService is a domain whose supernodes grant names, offered by the
// wizard.
type NameService struct {
	Domain string `json:"domain"`
	// API is the names API base URL; empty: https://<domain>.
	API string `json:"api,omitempty"`
	// Operator, if set, is the DID of the domain's operator: the node
	// then trusts the gateways its domain record lists before it holds a
	// name there (once it does, the operator of its grant).
	Operator string `json:"operator,omitempty"`
}

// Options configure a Server.
type Options struct {
	// DataDir holds the cloud's state (owner, sessions, shares: in
	// DataDir/state) and the owner's files (DataDir/files). Required.
	DataDir string
	// Quota limits the owner's files (bytes; 0: none).
	Quota int64
	// Node is the node the cloud runs on. Required.
	Node Node
	// NameServices are offered by the wizard's name step.
	NameServices []NameService
	// LookupTXT reads DNS TXT records for the own-domains page's check
	// (nil: the system's resolver).
	LookupTXT func(ctx context.Context, name string) ([]string, error)
	// Version is shown on the dashboard.
	Version string
	// Updates, if set, describes the device's updates on the dashboard.
	Updates func() UpdateStatus
	// UpdateActions, if set, are the dashboard's buttons to check for
	// an update at once and to install the one found.
	UpdateActions UpdateActions
	// DeviceSettings, if set, are the settings of the device the cloud
	// runs on: the dashboard's settings page.
	DeviceSettings DeviceSettings
	// Backups, if set, are the node's backups: the dashboard's card and
	// page, restores, and the wizard's restore of the data.
	Backups Backups
	// Logs, if set, feed the dashboard's recent logs.
	Logs *LogRing
	// LogFile, if set, writes the whole log kept on disk (the
	// appliance's, across restarts), which the owner downloads from the
	// dashboard (GET /_/logs.txt).
	LogFile func(io.Writer) error
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Rand is the source of tokens, codes and words; nil: crypto/rand.
	Rand io.Reader
	// HTTPClient calls names APIs; nil: namesapi.Client's default.
	HTTPClient *http.Client
	// ShowSetupCode, if set, is called with each new one-time setup code
	// (at start while not set up, and when a code has been used), to show
	// it to the owner (the appliance's console).
	ShowSetupCode func(code string)
	// LocalNet reports whether a direct client address is on the local
	// network (the wizard opens without the setup code for those); nil:
	// loopback, private (RFC 1918, fc00::/7) and link-local addresses.
	LocalNet func(netip.Addr) bool
}

// Server is the personal cloud.
type Server struct {
	opts   Options
	log    *slog.Logger
	store  *files.Store
	public publicRoot // the public site's folder, kept open
	state  *stateStore
	auth   *auth
	wiz    *wizard
	mux    *http.ServeMux

	restore restoreJob
}

// New opens the data dir and returns the cloud. Close releases it.
func New(opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, fmt.Errorf("cloud: DataDir is required")
	}
	if opts.Node == nil {
		return nil, fmt.Errorf("cloud: Node is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.LocalNet == nil {
		opts.LocalNet = DefaultLocalNet
	}
	s := &Server{opts: opts, log: opts.Logger}
	stateDir := filepath.Join(opts.DataDir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	// A restore a power cut or restart interrupted.
	if err := os.RemoveAll(filepath.Join(opts.DataDir, RestoreDir)); err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	var err error
	if s.state, err = openState(stateDir, opts.Now); err != nil {
		return nil, err
	}
	s.store, err = files.Open(files.Options{Dir: filepath.Join(opts.DataDir, "files"), Quota: opts.Quota,
		Logger: opts.Logger.With("part", "files")})
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	if err := s.store.MkdirAll(publicDir); err != nil {
		s.store.Close()
		return nil, fmt.Errorf("cloud: %w", err)
	}
	s.auth = newAuth(s.state, opts.Now, opts.Rand)
	s.wiz = newWizard(s)
	if !s.state.setupDone() {
		code := s.wiz.code()
		s.log.Info("personal cloud not set up yet: open the setup wizard from the local network, or elsewhere with the setup code",
			"path", "/_/setup", "setup_code", code)
		if opts.ShowSetupCode != nil {
			opts.ShowSetupCode(code)
		}
	}
	s.mux = s.routes()
	return s, nil
}

// Close releases the file store.
func (s *Server) Close() error {
	s.public.close()
	return s.store.Close()
}

// Store is the owner's file store.
func (s *Server) Store() *files.Store { return s.store }

// SetupDone reports whether the wizard has been completed.
func (s *Server) SetupDone() bool { return s.state.setupDone() }

// SetupCode is the one-time code that opens the wizard from outside the
// local network ("" once set up).
func (s *Server) SetupCode() string {
	if s.state.setupDone() {
		return ""
	}
	return s.wiz.code()
}

// Handler serves clients that connect directly (port 4200).
func (s *Server) Handler() http.Handler { return s.handler(false) }

// RelayedHandler serves requests that arrive over the node's libp2p
// streams (from a relay or a gateway): never local. Over plain HTTP
// streams the client's address and scheme come from the gateway's
// X-Forwarded-For and X-Forwarded-Proto; over TLS the node terminated
// itself (a gateway's splice), the connection's remote address is the
// client's (from the gateway's PROXY header) and the scheme is HTTPS.
func (s *Server) RelayedHandler() http.Handler { return s.handler(true) }

func (s *Server) handler(relayed bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := s.client(r, relayed)
		r = r.WithContext(withClient(r.Context(), c))
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer") // share tokens are in URLs
		s.mux.ServeHTTP(w, r)
	})
}

// DefaultLocalNet: loopback, private and link-local addresses.
func DefaultLocalNet(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast()
}

// clientInfo is who sent a request, as far as the node can tell.
type clientInfo struct {
	IP     string // for rate limits
	Local  bool   // on the local network, connected directly
	Secure bool   // HTTPS between the browser and the first hop
}

func (s *Server) client(r *http.Request, relayed bool) clientInfo {
	if relayed && r.TLS != nil {
		return clientInfo{IP: netaddr.Host(r.RemoteAddr), Secure: true}
	}
	if relayed {
		// The gateway appends the address it saw to X-Forwarded-For.
		ip := "relayed"
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			ip = strings.TrimSpace(parts[len(parts)-1])
		}
		return clientInfo{IP: ip, Secure: r.Header.Get("X-Forwarded-Proto") == "https"}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	c := clientInfo{IP: host, Secure: r.TLS != nil}
	if a, err := netip.ParseAddr(host); err == nil {
		c.Local = s.opts.LocalNet(a)
	}
	return c
}

// Trusted reports whether r may see the node's own details (its network
// and setup state): it carries the owner's session, or it came straight
// from the local network (relayed: it arrived over a libp2p stream, which
// is never local).
func (s *Server) Trusted(r *http.Request, relayed bool) bool {
	if s.auth.session(r) != nil {
		return true
	}
	return !relayed && s.client(r, false).Local
}

// Name is the name the owner claimed ("" if none).
func (s *Server) Name() string { return s.state.getOwner().Name }

// OwnDomains are the owner's own domains (the dashboard's "Your own
// domains").
func (s *Server) OwnDomains() []string { return s.state.getOwner().Domains }
