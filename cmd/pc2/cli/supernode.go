package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/pc2/pc2/appliance/supernode"
)

func init() {
	register("supernode", "run a supernode (DHT server) from a JSON config", runSupernode)
}

func runSupernode(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("supernode", env)
	cfgPath := fs.String("config", "", "supernode config `file` (JSON)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *cfgPath == "" {
		return usageErr("usage: pc2 supernode --config FILE")
	}
	cfg, err := supernode.LoadConfig(*cfgPath)
	if err != nil {
		if errors.Is(err, supernode.ErrNotConfigured) {
			return &ExitError{Code: 125, Err: err}
		}
		return err
	}
	return supernode.Run(ctx, cfg, supernode.Options{
		Logger: env.logger(),
		Ready: func(addrs []string) {
			for _, a := range addrs {
				fmt.Fprintln(env.Stdout, "listening", a)
			}
		},
	})
}
