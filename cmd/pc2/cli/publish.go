package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

func init() {
	register("publish", "publish a did, name or domain record to the DHT", runPublish)
}

const publishUsage = `usage:
  pc2 publish [did] --key FILE --bootstrap MULTIADDR [--direct MULTIADDR]... [--supernode MULTIADDR]... [--name FQDN]... [--service NAME=ENDPOINT]... [--ttl 24h]
  pc2 publish domain --operator-key FILE --domain DOMAIN --bootstrap MULTIADDR [--gateway MULTIADDR]... [--tls auto|end-to-end|gateway] [--mesh] [--ttl 2160h]
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

// loadKeyID loads a key file and returns the key with its ID.
func loadKeyID(path string) (key ed25519.PrivateKey, id identity.ID, err error) {
	k, err := identity.LoadKeyFile(path)
	if err != nil {
		return nil, id, err
	}
	id, err = idOf(k)
	return k, id, err
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
	key, id, err := loadKeyID(*keyFile)
	if err != nil {
		return err
	}
	rec := &records.DID{Version: records.Version, ID: id, Direct: direct, Names: names}
	for _, s := range supernodes {
		p, err := parsePeer("supernode", s)
		if err != nil {
			return err
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
	seq, res, err := cf.publishNext(ctx, env, records.DIDKey(id), func(seq uint64, now time.Time) ([]byte, error) {
		rec.Seq, rec.IssuedAt, rec.Expires = seq, now.Unix(), now.Add(*ttl).Unix()
		return records.SignDID(key, rec)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published %s seq %d expires %s (stored on %d of %d peers)\n", id.DID(), seq, fmtTime(rec.Expires), res.Stored, res.Sent)
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
	mesh := fs.Bool("mesh", false, "let the gateways of other operators that trust this domain serve its names to visitors who reach them")
	tlsMode := fs.String("tls", "auto", "where visitors' TLS ends: auto (at the node once it has a certificate), end-to-end (only at the node) or gateway (only at the gateways)")
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
	if err := records.ValidTLSMode(*tlsMode); err != nil {
		return usageErr("--tls: %v", err)
	}
	if *tlsMode == "auto" {
		*tlsMode = records.TLSAuto
	}
	op, opID, err := loadKeyID(*opFile)
	if err != nil {
		return err
	}
	rec := &records.Domain{Version: records.Version, Domain: *domain, Operator: opID, TLS: *tlsMode, Mesh: *mesh}
	for _, g := range gateways {
		p, err := parsePeer("gateway", g)
		if err != nil {
			return err
		}
		rec.Gateways = append(rec.Gateways, p)
	}
	seq, res, err := cf.publishNext(ctx, env, records.DomainKey(*domain), func(seq uint64, now time.Time) ([]byte, error) {
		rec.Seq, rec.IssuedAt, rec.Expires = seq, now.Unix(), now.Add(*ttl).Unix()
		return records.SignDomain(op, rec)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published domain %s operator %s seq %d (stored on %d of %d peers)\n", *domain, opID.DID(), seq, res.Stored, res.Sent)
	return nil
}

// publishName signs both halves of a name record locally: the holder's
// claim and the operator's grant. It is the operator's tool (and the
// tests'); holders will claim names through a gateway's API instead.
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
	op, opID, err := loadKeyID(*opFile)
	if err != nil {
		return err
	}
	holder, holderID, err := loadKeyID(*keyFile)
	if err != nil {
		return err
	}
	seq, res, err := cf.publishNext(ctx, env, records.NameKey(*name), func(seq uint64, now time.Time) ([]byte, error) {
		var claim *records.SignedClaim
		if st != records.StatusRevoked {
			nonce := make([]byte, 16)
			if _, err := rand.Read(nonce); err != nil {
				return nil, err
			}
			sc, err := records.SignClaim(holder, &records.Claim{Version: records.Version, Name: *name, DID: holderID, Action: action, IssuedAt: now.Unix(), Nonce: nonce})
			if err != nil {
				return nil, err
			}
			claim = &sc
		}
		return records.SignGrant(op, &records.Grant{Version: records.Version, Name: *name, DID: holderID, Seq: seq, Status: st,
			IssuedAt: now.Unix(), Expires: now.Add(*ttl).Unix(), Operator: opID}, claim)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published name %s -> %s (%s) seq %d (stored on %d of %d peers)\n", *name, holderID.DID(), st, seq, res.Stored, res.Sent)
	return nil
}
