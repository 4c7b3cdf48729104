package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

func init() {
	register("publish", "publish a did, name or domain record to the DHT", runPublish)
}

const publishUsage = `usage:
  pc2 publish [did] --key FILE --bootstrap MULTIADDR [--direct MULTIADDR]... [--supernode MULTIADDR]... [--name FQDN]... [--service NAME=ENDPOINT]... [--ttl 24h]
  pc2 publish domain --operator-key FILE --domain DOMAIN --bootstrap MULTIADDR [--gateway MULTIADDR]... [--ttl 2160h]
  pc2 publish name --operator-key FILE --key HOLDER_KEY --name FQDN --bootstrap MULTIADDR [--ttl 2160h] [--status active|released|revoked]`

func runPublish(ctx context.Context, env Env, args []string) error {
	kind := "did"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		kind, args = args[0], args[1:]
	}
	switch kind {
	case "did":
		return publishDID(ctx, env, args)
	case "domain":
		return publishDomain(ctx, env, args)
	case "name":
		return publishName(ctx, env, args)
	}
	return usageErr("unknown record type %q\n%s", kind, publishUsage)
}

func publishDID(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("publish did", env)
	var cf clientFlags
	cf.register(fs)
	keyFile := fs.String("key", "", "node key `file`")
	ttl := fs.Duration("ttl", 24*time.Hour, "record lifetime (at most 7 days)")
	var direct, supernodes, names, services multiFlag
	fs.Var(&direct, "direct", "a direct `multiaddr` of the node (repeatable)")
	fs.Var(&supernodes, "supernode", "a supernode the node is attached to, full `multiaddr` (repeatable)")
	fs.Var(&names, "name", "a `name` the node holds (repeatable)")
	fs.Var(&services, "service", "a service endpoint `name=endpoint` (repeatable)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *keyFile == "" {
		return usageErr("%s", publishUsage)
	}
	key, err := identity.LoadKeyFile(*keyFile)
	if err != nil {
		return err
	}
	id, err := keyID(key)
	if err != nil {
		return err
	}
	rec := &records.DID{Version: records.Version, ID: id, Direct: direct, Names: names}
	for _, s := range supernodes {
		infos, err := dht.ParseAddrInfos([]string{s})
		if err != nil {
			return usageErr("--supernode: %v", err)
		}
		sid, err := dht.PeerToID(infos[0].ID)
		if err != nil {
			return usageErr("--supernode %s: %v", s, err)
		}
		p := records.Peer{ID: sid}
		for _, a := range infos[0].Addrs {
			p.Addrs = append(p.Addrs, a.String())
		}
		rec.Supernodes = append(rec.Supernodes, p)
	}
	for _, s := range services {
		name, ep, ok := strings.Cut(s, "=")
		if !ok {
			return usageErr("--service %q: want name=endpoint", s)
		}
		rec.Services = append(rec.Services, records.Service{Name: name, Endpoint: ep})
	}

	ctx, cancel := withTimeout(ctx, cf.timeout)
	defer cancel()
	node, err := cf.client(ctx, env)
	if err != nil {
		return err
	}
	defer node.Close()
	var cur uint64
	if old, err := node.ResolveDID(ctx, id); err == nil {
		cur = old.Seq
	} else if !errors.Is(err, dht.ErrNotFound) {
		return err
	}
	now := time.Now()
	rec.Seq = nextSeq(cur, now)
	rec.IssuedAt, rec.Expires = now.Unix(), now.Add(*ttl).Unix()
	val, err := records.SignDID(key, rec)
	if err != nil {
		return err
	}
	res, err := node.PutVerified(ctx, records.DIDKey(id), val)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published %s seq %d expires %s (stored on %d of %d peers)\n", id.DID(), rec.Seq, fmtTime(rec.Expires), res.Stored, res.Sent)
	return nil
}

func publishDomain(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("publish domain", env)
	var cf clientFlags
	cf.register(fs)
	opFile := fs.String("operator-key", "", "operator key `file`")
	domain := fs.String("domain", "", "the `domain`, e.g. ela.city")
	ttl := fs.Duration("ttl", 90*24*time.Hour, "record lifetime (at most 400 days)")
	var gateways multiFlag
	fs.Var(&gateways, "gateway", "a gateway serving the domain, full `multiaddr` (repeatable)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *opFile == "" || *domain == "" {
		return usageErr("%s", publishUsage)
	}
	if err := records.ValidDomain(*domain); err != nil {
		return usageErr("--domain: %v", err)
	}
	op, err := identity.LoadKeyFile(*opFile)
	if err != nil {
		return err
	}
	opID, err := keyID(op)
	if err != nil {
		return err
	}
	rec := &records.Domain{Version: records.Version, Domain: *domain, Operator: opID}
	for _, g := range gateways {
		infos, err := dht.ParseAddrInfos([]string{g})
		if err != nil {
			return usageErr("--gateway: %v", err)
		}
		gid, err := dht.PeerToID(infos[0].ID)
		if err != nil {
			return usageErr("--gateway %s: %v", g, err)
		}
		p := records.Peer{ID: gid}
		for _, a := range infos[0].Addrs {
			p.Addrs = append(p.Addrs, a.String())
		}
		rec.Gateways = append(rec.Gateways, p)
	}
	ctx, cancel := withTimeout(ctx, cf.timeout)
	defer cancel()
	node, err := cf.client(ctx, env)
	if err != nil {
		return err
	}
	defer node.Close()
	var cur uint64
	if old, err := node.ResolveDomain(ctx, *domain); err == nil {
		cur = old.Seq
	} else if !errors.Is(err, dht.ErrNotFound) {
		return err
	}
	now := time.Now()
	rec.Seq = nextSeq(cur, now)
	rec.IssuedAt, rec.Expires = now.Unix(), now.Add(*ttl).Unix()
	val, err := records.SignDomain(op, rec)
	if err != nil {
		return err
	}
	res, err := node.PutVerified(ctx, records.DomainKey(*domain), val)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published domain %s operator %s seq %d (stored on %d of %d peers)\n", *domain, opID.DID(), rec.Seq, res.Stored, res.Sent)
	return nil
}

// publishName signs both halves of a name record locally: the holder's
// claim and the operator's grant. It is the operator's tool (and the
// tests'); holders claim names through a gateway's API instead.
func publishName(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("publish name", env)
	var cf clientFlags
	cf.register(fs)
	opFile := fs.String("operator-key", "", "operator key `file`")
	keyFile := fs.String("key", "", "holder's node key `file`")
	name := fs.String("name", "", "fully qualified `name`, e.g. alice.ela.city")
	ttl := fs.Duration("ttl", 90*24*time.Hour, "grant lifetime (at most 400 days)")
	status := fs.String("status", "active", "active, released or revoked")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *opFile == "" || *keyFile == "" || *name == "" {
		return usageErr("%s", publishUsage)
	}
	if _, _, err := records.SplitName(*name); err != nil {
		return usageErr("--name: %v", err)
	}
	var st records.Status
	var action records.Action
	switch *status {
	case "active":
		st, action = records.StatusActive, records.ActionHold
	case "released":
		st, action = records.StatusReleased, records.ActionRelease
	case "revoked":
		st = records.StatusRevoked
	default:
		return usageErr("--status %q: want active, released or revoked", *status)
	}
	op, err := identity.LoadKeyFile(*opFile)
	if err != nil {
		return err
	}
	holder, err := identity.LoadKeyFile(*keyFile)
	if err != nil {
		return err
	}
	opID, err := keyID(op)
	if err != nil {
		return err
	}
	holderID, err := keyID(holder)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, cf.timeout)
	defer cancel()
	node, err := cf.client(ctx, env)
	if err != nil {
		return err
	}
	defer node.Close()
	var cur uint64
	if old, err := node.Get(ctx, records.NameKey(*name)); err == nil {
		if n, err := node.Validator().ParseName(records.NameKey(*name), old); err == nil {
			cur = n.Grant.Seq
		}
	} else if !errors.Is(err, dht.ErrNotFound) {
		return err
	}
	now := time.Now()
	var claim *records.SignedClaim
	if st != records.StatusRevoked {
		nonce := make([]byte, 16)
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		sc, err := records.SignClaim(holder, &records.Claim{Version: records.Version, Name: *name, DID: holderID, Action: action, IssuedAt: now.Unix(), Nonce: nonce})
		if err != nil {
			return err
		}
		claim = &sc
	}
	g := &records.Grant{Version: records.Version, Name: *name, DID: holderID, Seq: nextSeq(cur, now), Status: st,
		IssuedAt: now.Unix(), Expires: now.Add(*ttl).Unix(), Operator: opID}
	val, err := records.SignGrant(op, g, claim)
	if err != nil {
		return err
	}
	res, err := node.PutVerified(ctx, records.NameKey(*name), val)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published name %s -> %s (%s) seq %d (stored on %d of %d peers)\n", *name, holderID.DID(), st, g.Seq, res.Stored, res.Sent)
	return nil
}
