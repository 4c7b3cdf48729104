package personal

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backoff"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/tunnel"
)

// Options are what the caller injects besides the config.
type Options struct {
	Logger *slog.Logger
	// Listener for the status page; nil listens on Config.Listen.
	Listener net.Listener
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// DiscoverEvery is how often the node looks up its operators'
	// supernodes again (default DefaultDiscoverEvery; the first time two
	// seconds after start).
	DiscoverEvery time.Duration
	// NameCheck is how often the node checks whether its name's grant
	// is due for renewal (default 1 h, so a grant that routes for a day
	// is renewed between 12 and 13 h; the first check a minute after
	// start).
	NameCheck time.Duration
	// NamesClient calls the names APIs (nil: namesapi's default, which
	// checks the certificate against the system's roots).
	NamesClient *http.Client
	// LogFile, if set, writes the log kept on disk (the appliance's), for
	// the owner to download from the dashboard.
	LogFile func(io.Writer) error
	// MetricsListener, if set, serves the metrics instead of
	// Config.MetricsListen's address.
	MetricsListener net.Listener
	// LookupTXT reads DNS TXT records: the proofs of the owner's own
	// domains (nil: the system's resolver).
	LookupTXT func(ctx context.Context, name string) ([]string, error)
	// TLSCheck is how often the node looks whether its name needs a
	// certificate of its own (a new name, the domain's mode); 0: 2 s
	// (cheap: the domain record is looked up again only when stale).
	TLSCheck time.Duration
	// Version is shown on the status page.
	Version string
	// Updates, if set, describes the device's updates on the dashboard;
	// UpdateActions are its buttons.
	Updates       func() cloud.UpdateStatus
	UpdateActions cloud.UpdateActions
	// DeviceSettings are the dashboard's settings page (the appliance's).
	DeviceSettings cloud.DeviceSettings
	// Routes, if set, adds handlers to the node's mux, served on its own
	// listener and through the relays and gateways alike.
	Routes func(*http.ServeMux)
	// AdminRoutes, if set, adds handlers to the mux of the node's own
	// listener only (the appliance's admin API). They are never served
	// over libp2p streams, so nothing reaches them through a relay or a
	// gateway: at the friendly URL they are the public site's 404.
	AdminRoutes func(*http.ServeMux)
	// Console, if set, shows the owner the personal cloud's one-time
	// setup code while it is not set up (the appliance's console).
	Console io.Writer
	// Started, if set, is called once the node runs, for callers that
	// follow its Status (the appliance's status light).
	Started func(*Node)
	// LocalURL, if set, is where the local network reaches the cloud by
	// name (the appliance's http://<host>.local:4200); the console
	// shows it with the setup code.
	LocalURL string
	// ClockSet, if set, says whether the wall clock can be trusted yet.
	// Until it does, the node serves its cloud (the wizard and dashboard
	// need no clock) but keeps off the network: certificates, signed
	// records and grants carry times that a clock at 1970 (a board
	// without a real-time clock, before NTP answers) gets wrong. The
	// status says it waits; the node checks again every ClockPoll.
	ClockSet func() bool
	// ClockPoll is how often ClockSet is asked while it says no
	// (0: 1 s).
	ClockPoll time.Duration
}

// WaitingForClock is the status detail while ClockSet says no.
const WaitingForClock = "waiting for the clock: no time server (NTP) has answered yet, and this board has no clock of its own"

// Node is a running personal node.
type Node struct {
	cfg   *Config
	opts  Options
	log   *slog.Logger
	cloud *cloud.Server

	mu         sync.Mutex
	key        ed25519.PrivateKey // nil until the node has an identity
	id         identity.ID
	status     Status
	tunnel     *tunnel.Client // nil in direct mode or before it starts
	dht        *dht.Node      // nil while the network side is down
	keyChanged chan struct{}  // the wizard set another identity

	tls           *nodeTLS      // the node's own certificate; nil when off
	backups       *nodeBackups  // nil when off
	space         *backup.Space // friends' backups here; nil when off
	backupChanged chan struct{} // the owner picked another location

	visits  *prometheus.CounterVec // visitors' requests through supernodes (metrics)
	metrics prometheus.Registerer  // nil: no metrics
}

// Status is what the status page and /api/status show.
type Status struct {
	DID        string    `json:"did"`
	State      string    `json:"state"` // waiting (no identity yet), starting, connecting, online, error
	Detail     string    `json:"detail,omitempty"`
	Supernodes []string  `json:"supernodes"`
	Peers      int       `json:"peers"`
	Seq        uint64    `json:"seq,omitempty"`
	Published  time.Time `json:"published,omitzero"`
	StoredOn   int       `json:"stored_on"`
	SentTo     int       `json:"sent_to"`
	LastError  string    `json:"last_error,omitempty"`
	Version    string    `json:"version,omitempty"`
	Started    time.Time `json:"started"`
	NewKey     bool      `json:"new_key,omitempty"` // created on this boot; words in WordsFile
	// Mode is how the node is reached: "direct" (configured, or found by
	// a relay's dial-back), "relayed" (attached to a supernode's relay) or
	// "offline" (neither yet).
	Mode   string         `json:"mode"`
	Tunnel *tunnel.Status `json:"tunnel,omitempty"`
	// Setup is "wizard" until the owner completed the setup wizard,
	// then "done"; Name is the name the owner claimed there.
	Setup string `json:"setup"`
	Name  string `json:"name,omitempty"`
	// BackupRecord is when the identity's backup record (where its
	// backups are, sealed) was last published: from then on the words
	// alone find the backups.
	BackupRecord time.Time `json:"backup_record,omitzero"`
	// Storage is the owner's files and the disk they are on (bytes).
	Storage *Storage `json:"storage,omitempty"`
	// TLS says where visitors' TLS ends (at this node, end to end, or at
	// the gateways) and why; nil without a name.
	TLS *TLSStatus `json:"tls,omitempty"`
}

// Storage is the space of the personal cloud's files.
type Storage struct {
	Used      int64 `json:"used"`
	Quota     int64 `json:"quota,omitempty"`
	DiskFree  int64 `json:"disk_free"`
	DiskTotal int64 `json:"disk_total"`
}

// PublicStatus is what /api/status tells a stranger.
type PublicStatus struct {
	DID   string `json:"did"`
	State string `json:"state"`
	Name  string `json:"name,omitempty"`
}

func (n *Node) now() time.Time {
	if n.opts.Now != nil {
		return n.opts.Now()
	}
	return time.Now()
}

func (n *Node) update(f func(*Status)) {
	n.mu.Lock()
	f(&n.status)
	n.mu.Unlock()
}

// Status returns a copy of the current status.
func (n *Node) Status() Status {
	s := n.lockedStatus()
	s.TLS = n.tlsStatus(s.Name)
	if n.cloud != nil {
		// statfs, outside n.mu.
		if u, err := n.cloud.Store().Usage(); err == nil {
			s.Storage = &Storage{Used: u.Used, Quota: u.Quota, DiskFree: u.DiskFree, DiskTotal: u.DiskTotal}
		}
	}
	return s
}

// lockedStatus is the status without the storage, under n.mu.
func (n *Node) lockedStatus() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.status
	s.Supernodes = append([]string(nil), s.Supernodes...)
	s.Mode = "offline"
	if n.cfg.Mode == ModeDirect && n.key != nil {
		s.Mode = ModeDirect
	}
	if n.tunnel != nil {
		ts := n.tunnel.Status()
		s.Tunnel = &ts
		if ts.Mode != "offline" {
			s.Mode = ts.Mode
		}
	}
	s.Setup = "wizard"
	if n.cloud != nil && n.cloud.SetupDone() {
		s.Setup = "done"
		s.Name = n.cloud.Name()
	}
	return s
}

// tlsStatus is where visitors' TLS for the node's name ends; nil without
// a name.
func (n *Node) tlsStatus(name string) *TLSStatus {
	if _, _, err := records.SplitName(name); err != nil {
		return nil
	}
	if n.tls == nil {
		return &TLSStatus{Mode: TLSGateway, Why: tlsOff}
	}
	st := n.tls.status(name)
	st.Domains = n.tls.ownStatus()
	return &st
}

// Run starts the personal node and blocks until ctx ends. Without an
// identity (no key file, create_key off) the personal cloud serves its
// setup wizard, and the node joins the network once the wizard has made
// or restored one; when the wizard replaces the identity, the network
// side starts again with the new key.
func Run(ctx context.Context, cfg *Config, opts Options) error {
	base := opts.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	logs := cloud.NewLogRing(200)
	log := slog.New(logs.Handler(base.Handler()))
	n := &Node{cfg: cfg, opts: opts, log: log, keyChanged: make(chan struct{}, 1), backupChanged: make(chan struct{}, 1), visits: newVisits()}
	key, created, err := identity.LoadOrCreateKeyFile(cfg.KeyFile, cfg.CreateKey)
	switch {
	case err == nil:
		if err := n.setKey(key); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrNotExist) && !cfg.CreateKey:
		log.Info("no identity yet: the setup wizard makes or restores one", "key_file", cfg.KeyFile)
	default:
		return err
	}
	if created {
		log.Info("created a new identity; its 24 words are in the words file until the owner confirms them in the setup wizard", "words_file", identity.WordsFile(cfg.KeyFile))
	}
	n.status = Status{DID: n.did(), State: "starting", Supernodes: cfg.Supernodes, Version: opts.Version, Started: n.now(), NewKey: created}
	if key == nil {
		n.status.State, n.status.Detail = "waiting", "no identity yet: complete the setup wizard on port 4200"
	}
	if _, err := dht.ParseAddrInfos(cfg.Supernodes); err != nil {
		return fmt.Errorf("supernodes: %w", err)
	}
	if n.backups, err = newBackups(n); err != nil {
		return err
	}
	var backups cloud.Backups // a nil *nodeBackups would be a non-nil interface
	if n.backups != nil {
		backups = n.backups
	}
	n.cloud, err = cloud.New(cloud.Options{DataDir: cfg.CloudDir(), Quota: cfg.Quota, Node: (*cloudNode)(n), Backups: backups,
		NameServices: cfg.NameServices, Version: opts.Version, Updates: opts.Updates, UpdateActions: opts.UpdateActions, DeviceSettings: opts.DeviceSettings, Logs: logs, Logger: log.With("service", "cloud"), Now: opts.Now,
		HTTPClient: opts.NamesClient, LookupTXT: opts.LookupTXT, LogFile: opts.LogFile,
		ShowSetupCode: func(code string) {
			if opts.Console != nil {
				where := "port 4200 of this device"
				if opts.LocalURL != "" {
					where = opts.LocalURL + " (port 4200 of this device)"
				}
				fmt.Fprintf(opts.Console, "\r\nPC2: set up your personal cloud: open %s from your local network,\r\n"+
					"PC2: or from elsewhere with the one-time setup code %s\r\n", where, code)
			}
		}})
	if err != nil {
		return err
	}
	defer n.cloud.Close()
	if n.metrics, err = n.startMetrics(ctx); err != nil {
		return err
	}

	ln := opts.Listener
	if ln == nil {
		addr := cfg.Listen
		if addr == "" {
			addr = DefaultListen
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("personal cloud: %w", err)
		}
	}
	// Two servers: one for clients that connect directly, one for
	// requests that arrive over libp2p streams (relays, gateways), which
	// are never "local" to the wizard.
	srv := &http.Server{Handler: n.handler(n.cloud.Handler(), true), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	// Relayed keep-alive connections are streams counted in the node's
	// limit at its relay: an idle one is closed after 30 s (the gateway's
	// pool drops its idle ones after nodeproxy.IdleTimeout, sooner).
	relayed := &http.Server{Handler: n.countVisits(n.handler(n.cloud.RelayedHandler(), false)), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	// A third for visitors' TLS spliced to the node: relayed too, with
	// the client's address from the gateway's PROXY header.
	if n.tls, err = newTLS(n, relayed.Handler); err != nil {
		return err
	}
	if n.tls != nil {
		defer n.tls.Close()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("personal cloud stopped", "err", err)
		}
	}()
	wg.Add(1)
	go func() { defer wg.Done(); n.keepName(ctx) }()
	if n.backups != nil {
		wg.Add(1)
		go func() { defer wg.Done(); n.backups.Run(ctx) }()
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		relayed.Shutdown(sctx)
		cancel()
		wg.Wait()
	}()
	log.Info("personal node up", "did", n.did(), "cloud", ln.Addr().String())
	if opts.Started != nil {
		opts.Started(n)
	}
	for {
		key := n.currentKey()
		if key == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-n.keyChanged:
				continue
			}
		}
		if !n.waitForClock(ctx) {
			return nil
		}
		key = n.currentKey() // the wizard may have set another meanwhile
		nctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- n.runNetwork(nctx, key, relayed) }()
		select {
		case <-ctx.Done():
			cancel()
			return <-errc
		case err := <-errc:
			cancel()
			return err
		case <-n.keyChanged:
			log.Info("identity changed by the setup wizard; rejoining the network", "did", n.did())
			cancel()
			if err := <-errc; err != nil {
				return err
			}
		}
	}
}

// waitForClock returns when Options.ClockSet says yes (true) or ctx ends
// (false), showing the wait in the status meanwhile.
func (n *Node) waitForClock(ctx context.Context) bool {
	set := n.opts.ClockSet
	if set == nil || set() {
		return true
	}
	n.log.Warn("waiting for the clock (NTP) before joining the network", "now", n.now())
	n.update(func(s *Status) { s.State, s.Detail = "waiting", WaitingForClock })
	if !WaitForClock(ctx, set, n.opts.ClockPoll) {
		return false
	}
	n.log.Info("clock set; joining the network", "now", n.now())
	return true
}

// WaitForClock asks set every poll (0: 1 s) until it says yes (true) or
// ctx ends (false). The appliance's other clock-bound services (the
// supernode, the update checks) wait with it too.
func WaitForClock(ctx context.Context, set func() bool, poll time.Duration) bool {
	if poll <= 0 {
		poll = time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for !set() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

func (n *Node) did() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.key == nil {
		return ""
	}
	return n.id.DID()
}

func (n *Node) currentKey() ed25519.PrivateKey {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.key
}

func (n *Node) setKey(key ed25519.PrivateKey) error {
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.key, n.id = key, id
	n.status.DID = id.DID()
	n.mu.Unlock()
	return nil
}

// handler is the node's mux around app: its own routes (status, health,
// the appliance's admin API) before the cloud's. direct is the node's own
// listener, the only one that serves Options.AdminRoutes.
//
// /api/status and /healthz tell a stranger (at the friendly URL, or on
// the node's listener from outside the local network) only what a
// visitor needs: the DID, the name and whether the node is online. The
// network details (supernodes, tunnel and STUN results with the home's
// public address, dial-back errors, the setup state) need the owner's
// session or a browser on the local network (cloud.Server.Trusted).
func (n *Node) handler(app http.Handler, direct bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		st := n.Status()
		if !n.cloud.Trusted(r, !direct) {
			json.NewEncoder(w).Encode(PublicStatus{DID: st.DID, State: st.State, Name: st.Name})
			return
		}
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if st := n.Status(); st.State != "online" {
			msg := st.State
			if n.cloud.Trusted(r, !direct) {
				msg += ": " + st.LastError
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if n.opts.Routes != nil {
		n.opts.Routes(mux)
	}
	if direct && n.opts.AdminRoutes != nil {
		n.opts.AdminRoutes(mux)
	}
	mux.Handle("/", app)
	return mux
}

// runNetwork is the node's network side with key: the DHT host, the
// tunnel to the relays (or direct streams), the did record kept
// published. It returns when ctx ends.
func (n *Node) runNetwork(ctx context.Context, key ed25519.PrivateKey, relayed *http.Server) error {
	cfg, log := n.cfg, n.log
	configured, err := dht.ParseAddrInfos(cfg.Supernodes)
	if err != nil {
		return fmt.Errorf("supernodes: %w", err)
	}
	boot := configured
	if !cfg.PinSupernodes {
		// What discovery found last time (the entry point may be gone),
		// and what the name services' gateways list.
		boot = mergeInfos(configured, loadSaved(filepath.Join(cfg.CloudDir(), supernodesFile)))
		if boot, err = n.entryPoints(ctx, boot); err != nil {
			return nil // ctx ended
		}
	}
	n.update(func(s *Status) {
		s.State, s.Detail, s.Seq, s.Published, s.StoredOn, s.SentTo = "starting", "", 0, time.Time{}, 0, 0
		s.BackupRecord = time.Time{}
	})
	dcfg := dht.Config{
		Key:                 key,
		Mode:                dht.ModeClient,
		Bootstrap:           boot,
		AllowUnknownDomains: true,
		RepublishInterval:   cfg.RepublishInterval.Or(time.Hour),
		Limits:              dht.NodeLimits(),
		Metrics:             n.metrics,
		Now:                 n.opts.Now,
		Logger:              log.With("service", "dht"),
	}
	if cfg.Mode != ModeRelayed {
		dcfg.ListenAddrs = cfg.P2PListen
		if len(dcfg.ListenAddrs) == 0 {
			dcfg.ListenAddrs = []string{DefaultP2PListen}
		}
	}
	node, err := dht.New(ctx, dcfg)
	if err != nil && dcfg.ListenAddrs != nil && cfg.Mode == "" {
		// Automatic mode still works relayed when the port is taken.
		log.Warn("cannot listen for direct connections; relayed only", "listen", dcfg.ListenAddrs, "err", err)
		dcfg.ListenAddrs = nil
		node, err = dht.New(ctx, dcfg)
	}
	if err != nil {
		return err
	}
	defer node.Close()
	n.mu.Lock()
	n.dht = node
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.dht = nil
		n.mu.Unlock()
	}()
	directPort := 0
	for _, a := range node.Multiaddrs() {
		if p, err := a.ValueForProtocol(ma.P_TCP); err == nil && directPort == 0 {
			directPort, _ = strconv.Atoi(p)
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	serve := func(ln net.Listener, what string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := relayed.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				log.Error(what+" stopped", "err", err)
			}
		}()
	}
	gateways, err := n.gateways(node, boot)
	if err != nil {
		return err
	}
	if cfg.Mode != ModeDirect {
		tc, err := tunnel.New(tunnel.Config{Host: node.Host(), Key: key, Supernodes: boot, MaxAttached: cfg.MaxAttached, TCP: cfg.ExposeTCP,
			DirectPort: directPort, AcceptDirect: directPort > 0, DirectFrom: gateways.Allowed, TLS: n.tls != nil, Now: n.now, Logger: log.With("service", "tunnel")})
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.tunnel = tc
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			n.tunnel = nil
			n.mu.Unlock()
		}()
		wg.Add(1)
		go func() { defer wg.Done(); tc.Run(ctx) }()
		if !cfg.PinSupernodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.discoverLoop(ctx, node, gateways, tc, configured) }()
		}
		serve(tc.Listener(), "relayed HTTP")
		if n.tls != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.tls.serve(tc.TLSListener()) }()
		}
	} else {
		// No tunnel: gateways that find the node direct open their HTTP
		// (and spliced TLS) streams to it themselves.
		ln := tunnel.DirectListener(node.Host(), relay.ProtocolHTTP, gateways.Allowed)
		defer ln.Close()
		serve(ln, "direct HTTP streams")
		if n.tls != nil {
			tln := tunnel.DirectListener(node.Host(), relay.ProtocolTLS, gateways.Allowed)
			defer tln.Close()
			wg.Add(1)
			go func() { defer wg.Done(); n.tls.serve(tln) }()
		}
	}
	if n.tls != nil {
		wg.Add(1)
		go func() { defer wg.Done(); n.tls.keepLoop(ctx, gateways, cmp.Or(n.opts.TLSCheck, 2*time.Second)) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); n.keepBackupRecord(ctx, node, key) }()
	wg.Add(1)
	go func() { defer wg.Done(); n.serveSpace(ctx, node, key) }()
	n.publishUntilDone(ctx, node, key)
	return nil
}

// gateways is the set of peers that may open HTTP streams to the node
// directly: its own supernodes and the gateways the operator of its
// name's domain (or of a domain its wizard offers) lists.
func (n *Node) gateways(node *dht.Node, boot []peer.AddrInfo) (*dht.GatewaySet, error) {
	var static []peer.ID
	for _, b := range boot {
		static = append(static, b.ID)
	}
	return dht.NewGatewaySet(dht.GatewaysConfig{Resolve: node.ResolveDomain, Static: static, Now: n.opts.Now,
		Logger: n.log.With("service", "gateways"),
		// The node's validator takes any self-consistent domain record:
		// only its name's operator (or one its config pins) is believed.
		Operator: func(domain string) (identity.ID, bool) {
			op := ""
			if d, o := n.cloud.NameOperator(); d == domain {
				op = o
			}
			for _, ns := range n.cfg.NameServices {
				if ns.Domain == domain && op == "" {
					op = ns.Operator
				}
			}
			id, err := identity.ParseDID(op)
			return id, err == nil
		},
		Domains: func() []string {
			var out []string
			if _, d, err := records.SplitName(n.cloud.Name()); err == nil {
				out = append(out, d)
			}
			for _, ns := range n.cfg.NameServices {
				if !slices.Contains(out, ns.Domain) {
					out = append(out, ns.Domain)
				}
			}
			return out
		}})
}

// keepName renews the owner's name before its grant lapses
// (cloud.Server.RenewName), and its own domains' registrations
// (RenewHosts), checking every Options.NameCheck until ctx ends.
func (n *Node) keepName(ctx context.Context) {
	every := cmp.Or(n.opts.NameCheck, time.Hour)
	repeat(ctx, min(time.Minute, every), every, func() {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := n.cloud.RenewName(rctx); err != nil && ctx.Err() == nil {
			n.log.Warn("name not renewed; trying again later", "err", err)
		}
		if err := n.cloud.RenewHosts(rctx); err != nil && ctx.Err() == nil {
			n.log.Warn("own domain not renewed; trying again later", "err", err)
		}
	})
}

// repeat calls f after first, then every period, until ctx ends.
func repeat(ctx context.Context, first, period time.Duration, f func()) {
	wait := first
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = period
		f()
	}
}

// Reconnect makes the tunnel attach again at once (the network changed).
func (n *Node) Reconnect() {
	n.mu.Lock()
	tc := n.tunnel
	n.mu.Unlock()
	if tc != nil {
		tc.Reconnect()
	}
}

// publishUntilDone joins the DHT and publishes the did record, retrying
// with capped backoff (the network or the supernodes may come up later than
// this node), then keeps the status fresh until ctx ends.
func (n *Node) publishUntilDone(ctx context.Context, node *dht.Node, key ed25519.PrivateKey) {
	ttl := n.cfg.RecordTTL.Or(24 * time.Hour)
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		n.log.Error("bad node key", "err", err)
		return
	}
	didKey := records.DIDKey(id)
	sign := func(seq uint64, now time.Time) ([]byte, error) {
		id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
		if err != nil {
			return nil, err
		}
		rec := &records.DID{Version: records.Version, ID: id, Seq: seq, IssuedAt: now.Unix(),
			Expires: now.Add(ttl).Unix(), Direct: n.cfg.Direct}
		if name := n.cloud.Name(); name != "" {
			rec.Names = []string{name}
		}
		if n.cfg.PublicURL != "" {
			rec.Services = []records.Service{{Name: "cloud", Endpoint: n.cfg.PublicURL}}
		}
		n.mu.Lock()
		if n.tunnel != nil {
			rec.Supernodes = n.tunnel.Attached()
			rec.Direct = append(append([]string(nil), rec.Direct...), n.tunnel.Direct()...)
		}
		n.mu.Unlock()
		return records.SignDID(key, rec)
	}
	// The record lists the supernodes the node is attached to and its
	// direct addresses: publish a new one whenever they change. The
	// change signal is taken before the first record is signed, so a
	// change while it is being published is not missed.
	var changed <-chan struct{}
	n.mu.Lock()
	if n.tunnel != nil {
		changed = n.tunnel.Changed()
	}
	n.mu.Unlock()
	err = backoff.Retry(ctx, backoff.Policy{Initial: 500 * time.Millisecond}, func(ctx context.Context, attempt int) error {
		n.update(func(s *Status) { s.State, s.Detail = "connecting", fmt.Sprintf("attempt %d", attempt) })
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := node.Bootstrap(bctx); err != nil {
			return err
		}
		res, err := node.KeepPublished(bctx, didKey, sign)
		if err != nil {
			return err
		}
		n.update(func(s *Status) {
			s.State, s.Detail, s.LastError = "online", "did record published", ""
			s.Seq, s.Published, s.StoredOn, s.SentTo = res.Seq, n.now(), res.Stored, res.Sent
		})
		n.log.Info("did record published", "did", n.did(), "stored_on", res.Stored, "sent_to", res.Sent)
		return nil
	}, func(_ int, err error, wait time.Duration) {
		n.log.Warn("publish failed, retrying", "err", err, "in", wait)
		n.update(func(s *Status) { s.LastError = err.Error() })
	})
	if err != nil {
		return // ctx ended
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		n.update(func(s *Status) { s.Peers = len(node.Host().Network().Peers()) })
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			changed = n.tunnel.Changed()
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := node.KeepPublished(pctx, didKey, sign)
			cancel()
			if err != nil {
				n.log.Warn("did record not republished after an attachment change", "err", err)
				n.update(func(s *Status) { s.LastError = err.Error() })
				continue
			}
			n.update(func(s *Status) { s.Seq, s.Published, s.StoredOn, s.SentTo = res.Seq, n.now(), res.Stored, res.Sent })
		}
	}
}
