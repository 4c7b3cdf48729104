package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/supernode"
)

func init() {
	register("supernode", "run a supernode (DHT server) from a JSON config", runSupernode)
}

func runSupernode(ctx context.Context, env Env, args []string) error {
	path, err := configFlag(env, "supernode", args)
	if err != nil {
		return err
	}
	cfg, err := supernode.LoadConfig(path)
	if err != nil {
		return notConfigured(err)
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

// configFlag parses the --config flag of a service command.
func configFlag(env Env, name string, args []string) (string, error) {
	fs := newFlagSet(name, env)
	path := fs.String("config", "", "config `file` (JSON)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return "", err
	}
	if len(rest) > 0 || *path == "" {
		return "", usageErr("usage: pc2 %s --config FILE", name)
	}
	return *path, nil
}

// notConfigured gives a missing config file gokrazy's exit status 125, so
// the supervisor does not restart a service that has nothing to do.
func notConfigured(err error) error {
	if errors.Is(err, config.ErrNotConfigured) {
		return &ExitError{Code: 125, Err: err}
	}
	return err
}
