// Package turn is the STUN/TURN service of a supernode (UDP and TCP 3478);
// the STUN client a personal node uses to learn its public address is
// services/stun.
//
// The server is github.com/pion/turn/v4, the maintained major version of
// the TURN library the design names: pure Go (builds for the gokrazy
// image without cgo), takes already-bound listeners, and has the hooks
// this package needs (auth, quota, permission, allocation events, relay
// socket factory; the quota and event hooks arrived in v4.1). It is
// pinned at v4.1.3: v4.1.4 moved to pion/transport/v4, which the
// pion/ice that go-libp2p's WebRTC transport pulls in does not build
// against. This package adds the policy around it: credentials, limits,
// peer filtering, logging through slog.
//
// # Credentials
//
// TURN needs credentials; the supernode hands them out over the node's
// authenticated libp2p connection, so TURN itself never sees a DID key.
// They are short-lived credentials in the "TURN REST API" scheme
// (draft-uberti-behave-turn-rest), which coturn implements too and WebRTC
// applications take as they are:
//
//	username = "<unix expiry time>:<user>"
//	password = base64(HMAC-SHA1(secret, username))
//
// The server keeps no table of users: it recomputes the password from the
// username and its secret, and refuses a username that is malformed, has
// expired (by Config.Now) or comes with a realm other than Config.Realm.
// A wrong password fails pion's MESSAGE-INTEGRITY check. Every refusal is
// logged with the reason and the username, never the password. pion ships
// helpers for this scheme (GenerateLongTermTURNRESTCredentials,
// LongTermTURNRESTAuthHandler), but they read the wall clock, take the
// secret as a string and log through pion's logger; this package computes
// the same values (its tests check that the two agree) with an injected
// clock, a realm check and slog.
//
// Expiry is checked on every authenticated request (Allocate, Refresh,
// CreatePermission, ChannelBind), so an allocation outlives its
// credential by at most one allocation lifetime (10 minutes by default;
// a client may ask for up to an hour).
//
// # What is relayed
//
//   - STUN Binding requests are answered on both listeners, without
//     credentials.
//   - TURN allocations (RFC 8656) over UDP or TCP to the server; the relayed
//     address is always UDP over IPv4 (pion allocates "udp4"), on
//     Config.RelayAddress, with ports from MinPort-MaxPort.
//   - Not relayed: TCP relays (RFC 6062 Connect), IPv6 relayed addresses,
//     TLS/DTLS to the server (TURN payloads are end-to-end encrypted by
//     the applications, e.g. DTLS in WebRTC), and, unless Config.AllowPeer
//     says otherwise, peers in loopback, private, link-local, multicast or
//     otherwise non-global ranges, so a TURN client cannot reach the
//     supernode's own services or its LAN.
//
// # Limits
//
// Allocations are bounded per user (Config.MaxAllocationsPerUser, counted
// by the user part of the username, so fresh credentials do not reset the
// count; refused with 486 Allocation Quota Reached), per client address
// (Config.MaxAllocationsPerAddr, an IPv4 address or an IPv6 /64: users
// are DIDs, which anyone can make by the thousand; also 486) and in total
// (Config.MaxAllocations; refused with 508 Insufficient Capacity). pion
// drops packets it cannot parse and answers malformed requests with an
// error response; neither stops the server. Not limited here: bandwidth
// per allocation, and the number of open TCP connections to the server.
package turn

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	pionturn "github.com/pion/turn/v4"

	"github.com/pc2/pc2/internal/netaddr"
)

// Defaults for zero Config fields.
const (
	DefaultRealm                 = "pc2"
	DefaultRelayListen           = "0.0.0.0"
	DefaultMaxAllocationsPerUser = 10
	DefaultMaxAllocationsPerAddr = 30
	DefaultMaxAllocations        = 1000
	DefaultCredentialTTL         = time.Hour
)

// Config configures a Server. The zero value is usable once UDP or TCP is
// set and RelayAddress is known (set, or the UDP listener is bound to a
// specific IPv4 address).
type Config struct {
	// Realm is the TURN realm; empty means DefaultRealm.
	Realm string

	// Secret is the HMAC key for credentials. Empty means a random secret
	// chosen by New: fine when the same process issues the credentials
	// (Server.Credentials), but then they die with the process. Set it
	// to share credentials between processes or across restarts.
	Secret []byte

	// UDP and TCP are the already-bound STUN/TURN listeners (3478 in
	// production, port 0 in tests). Either may be nil, not both. The
	// Server owns them once New succeeds: Close closes them.
	UDP net.PacketConn
	TCP net.Listener

	// RelayAddress is the public IPv4 address put into relayed addresses.
	// Nil means the UDP listener's address if that is a specific IPv4
	// address; New fails otherwise.
	RelayAddress net.IP

	// RelayListen is the IPv4 address relay sockets are bound on; empty
	// means DefaultRelayListen (all interfaces).
	RelayListen string

	// MinPort and MaxPort bound the relay ports (inclusive). Both zero
	// means any port the kernel picks.
	MinPort, MaxPort uint16

	// MaxAllocationsPerUser bounds the live allocations of one user;
	// <= 0 means DefaultMaxAllocationsPerUser.
	MaxAllocationsPerUser int

	// MaxAllocationsPerAddr bounds the live allocations from one client
	// address (netaddr.ClientKey), all users together; <= 0 means
	// DefaultMaxAllocationsPerAddr.
	MaxAllocationsPerAddr int

	// MaxAllocations bounds the live allocations of the whole server;
	// <= 0 means DefaultMaxAllocations.
	MaxAllocations int

	// AllowPeer says whether clients may send to and receive from a peer
	// address; nil means PublicPeer. Tests on loopback allow everything.
	AllowPeer func(peer netip.Addr) bool

	// URIs are returned in Credentials. Nil means URIs made from
	// RelayAddress and the listeners' ports.
	URIs []string

	// ListenPacket opens relay sockets; nil means net.ListenPacket. The
	// network is always "udp4".
	ListenPacket func(network, address string) (net.PacketConn, error)

	// Logger receives refusals and pion's own messages; nil discards them.
	Logger *slog.Logger

	// Now is the clock for credential expiry; nil means time.Now.
	Now func() time.Time
}

// Credentials are short-lived TURN credentials for one user, in the shape
// of the TURN REST API's response.
type Credentials struct {
	Username string    // "<unix expiry>:<user>"
	Password string    // base64(HMAC-SHA1(secret, Username))
	Expires  time.Time // when the server starts refusing them
	URIs     []string  // e.g. "turn:203.0.113.7:3478?transport=udp"
}

// Server is a running STUN/TURN server.
type Server struct {
	realm  string
	secret []byte
	uris   []string
	now    func() time.Time
	log    *slog.Logger
	pion   *pionturn.Server
	relays *relayAllocator
	quota  *quota

	closeOnce sync.Once
	closeErr  error
}

// New starts serving STUN and TURN on cfg.UDP and cfg.TCP.
func New(cfg Config) (*Server, error) {
	if cfg.UDP == nil && cfg.TCP == nil {
		return nil, errors.New("turn: no listener: set Config.UDP or Config.TCP")
	}
	s := &Server{
		realm:  cfg.Realm,
		secret: cfg.Secret,
		now:    cfg.Now,
		log:    cfg.Logger,
	}
	if s.realm == "" {
		s.realm = DefaultRealm
	}
	if len(s.secret) == 0 {
		s.secret = make([]byte, 32)
		rand.Read(s.secret)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	relayIP, err := relayAddress(cfg)
	if err != nil {
		return nil, err
	}
	if (cfg.MinPort == 0) != (cfg.MaxPort == 0) || cfg.MinPort > cfg.MaxPort {
		return nil, fmt.Errorf("turn: bad relay port range %d-%d", cfg.MinPort, cfg.MaxPort)
	}
	listenAddr := cfg.RelayListen
	if listenAddr == "" {
		listenAddr = DefaultRelayListen
	}
	if ip, err := netip.ParseAddr(listenAddr); err != nil || !ip.Unmap().Is4() {
		return nil, fmt.Errorf("turn: RelayListen %q is not an IPv4 address", listenAddr)
	}
	maxTotal := cfg.MaxAllocations
	if maxTotal <= 0 {
		maxTotal = DefaultMaxAllocations
	}
	perUser := cfg.MaxAllocationsPerUser
	if perUser <= 0 {
		perUser = DefaultMaxAllocationsPerUser
	}
	perAddr := cfg.MaxAllocationsPerAddr
	if perAddr <= 0 {
		perAddr = DefaultMaxAllocationsPerAddr
	}
	listen := cfg.ListenPacket
	if listen == nil {
		listen = net.ListenPacket
	}
	allow := cfg.AllowPeer
	if allow == nil {
		allow = PublicPeer
	}

	s.uris = cfg.URIs
	if s.uris == nil {
		s.uris = defaultURIs(relayIP, cfg.UDP, cfg.TCP)
	}
	s.relays = &relayAllocator{
		listen:  listen,
		addr:    listenAddr,
		public:  relayIP,
		minPort: cfg.MinPort,
		maxPort: cfg.MaxPort,
		limit:   maxTotal,
		log:     s.log,
		conns:   make(map[*relayConn]struct{}),
	}
	s.quota = &quota{
		limit:      perUser,
		addrLimit:  perAddr,
		now:        s.now,
		log:        s.log,
		active:     make(map[string]int),
		activeAddr: make(map[string]int),
		pending:    make(map[string]pendingAlloc),
	}

	permit := func(client net.Addr, peer net.IP) bool {
		a, ok := netip.AddrFromSlice(peer)
		if ok && allow(a.Unmap()) {
			return true
		}
		s.log.Info("turn: peer refused", "client", client.String(), "peer", peer.String())
		return false
	}
	pcfg := pionturn.ServerConfig{
		Realm:         s.realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.quota.admit,
		LoggerFactory: pionLoggerFactory{s.log},
		EventHandler: pionturn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.quota.created,
			OnAllocationDeleted: s.quota.deleted,
			OnAllocationError:   s.quota.failed,
		},
	}
	if cfg.UDP != nil {
		pcfg.PacketConnConfigs = []pionturn.PacketConnConfig{{
			PacketConn:            cfg.UDP,
			RelayAddressGenerator: s.relays,
			PermissionHandler:     permit,
		}}
	}
	if cfg.TCP != nil {
		pcfg.ListenerConfigs = []pionturn.ListenerConfig{{
			Listener:              cfg.TCP,
			RelayAddressGenerator: s.relays,
			PermissionHandler:     permit,
		}}
	}
	s.pion, err = pionturn.NewServer(pcfg)
	if err != nil {
		return nil, fmt.Errorf("turn: start server: %w", err)
	}
	attrs := []any{"realm", s.realm, "relay", relayIP.String(), "max_allocations", maxTotal, "max_per_user", perUser}
	if cfg.UDP != nil {
		attrs = append(attrs, "udp", cfg.UDP.LocalAddr().String())
	}
	if cfg.TCP != nil {
		attrs = append(attrs, "tcp", cfg.TCP.Addr().String())
	}
	s.log.Info("turn: serving", attrs...)
	return s, nil
}

// relayAddress returns cfg.RelayAddress or derives it from the UDP
// listener.
func relayAddress(cfg Config) (net.IP, error) {
	ip := cfg.RelayAddress
	if ip == nil && cfg.UDP != nil {
		if ua, ok := cfg.UDP.LocalAddr().(*net.UDPAddr); ok && !ua.IP.IsUnspecified() {
			ip = ua.IP
		}
	}
	if ip == nil {
		return nil, errors.New("turn: Config.RelayAddress is required when the UDP listener is not bound to a specific address")
	}
	ip4 := ip.To4()
	if ip4 == nil || ip4.IsUnspecified() {
		return nil, fmt.Errorf("turn: RelayAddress %s is not a usable IPv4 address (relays are IPv4 only)", ip)
	}
	return ip4, nil
}

func defaultURIs(relay net.IP, udp net.PacketConn, tcp net.Listener) []string {
	var uris []string
	if udp != nil {
		if ua, ok := udp.LocalAddr().(*net.UDPAddr); ok {
			hp := net.JoinHostPort(relay.String(), strconv.Itoa(ua.Port))
			uris = append(uris, "stun:"+hp, "turn:"+hp+"?transport=udp")
		}
	}
	if tcp != nil {
		if ta, ok := tcp.Addr().(*net.TCPAddr); ok {
			hp := net.JoinHostPort(relay.String(), strconv.Itoa(ta.Port))
			uris = append(uris, "turn:"+hp+"?transport=tcp")
		}
	}
	return uris
}

// Credentials issues credentials for user (a DID, say) valid for ttl
// (<= 0 means DefaultCredentialTTL), to the second. The user must not be
// empty; it is what the per-user allocation limit counts.
func (s *Server) Credentials(user string, ttl time.Duration) Credentials {
	if ttl <= 0 {
		ttl = DefaultCredentialTTL
	}
	expires := time.Unix(s.now().Add(ttl).Unix(), 0)
	username := strconv.FormatInt(expires.Unix(), 10) + ":" + user
	return Credentials{
		Username: username,
		Password: password(s.secret, username),
		Expires:  expires,
		URIs:     append([]string(nil), s.uris...),
	}
}

// Allocations returns the number of live allocations.
func (s *Server) Allocations() int {
	return s.relays.live()
}

// Close stops the server, closes the listeners it was given and every
// relay socket.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.pion.Close()
		// pion closes allocations from its read loops, after Close has
		// returned; close the relay sockets now so ports are free when
		// Close returns.
		s.relays.close()
		if err != nil {
			s.closeErr = fmt.Errorf("turn: close: %w", err)
		}
		s.log.Info("turn: stopped")
	})
	return s.closeErr
}

// PublicPeer is the default Config.AllowPeer: it allows only public
// unicast addresses (netaddr.Public), so a client cannot use the relay to
// reach the supernode itself (loopback) or the networks behind it.
func PublicPeer(a netip.Addr) bool { return netaddr.Public(a) }
