package cli

import (
	"context"
	"errors"

	"github.com/pc2/pc2/appliance/personal"
)

func init() {
	register("node", "run a personal node (identity, did record, status page) from a JSON config", runNode)
}

func runNode(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("node", env)
	cfgPath := fs.String("config", "", "personal node config `file` (JSON)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *cfgPath == "" {
		return usageErr("usage: pc2 node --config FILE")
	}
	cfg, err := personal.LoadConfig(*cfgPath)
	if err != nil {
		if errors.Is(err, personal.ErrNotConfigured) {
			return &ExitError{Code: 125, Err: err}
		}
		return err
	}
	return personal.Run(ctx, cfg, personal.Options{Logger: env.logger(), Version: Version})
}
