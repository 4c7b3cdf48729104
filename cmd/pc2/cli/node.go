package cli

import (
	"context"

	"github.com/pc2/pc2/appliance/personal"
)

func init() {
	register("node", "run a personal node (identity, did record, status page) from a JSON config", runNode)
}

func runNode(ctx context.Context, env Env, args []string) error {
	path, err := configFlag(env, "node", args)
	if err != nil {
		return err
	}
	cfg, err := personal.LoadConfig(path)
	if err != nil {
		return notConfigured(err)
	}
	return personal.Run(ctx, cfg, personal.Options{Logger: env.logger(), Version: Version})
}
