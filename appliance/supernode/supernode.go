package supernode

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pc2/pc2/internal/atomicfile"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backoff"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/relay/relayserver"
)

// Options are what the caller injects besides the config.
type Options struct {
	Logger *slog.Logger
	// Ready, if set, is called with the node's full multiaddrs once it
	// listens.
	Ready func(addrs []string)
	// TURNPacketConn and TURNListener, if set, are the STUN/TURN server's
	// UDP and TCP listeners instead of Config.TURNListen's.
	TURNPacketConn net.PacketConn
	TURNListener   net.Listener
	// GatewayHTTPListener, if set, is the gateway's plain HTTP listener
	// instead of Config.Gateway.HTTPListen's.
	GatewayHTTPListener net.Listener
	// GatewayHTTPSListener, if set, is the gateway's HTTPS listener
	// instead of Config.Gateway.HTTPSListen's.
	GatewayHTTPSListener net.Listener
	// MetricsListener, if set, serves the metrics instead of
	// Config.MetricsListen's address.
	MetricsListener net.Listener
	// Running, if set, is called after Ready with the DHT node and the
	// relay, for benchmarks that look inside a running supernode.
	Running func(*dht.Node, *relayserver.Relay)
}

// Run starts the supernode's services and blocks until ctx ends.
func Run(ctx context.Context, cfg *Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, created, err := identity.LoadOrCreateKeyFile(cfg.KeyFile, cfg.CreateKey)
	if err != nil {
		return err
	}
	if created {
		log.Info("created a new supernode identity; write down its words and delete the file", "words_file", identity.WordsFile(cfg.KeyFile))
	}
	trust, err := cfg.Trust()
	if err != nil {
		return err
	}
	boot, err := dht.ParseAddrInfos(cfg.Bootstrap)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// With HTTPS, port 443 serves the relay too (relay.<domain>, for
	// nodes behind firewalls that let only TCP 443 out): the gateway
	// hands those connections to a libp2p secure WebSocket listener on
	// loopback, which terminates TLS with the gateway's certificate for
	// the name (set once the gateway's certificates are).
	listenAddrs := cfg.Listen
	var wsTLS *tls.Config
	var relayCert atomic.Pointer[func(*tls.ClientHelloInfo) (*tls.Certificate, error)]
	if cfg.Gateway != nil && cfg.Gateway.HTTPSListen != "" {
		if len(listenAddrs) == 0 {
			listenAddrs = dht.DefaultListenAddrs
		}
		listenAddrs = append(slices.Clone(listenAddrs), "/ip4/127.0.0.1/tcp/0/tls/ws")
		wsTLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if f := relayCert.Load(); f != nil {
				return (*f)(h)
			}
			return nil, errors.New("supernode: the gateway's certificates are not ready yet")
		}}
	}
	reg, err := startMetrics(ctx, cfg, opts, log.With("service", "metrics"))
	if err != nil {
		return err
	}
	maxNodes := sizeForFDs(cmp.Or(cfg.MaxNodes, dht.DefaultServerPeers), raiseFDLimit, log)
	tuneGC(ctx, log.With("service", "gc"))
	node, err := dht.New(ctx, dht.Config{
		Key:               key,
		Mode:              dht.ModeServer,
		Limits:            dht.Limits{Peers: maxNodes},
		Metrics:           reg,
		ListenAddrs:       listenAddrs,
		Announce:          cfg.Announce,
		WebSocketTLS:      wsTLS,
		Bootstrap:         boot,
		DataDir:           filepath.Join(cfg.DataDir, "records"),
		Trust:             trust,
		PublicDialsOnly:   !cfg.AllowPrivateDials,
		RepublishInterval: time.Duration(cfg.RepublishInterval),
		ReplicateInterval: time.Duration(cfg.ReplicateInterval),
		Logger:            log.With("service", "dht"),
	})
	if err != nil {
		return err
	}
	defer node.Close()

	turnSrv, err := startTURN(cfg, opts, log.With("service", "turn"))
	if err != nil {
		return err
	}
	rc := relayserver.Config{
		Host: node.Host(), ListenIP: cfg.RelayListenIP, PortMin: cfg.RelayPortMin, PortMax: cfg.RelayPortMax,
		PortsFile: filepath.Join(cfg.DataDir, "relay-ports.json"), Logger: log.With("service", "relay"),
		Limits: relay.Limits{BytesPerSecond: cfg.RelayBytesPerSecond}, MaxNodes: maxNodes, Metrics: reg,
	}
	// Other supernodes' gateways forward to nodes attached here only if
	// the operator of a domain trusted here (served or of the mesh)
	// lists them.
	var domains []string
	for _, d := range slices.Concat(cfg.Domains, cfg.Mesh) {
		domains = append(domains, d.Domain)
	}
	gws, err := dht.NewGatewaySet(dht.GatewaysConfig{Resolve: node.ResolveDomain, Domains: func() []string { return domains },
		Logger: log.With("service", "gateways")})
	if err != nil {
		return err
	}
	rc.Forwarders = gws.Allowed
	if turnSrv != nil {
		defer turnSrv.Close()
		rc.TURN = TURNIssuer(turnSrv, time.Duration(cfg.TURNCredentialTTL))
		if err := turnMetrics(reg, turnSrv.Allocations); err != nil {
			return err
		}
	}
	rel, err := relayserver.New(rc)
	if err != nil {
		return err
	}
	defer rel.Close()
	if cfg.Gateway != nil {
		stop, err := startGateway(cfg, opts, node, key, rel, gws, &relayCert, reg, log.With("service", "gateway"))
		if err != nil {
			return err
		}
		defer stop()
	}

	var addrs []string
	for _, a := range node.Multiaddrs() {
		addrs = append(addrs, a.String())
	}
	id, _ := node.ID()
	log.Info("supernode up", "did", id.DID(), "addrs", addrs, "domains", len(trust))
	if cfg.AddrsFile != "" {
		if err := atomicfile.Write(cfg.AddrsFile, []byte(strings.Join(addrs, "\n")+"\n"), 0o644); err != nil {
			return fmt.Errorf("addrs file: %w", err)
		}
	}
	if opts.Ready != nil {
		opts.Ready(addrs)
	}
	if opts.Running != nil {
		opts.Running(node, rel)
	}
	var served []string
	for _, d := range cfg.Domains {
		served = append(served, d.Domain)
	}
	go keepPresence(ctx, node, key, served, log)

	// Other supernodes may start later than this one: keep trying to join
	// until one answers, with capped exponential backoff.
	if len(boot) > 0 {
		go func() {
			err := backoff.Retry(ctx, backoff.Policy{}, func(ctx context.Context, _ int) error {
				bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
				return node.Bootstrap(bctx)
			}, func(_ int, err error, wait time.Duration) {
				log.Warn("bootstrap failed, retrying", "err", err, "in", wait)
			})
			if err == nil {
				log.Info("joined the DHT", "peers", node.DHT().RoutingTable().Size())
			}
		}()
	}
	<-ctx.Done()
	log.Info("supernode stopping")
	return nil
}

// listen returns ln, the caller's listener (tests, the device), if set,
// else a new one on addr.
func listen(ln net.Listener, network, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	return net.Listen(network, addr)
}
