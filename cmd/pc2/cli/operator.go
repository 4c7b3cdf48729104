package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pc2/pc2/internal/atomicfile"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

func init() {
	register("operator", "a domain operator's tools: delegate granting to a supernode, revoke a name", runOperator)
}

const operatorUsage = `usage:
  pc2 operator delegate --operator-key FILE --domain DOMAIN --supernode DID|MULTIADDR [--ttl 2160h] --out FILE [--bootstrap MULTIADDR]
  pc2 operator revoke   --operator-key FILE --reason TEXT --bootstrap MULTIADDR NAME
delegate signs the operator's delegation that lets a supernode grant names
of DOMAIN with its own key (its config's gateway.delegations); the operator
key stays with the operator. Given the supernode's full multiaddr and
--bootstrap, it also lists the supernode in the domain's record, so nodes
discover it and the domain's nodes and relays take its forwarded visitors. revoke takes NAME back from its holder, without
the holder's key, and publishes the revocation to the DHT: every gateway
stops serving the name, and the holder's dashboard shows REASON.`

func runOperator(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return usageErr("%s", operatorUsage)
	}
	switch args[0] {
	case "delegate":
		return operatorDelegate(ctx, env, args[1:])
	case "revoke":
		return operatorRevoke(ctx, env, args[1:])
	}
	return usageErr("unknown operator command %q\n%s", args[0], operatorUsage)
}

func operatorDelegate(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("operator delegate", env)
	var cf clientFlags
	cf.register(fs)
	opFile := fs.String("operator-key", "", "the domain operator's key `file`")
	domain := fs.String("domain", "", "the `domain` whose names the supernode may grant")
	super := fs.String("supernode", "", "the supernode: its `did`:boson:..., or its full multiaddr (/p2p/<id>) to list it too")
	ttl := fs.Duration("ttl", 90*24*time.Hour, "how long the delegation lasts (at most 400 days); sign a new one before")
	out := fs.String("out", "", "write the delegation to this `file`")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *opFile == "" || *domain == "" || *super == "" || *out == "" {
		return usageErr("%s", operatorUsage)
	}
	var listed *records.Peer
	sid, err := identity.ParseDID(*super)
	if err != nil {
		p, perr := parsePeer("supernode", *super)
		if perr != nil {
			return usageErr("--supernode: neither a DID (%v) nor a full multiaddr (%v)", err, perr)
		}
		sid, listed = p.ID, &p
	}
	if listed != nil && len(cf.bootstrap) == 0 {
		return usageErr("--supernode as a multiaddr lists it in the domain record: give --bootstrap too")
	}
	op, opID, err := loadKeyID(*opFile)
	if err != nil {
		return err
	}
	now := time.Now()
	sd, err := records.SignDelegation(op, &records.Delegation{Version: records.Version, Domain: *domain, Operator: opID,
		Supernode: sid, IssuedAt: now.Unix(), Expires: now.Add(*ttl).Unix()})
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(sd, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(*out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "delegated granting names of %s to %s until %s: %s\n", *domain, sid.DID(), fmtTime(now.Add(*ttl).Unix()), *out)
	if listed == nil {
		return nil
	}
	ctx, node, stop, err := cf.joined(ctx, env)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := node.ListPeer(ctx, *domain, *listed, dht.DomainOptions{}, op); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "listed %s in the record of %s\n", sid.DID(), *domain)
	return nil
}

func operatorRevoke(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("operator revoke", env)
	var cf clientFlags
	cf.register(fs)
	opFile := fs.String("operator-key", "", "the domain operator's key `file`")
	reason := fs.String("reason", "", "why, shown to the holder (at most 256 bytes)")
	ttl := fs.Duration("ttl", 90*24*time.Hour, "how long the revocation stands (at most 400 days)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || *opFile == "" || *reason == "" {
		return usageErr("%s", operatorUsage)
	}
	if len(*reason) > 256 {
		return usageErr("--reason is %d bytes, at most 256", len(*reason))
	}
	name := strings.ToLower(strings.TrimSuffix(rest[0], "."))
	if _, _, err := records.SplitName(name); err != nil {
		return usageErr("%v", err)
	}
	op, err := identity.LoadKeyFile(*opFile)
	if err != nil {
		return err
	}
	ctx, node, stop, err := cf.joined(ctx, env)
	if err != nil {
		return err
	}
	defer stop()
	g, res, err := node.RevokeName(ctx, name, op, *reason, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "revoked %s (held by %s): %s (stored on %d of %d peers)\n", name, g.DID.DID(), *reason, res.Stored, res.Sent)
	return nil
}
