package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
)

func init() {
	register("resolve", "resolve a DID or a name through the DHT and print the verified record", runResolve)
}

func runResolve(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("resolve", env)
	var cf clientFlags
	cf.register(fs)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErr("usage: pc2 resolve --bootstrap MULTIADDR <did:boson:...|name.domain>")
	}
	target := rest[0]
	var (
		isName bool
		id     identity.ID
	)
	switch {
	case strings.HasPrefix(target, "did:"):
		if id, err = identity.ParseDID(target); err != nil {
			return usageErr("%v", err)
		}
	case strings.Contains(target, "."):
		isName = true
	default:
		if id, err = identity.ParseID(target); err != nil {
			return usageErr("%q is neither a DID, a node ID nor a name: %v", target, err)
		}
	}

	ctx, node, stop, err := cf.joined(ctx, env)
	if err != nil {
		return err
	}
	defer stop()

	var out any
	if isName {
		res, err := node.ResolveName(ctx, strings.ToLower(target))
		if err != nil {
			return notFound(err)
		}
		out = struct {
			Type string `json:"type"`
			*dht.NameResolution
		}{"name", res}
	} else {
		d, err := node.ResolveDID(ctx, id)
		if err != nil {
			return notFound(err)
		}
		out = struct {
			Type   string `json:"type"`
			Record any    `json:"record"`
		}{"did", d}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s\n", b)
	return nil
}

// notFound keeps exit status 1 for "no such record" with a plain message.
func notFound(err error) error {
	if errors.Is(err, dht.ErrNotFound) {
		return &ExitError{Code: 1, Err: fmt.Errorf("not found: %w", err)}
	}
	return err
}
