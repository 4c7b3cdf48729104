package personal

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pc2/pc2/internal/chanlisten"
	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/services/certs"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/relay"
)

// TLSConfig configures the node's own certificate for its name: with it
// the gateways splice visitors' TLS to the node (relay.ProtocolTLS) and
// no supernode can read their traffic. The certificate comes from an
// ACME CA by TLS-ALPN-01: the CA's validation reaches the node through
// the gateway's splice like any visitor, and the key never leaves the
// node (<data_dir>/certs).
type TLSConfig struct {
	// CA is the ACME directory URL (default Let's Encrypt production).
	CA string `json:"ca,omitempty"`
	// CARoot (PEM) or CARootFile are roots for the CA's own HTTPS, for a
	// private or test CA (default: the system's).
	CARoot     string `json:"ca_root,omitempty"`
	CARootFile string `json:"ca_root_file,omitempty"`
	// Email is the ACME account's contact (expiry notices).
	Email string `json:"email,omitempty"`
}

// TLS states (Status.TLS).
const (
	TLSEndToEnd = "end-to-end" // the node holds its certificate: visitors' TLS ends here
	TLSGateway  = "gateway"    // the gateways terminate: the supernode can read the traffic
)

// TLSStatus says where visitors' TLS ends, and why.
type TLSStatus struct {
	// Mode is TLSEndToEnd or TLSGateway ("" without a name).
	Mode string `json:"mode,omitempty"`
	// Why, in words for the owner.
	Why string `json:"why,omitempty"`
	// Certificate is the state of the name's certificate.
	Certificate *certs.NameState `json:"certificate,omitempty"`
	// DomainMode is the domain record's TLS mode (auto, end-to-end,
	// gateway), as the node last read it.
	DomainMode string `json:"domain_mode,omitempty"`
	// LastSpliced is when a visitor's TLS connection last reached the
	// node end to end.
	LastSpliced time.Time `json:"last_spliced,omitzero"`
	// Domains are the certificates of the owner's own domains whose
	// proof names this node.
	Domains map[string]certs.NameState `json:"domains,omitempty"`
}

// nodeTLS is the node's end-to-end TLS: its certificate manager, the
// names it keeps, and the server of spliced connections.
type nodeTLS struct {
	n   *Node
	cm  *certs.Manager
	log *slog.Logger
	srv *http.Server
	ln  *chanlisten.Listener // accepted spliced connections, for srv

	mu          sync.Mutex
	kept        map[string]bool
	domainMode  map[string]string // the domains' modes as last read ("": unknown)
	lastSpliced time.Time
	// own are the owner's own domains kept (their proofs name this
	// node), ownAt when their proofs were last read.
	own   map[string]bool
	ownAt time.Time
}

// ownCheck is how often the proofs of the owner's own domains are read
// again (each a DNS query); a domain added on the dashboard is seen at
// once.
const ownCheck = 5 * time.Minute

// headerTimeout bounds a spliced stream's wait for its header.
const headerTimeout = 10 * time.Second

// newTLS starts the certificate manager and the spliced connections'
// server (handler serves them); nil without cfg.TLS.
func newTLS(n *Node, handler http.Handler) (*nodeTLS, error) {
	tc := n.cfg.TLS
	if tc == nil {
		return nil, nil
	}
	roots, err := certs.Roots(tc.CARoot, tc.CARootFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	// certmagic serves a TLS-ALPN-01 challenge on a listener of its own
	// unless its port is taken; here the CA's connection arrives through
	// the gateway's splice and is answered by the spliced server, so its
	// listener goes to a loopback port nobody reaches.
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	log := n.log.With("service", "tls")
	cm, err := certs.New(certs.Config{CA: tc.CA, CARoots: roots, Email: tc.Email, Dir: filepath.Join(n.cfg.CloudDir(), "certs"),
		Keep: true, DisableHTTP01: true, ListenHost: "127.0.0.1", TLSALPNPort: port, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	t := &nodeTLS{n: n, cm: cm, log: log, kept: map[string]bool{}, domainMode: map[string]string{}, own: map[string]bool{},
		ln: chanlisten.New(&net.TCPAddr{IP: net.IPv4zero})}
	// A spliced connection holds one of the node's streams at its relay:
	// an idle one is closed after 30 s, as relayed HTTP's.
	t.srv = &http.Server{Handler: handler, TLSConfig: cm.TLSConfig(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go t.srv.ServeTLS(t.ln, "", "")
	return t, nil
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Close stops the server and the renewals.
func (t *nodeTLS) Close() {
	t.srv.Close()
	t.ln.Close()
	t.cm.Close()
}

// serve takes the spliced streams of ln (the tunnel's TLSListener or a
// direct listener) until it is closed.
func (t *nodeTLS) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go t.take(c)
	}
}

// take reads c's header and answers it: a name of the node's with a
// certificate (or a CA validating the one being ordered) is accepted and
// served; the rest get the answer why not and are closed, and the
// gateway terminates them itself.
func (t *nodeTLS) take(c net.Conn) {
	h, conn, err := relay.ReadTLSHeader(c, headerTimeout)
	if err != nil {
		t.log.Debug("spliced connection without a good header", "err", err)
		c.Close()
		return
	}
	answer := t.answer(h)
	if _, err := conn.Write([]byte{answer}); err != nil || answer != relay.TLSAccept {
		conn.Close()
		return
	}
	if !h.ACME {
		t.mu.Lock()
		t.lastSpliced = time.Now()
		t.mu.Unlock()
	}
	if !t.ln.Deliver(conn) {
		conn.Close()
	}
}

// answer decides on a spliced connection for h: accepted for a kept name
// with a certificate, or for the CA's validation of the one being
// ordered; else why not (the gateway terminates meanwhile).
func (t *nodeTLS) answer(h *relay.TLSHeader) byte {
	name, ok := netaddr.CanonicalHost(h.ServerName)
	if !ok {
		return relay.TLSRefused
	}
	t.mu.Lock()
	kept := t.kept[name] || t.own[name]
	t.mu.Unlock()
	if !kept {
		if name == t.n.cloud.Name() {
			return relay.TLSOrdering // the node's new name: kept at the next check
		}
		return relay.TLSRefused
	}
	st := t.cm.State(name)
	switch {
	case h.ACME && st.Ordering:
		return relay.TLSAccept
	case st.Held:
		return relay.TLSAccept
	case st.Ordering || st.LastError == "":
		return relay.TLSOrdering
	}
	return relay.TLSNoCertificate
}

// keepLoop keeps a certificate for the node's name while the name's
// domain allows end-to-end TLS (its record's mode, read through
// gateways), checking every interval until ctx ends.
func (t *nodeTLS) keepLoop(ctx context.Context, gateways *dht.GatewaySet, interval time.Duration) {
	for {
		t.check(ctx, gateways)
		t.checkOwn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// check reads the domain's mode and keeps the name's certificate when
// the mode allows one.
func (t *nodeTLS) check(ctx context.Context, gateways *dht.GatewaySet) {
	name := t.n.cloud.Name()
	_, domain, err := records.SplitName(name)
	if err != nil {
		return // no name yet
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	mode, known := gateways.TLSMode(cctx, domain)
	cancel()
	t.mu.Lock()
	if known {
		t.domainMode[domain] = mode
	}
	already := t.kept[name]
	t.mu.Unlock()
	// Not before the domain's record is read: its mode may say no.
	if already || !known || mode == records.TLSGateway {
		return
	}
	// Kept before the order starts: the CA's validation is accepted
	// only for kept names. A name the node held before (the owner
	// restored another identity, or released it) is no longer renewed.
	t.mu.Lock()
	var old []string
	for n := range t.kept {
		old = append(old, n)
	}
	clear(t.kept)
	t.kept[name] = true
	t.mu.Unlock()
	if len(old) > 0 {
		t.cm.Drop(old...)
		t.log.Info("no longer keeping the certificate of the node's old name", "names", old)
	}
	if err := t.cm.Keep(name); err != nil {
		t.log.Warn("cannot keep a certificate for the name", "name", name, "err", err)
		t.mu.Lock()
		delete(t.kept, name)
		t.mu.Unlock()
		return
	}
	t.log.Info("getting a certificate of the node's own for its name", "name", name)
}

// checkOwn keeps certificates for the owner's own domains whose DNS
// proof names this node (the gateways splice their visitors' TLS here
// as for the name; until the node holds one they terminate it with
// theirs), and stops renewing those whose proof is gone or another
// node's. A domain whose proof could not be read stays as it was.
func (t *nodeTLS) checkOwn(ctx context.Context) {
	domains := t.n.cloud.OwnDomains()
	t.mu.Lock()
	changed := len(domains) != len(t.own)
	for _, d := range domains {
		if _, ok := t.own[d]; !ok {
			changed = true
		}
	}
	due := changed || time.Since(t.ownAt) >= ownCheck
	t.mu.Unlock()
	if !due {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	proofs := t.n.cloud.DomainProofs(cctx)
	cancel()
	var keep, drop []string
	t.mu.Lock()
	t.ownAt = time.Now()
	for d, kept := range t.own {
		if proven, read := proofs[d]; kept && ((read && !proven) || !slices.Contains(domains, d)) {
			drop = append(drop, d)
		}
		if !slices.Contains(domains, d) {
			delete(t.own, d)
		}
	}
	for _, d := range domains {
		proven, read := proofs[d]
		switch {
		case read && proven && !t.own[d]:
			keep = append(keep, d)
			t.own[d] = true // before the order: the CA's validation is accepted for kept names only
		case read && !proven:
			t.own[d] = false
		case !read:
			if _, ok := t.own[d]; !ok {
				t.own[d] = false // seen; read again at the next check
			}
		}
	}
	t.mu.Unlock()
	if len(drop) > 0 {
		t.cm.Drop(drop...)
		t.log.Info("no longer keeping certificates for own domains whose proof is gone", "domains", drop)
	}
	for _, d := range keep {
		if err := t.cm.Keep(d); err != nil {
			t.log.Warn("cannot keep a certificate for an own domain", "domain", d, "err", err)
			t.mu.Lock()
			t.own[d] = false
			t.mu.Unlock()
			continue
		}
		t.log.Info("getting a certificate of the node's own for an own domain", "domain", d)
	}
}

// ownStatus is the certificate state of each own domain the node
// keeps one for.
func (t *nodeTLS) ownStatus() map[string]certs.NameState {
	t.mu.Lock()
	var kept []string
	for d, k := range t.own {
		if k {
			kept = append(kept, d)
		}
	}
	t.mu.Unlock()
	if len(kept) == 0 {
		return nil
	}
	out := map[string]certs.NameState{}
	for _, d := range kept {
		out[d] = t.cm.State(d)
	}
	return out
}

// status tells where visitors' TLS for name ends.
func (t *nodeTLS) status(name string) TLSStatus {
	var st TLSStatus
	_, domain, err := records.SplitName(name)
	if err != nil {
		return st
	}
	t.mu.Lock()
	mode, known := t.domainMode[domain]
	kept := t.kept[name]
	st.LastSpliced = t.lastSpliced
	t.mu.Unlock()
	if known {
		st.DomainMode = mode
		if mode == records.TLSAuto {
			st.DomainMode = "auto"
		}
	}
	cs := t.cm.State(name)
	st.Certificate = &cs
	switch {
	case mode == records.TLSGateway:
		st.Mode, st.Why = TLSGateway, "the operator of "+domain+" terminates TLS at its gateways for every name"
	case cs.Held:
		st.Mode, st.Why = TLSEndToEnd, fmt.Sprintf("visitors' TLS ends on this device: its certificate for %s is from %s, valid until %s", name, cs.Issuer, cs.NotAfter.UTC().Format("2006-01-02"))
	case !kept:
		st.Mode, st.Why = TLSGateway, "the node has not asked for a certificate of its own yet (it waits until it has read the domain's record)"
	case cs.LastError != "":
		st.Mode, st.Why = TLSGateway, "the certificate authority did not give this device a certificate yet: "+cs.LastError
	default:
		st.Mode, st.Why = TLSGateway, "getting a certificate of its own for "+name+" (the first minutes)"
	}
	if mode == records.TLSEndToEnd && st.Mode == TLSGateway {
		st.Why += "; the domain allows end-to-end TLS only, so visitors cannot connect until then"
	}
	return st
}

// tlsOff is the status of a node whose config turns its own TLS off.
const tlsOff = "this node's config gets it no certificate of its own (tls): the supernode's gateway terminates TLS"
