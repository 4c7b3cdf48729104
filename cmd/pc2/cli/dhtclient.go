package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

// multiFlag collects a repeatable flag; each value may also be a
// comma-separated list.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

// clientFlags are the flags every command that talks to the DHT shares.
type clientFlags struct {
	bootstrap multiFlag
	trust     multiFlag
	timeout   time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.Var(&c.bootstrap, "bootstrap", "supernode `multiaddr` with /p2p/<id> (repeatable)")
	fs.Var(&c.trust, "trust", "pin a domain operator: `domain=did:boson:...` (repeatable)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up after this long")
}

// client starts a DHT client node with a throwaway key (its identity does
// not matter: records carry their own signatures) and joins via the
// bootstrap supernodes.
func (c *clientFlags) client(ctx context.Context, env Env) (*dht.Node, error) {
	if len(c.bootstrap) == 0 {
		return nil, usageErr("--bootstrap is required (a supernode multiaddr)")
	}
	boot, err := dht.ParseAddrInfos(c.bootstrap)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	trust := records.TrustMap{}
	for _, t := range c.trust {
		dom, did, ok := strings.Cut(t, "=")
		if !ok {
			return nil, usageErr("--trust %q: want domain=did:boson:...", t)
		}
		id, err := identity.ParseDID(did)
		if err != nil {
			return nil, usageErr("--trust %q: %v", t, err)
		}
		trust[dom] = id
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	node, err := dht.New(ctx, dht.Config{
		Key:                 key,
		Mode:                dht.ModeClient,
		Bootstrap:           boot,
		Trust:               trust,
		AllowUnknownDomains: true,
		Logger:              env.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := node.Bootstrap(ctx); err != nil {
		node.Close()
		return nil, err
	}
	return node, nil
}

// joined bounds ctx by --timeout and joins the DHT as client does; stop
// leaves it and ends the bound.
func (c *clientFlags) joined(ctx context.Context, env Env) (context.Context, *dht.Node, func(), error) {
	ctx, cancel := withTimeout(ctx, c.timeout)
	node, err := c.client(ctx, env)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, node, func() { node.Close(); cancel() }, nil
}

func fmtTime(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// parsePeer turns a full multiaddr (with /p2p/<id>) into a record peer.
func parsePeer(flagName, s string) (records.Peer, error) {
	infos, err := dht.ParseAddrInfos([]string{s})
	if err != nil {
		return records.Peer{}, usageErr("--%s: %v", flagName, err)
	}
	id, err := dht.PeerToID(infos[0].ID)
	if err != nil {
		return records.Peer{}, usageErr("--%s %s: %v", flagName, s, err)
	}
	p := records.Peer{ID: id}
	for _, a := range infos[0].Addrs {
		p.Addrs = append(p.Addrs, a.String())
	}
	return p, nil
}

// publishNext joins the DHT, reads the seq of the record now stored under
// key (0 if none), and puts the record sign makes for the next seq, checking
// that the supernodes kept it.
func (c *clientFlags) publishNext(ctx context.Context, env Env, key string, sign func(seq uint64, now time.Time) ([]byte, error)) (uint64, dht.PutResult, error) {
	ctx, node, stop, err := c.joined(ctx, env)
	if err != nil {
		return 0, dht.PutResult{}, err
	}
	defer stop()
	cur, err := node.CurrentSeq(ctx, key)
	if err != nil {
		return 0, dht.PutResult{}, err
	}
	now := time.Now()
	seq := dht.NextSeq(cur, now)
	val, err := sign(seq, now)
	if err != nil {
		return 0, dht.PutResult{}, err
	}
	res, err := node.PutVerified(ctx, key, val)
	return seq, res, err
}
