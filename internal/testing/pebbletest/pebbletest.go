// Package pebbletest runs Pebble, Let's Encrypt's test ACME server, on
// loopback for tests of code that gets certificates over ACME. Pebble
// validates for real: its VA resolves names through pebble-challtestsrv,
// a DNS server the test controls (A records, TXT records), and fetches
// HTTP-01 tokens and makes TLS-ALPN-01 handshakes on ports the test
// chooses, so the code under test must really answer the challenges.
//
// Both programs are built at Version with internal/testing/modbuild; they are not
// dependencies of this module.
package pebbletest

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/modbuild"
	"github.com/pc2/pc2/internal/testing/proc"
)

// Version is the Pebble release built (module github.com/letsencrypt/pebble/v2).
const Version = "v2.10.1"

const module = "github.com/letsencrypt/pebble/v2"

// Options chooses the ports Pebble's VA validates on. A test that
// serves the challenges binds its listeners first (port 0) and passes
// their ports, so nothing can take them in between.
type Options struct {
	// HTTPPort is where the VA fetches HTTP-01 tokens (the CA's port
	// 80); 0: a free port, read it from Server.HTTPPort.
	HTTPPort int
	// TLSPort is where the VA makes TLS-ALPN-01 handshakes (the CA's
	// port 443); 0: a free port.
	TLSPort int
	// Host is the address the ACME and management endpoints listen on
	// and DirectoryURL names (default 127.0.0.1): in a network
	// namespace, an address the ACME clients reach.
	Host string
	// Command makes the commands that run Pebble and challtestsrv
	// (default exec.Command): to run them in a network namespace.
	Command func(name string, args ...string) *exec.Cmd
	// Dial is how the test reaches them (default net.Dialer): from the
	// same namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Validity is the lifetime of the certificates issued (0: 90 days):
	// short, to see them renewed.
	Validity time.Duration
	// CertIPs are more addresses the endpoints' HTTPS certificate is
	// valid for (a VM reaches the host's loopback at 10.0.2.2).
	CertIPs []string
}

// Server is a running Pebble and pebble-challtestsrv pair.
type Server struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// ClientRoots trusts the HTTPS certificate of Pebble's ACME and
	// management endpoints (made for Options.Host when it starts); give
	// it to the ACME client. ClientRootsPEM is the same as PEM.
	ClientRoots    *x509.CertPool
	ClientRootsPEM []byte
	// HTTPPort and TLSPort are the ports the VA validates HTTP-01 and
	// TLS-ALPN-01 on.
	HTTPPort, TLSPort int
	// DNSAddr is challtestsrv's DNS server (UDP and TCP), the VA's
	// only resolver.
	DNSAddr string

	mgmtURL    string // Pebble's management API
	challMgmt  string // challtestsrv's management API
	client     *http.Client
	pebble     *process
	challtest  *process
	stopPebble sync.Once
	mu         sync.Mutex
	orders     int
}

// Start builds (once per cache) and starts Pebble and challtestsrv on
// loopback; both stop when the test ends. Only names given an A record
// (AddA) resolve: the VA can reach nothing else.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := Build(t)
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Command == nil {
		opts.Command = exec.Command
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	certFile, keyFile, caPEM := serverCert(t, append([]string{opts.Host}, opts.CertIPs...)...)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if opts.HTTPPort == 0 {
		opts.HTTPPort = proc.FreePort(t)
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = proc.FreePort(t)
	}
	s := &Server{
		ClientRoots:    pool,
		ClientRootsPEM: caPEM,
		HTTPPort:       opts.HTTPPort,
		TLSPort:        opts.TLSPort,
		DNSAddr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(freeDNSPort(t))),
		client: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{DialContext: opts.Dial, TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
	}
	t.Cleanup(s.client.CloseIdleConnections)

	challMgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(proc.FreePort(t)))
	s.challMgmt = "http://" + challMgmt
	// Only DNS and the management API: the challenge servers it would
	// run by default (HTTP-01 on 5002, TLS-ALPN-01 on 5001, DoH) are the
	// code under test's job here.
	s.challtest = startProcess(t, opts.Command, "pebble-challtestsrv", filepath.Join(dir, "pebble-challtestsrv"), nil, nil,
		"-dnsserver", s.DNSAddr, "-management", challMgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "", "-defaultIPv6", "")

	acme := net.JoinHostPort(opts.Host, strconv.Itoa(proc.FreePort(t)))
	mgmt := net.JoinHostPort(opts.Host, strconv.Itoa(proc.FreePort(t)))
	s.DirectoryURL = "https://" + acme + "/dir"
	s.mgmtURL = "https://" + mgmt
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           acme,
		"managementListenAddress": mgmt,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                s.HTTPPort,
		"tlsPort":                 s.TLSPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 0, "order": 0},
		"profiles": map[string]any{
			"default": map[string]any{"description": "pebbletest", "validityPeriod": int64(cmp.Or(opts.Validity, 90*24*time.Hour) / time.Second)},
		},
	}}
	cfgJSON, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(t.TempDir(), "pebble-config.json")
	if err := os.WriteFile(cfgFile, cfgJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PEBBLE_VA_NOSLEEP=1",      // validate at once, not after a random pause
		"PEBBLE_WFE_NONCEREJECT=0", // no deliberate badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order is validated afresh
	}
	s.pebble = startProcess(t, opts.Command, "pebble", filepath.Join(dir, "pebble"), env, s.countOrders,
		"-config", cfgFile, "-dnsserver", s.DNSAddr)
	t.Cleanup(s.Stop)

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.ready()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebbletest: not ready after 30s: %v", err)
		}
		select {
		case <-s.pebble.exited:
			t.Fatalf("pebbletest: pebble exited: %v", s.pebble.err)
		case <-s.challtest.exited:
			t.Fatalf("pebbletest: pebble-challtestsrv exited: %v", s.challtest.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return s
}

// ready checks that the ACME directory and challtestsrv's API answer.
func (s *Server) ready() error {
	resp, err := s.client.Get(s.DirectoryURL)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("directory: %s", resp.Status)
	}
	resp, err = s.client.Get(s.challMgmt + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Stop stops Pebble (challtestsrv keeps running): from then on the CA
// cannot be reached, so anything that still works did not need it.
func (s *Server) Stop() {
	s.stopPebble.Do(func() { s.pebble.stop() })
}

// IssuingRoots fetches the roots Pebble issues under (management API
// /roots/0). Pebble makes a new root each time it starts.
func (s *Server) IssuingRoots() (*x509.CertPool, error) {
	body, err := s.IssuingRootsPEM()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		return nil, errors.New("pebbletest: issuing root: no PEM certificate in the answer")
	}
	return pool, nil
}

// IssuingRootsPEM is IssuingRoots as PEM (for SSL_CERT_FILE).
func (s *Server) IssuingRootsPEM() ([]byte, error) {
	resp, err := s.client.Get(s.mgmtURL + "/roots/0")
	if err != nil {
		return nil, fmt.Errorf("pebbletest: issuing root: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebbletest: issuing root: %s %v", resp.Status, err)
	}
	return body, nil
}

// Orders is how many orders Pebble has accepted (counted from its log).
func (s *Server) Orders() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orders
}

func (s *Server) countOrders(line string) {
	if !strings.Contains(line, "Added order ") {
		return
	}
	s.mu.Lock()
	s.orders++
	s.mu.Unlock()
}

// AddA makes host resolve to ips (IPv4) for the VA.
func (s *Server) AddA(host string, ips ...string) error {
	return s.challtestsrv("/add-a", map[string]any{"host": host, "addresses": ips})
}

// SetTXT adds value to host's TXT records (host is the full name, e.g.
// _acme-challenge.example.test).
func (s *Server) SetTXT(host, value string) error {
	return s.challtestsrv("/set-txt", map[string]any{"host": host, "value": value})
}

// ClearTXT removes every TXT record of host.
func (s *Server) ClearTXT(host string) error {
	return s.challtestsrv("/clear-txt", map[string]any{"host": host})
}

func (s *Server) challtestsrv(path string, req any) error {
	body, _ := json.Marshal(req)
	resp, err := s.client.Post(s.challMgmt+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("pebbletest: challtestsrv %s: %w", path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pebbletest: challtestsrv %s: %s %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// process is a started command whose output goes to the test log.
type process struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func startProcess(t testing.TB, command func(string, ...string) *exec.Cmd, name, bin string, env []string, onLine func(string), args ...string) *process {
	t.Helper()
	cmd := command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") { // PEBBLE_VA_ALWAYS_VALID would fake validation
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	w := &lineWriter{t: t, prefix: name + ": ", onLine: onLine}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("pebbletest: start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop kills the process and waits for it and its output.
func (p *process) stop() {
	p.cmd.Process.Kill()
	<-p.exited
}

// lineWriter passes whole lines to the test log and onLine.
type lineWriter struct {
	t      testing.TB
	prefix string
	onLine func(string)
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		w.t.Log(w.prefix + line)
		if w.onLine != nil {
			w.onLine(line)
		}
	}
}

// Build returns the directory holding the pebble and
// pebble-challtestsrv binaries at Version, building them the first time.
func Build(t testing.TB) string {
	t.Helper()
	return modbuild.Build(t, modbuild.Program{Name: "pebble", Module: module, Version: Version,
		Cmds: []string{"cmd/pebble", "cmd/pebble-challtestsrv"}})
}

// freeDNSPort returns a port free for both TCP and UDP on 127.0.0.1.
func freeDNSPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("pebbletest: no port free for both TCP and UDP")
	return 0
}

// serverCert makes a CA and a certificate for Pebble's own HTTPS
// endpoints at hosts (and loopback), and returns the certificate and key
// files and the CA as PEM. Pebble's test/certs name only localhost,
// which an ACME client in another network namespace does not dial.
func serverCert(t testing.TB, hosts ...string) (certFile, keyFile string, caPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebbletest server CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, host := range hosts {
		if ip := net.ParseIP(host); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, host)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// Leaf is the certificate the TLS server at addr presents for name,
// verified against roots (e.g. IssuingRoots).
func Leaf(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: time.Minute}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// KeyFiles are the private key files certmagic stored for name under
// dir (a certificate manager's storage).
func KeyFiles(dir, name string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name+".key" {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// StoredKey is the public half of the one private key certmagic stored
// for name under dir.
func StoredKey(dir, name string) (crypto.PublicKey, error) {
	files := KeyFiles(dir, name)
	if len(files) != 1 {
		return nil, fmt.Errorf("pebbletest: keys for %s under %s: %v", name, dir, files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("pebbletest: %s is not PEM", files[0])
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s.Public(), nil
		}
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k.Public(), nil
	}
	return nil, fmt.Errorf("pebbletest: %s holds no private key it can read", files[0])
}

// SameKey reports whether a and b are the same public key.
func SameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
