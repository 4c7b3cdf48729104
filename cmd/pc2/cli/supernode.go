package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/supernode"
)

func init() {
	register("supernode", "run a supernode (DHT server) from a JSON config", runSupernode)
}

func runSupernode(ctx context.Context, env Env, args []string) error {
	path, stop, err := configFlag(env, "supernode", args)
	if err != nil {
		return err
	}
	defer stop()
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

// configFlag parses the flags of a service command: --config, and
// --cpuprofile, whose profile runs until stop (the benchmarks profile
// the product's processes with it).
func configFlag(env Env, name string, args []string) (path string, stop func(), err error) {
	fs := newFlagSet(name, env)
	cfg := fs.String("config", "", "config `file` (JSON)")
	prof := fs.String("cpuprofile", "", "write a CPU profile to `file` until the service stops")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return "", nil, err
	}
	if len(rest) > 0 || *cfg == "" {
		return "", nil, usageErr("usage: pc2 %s --config FILE [--cpuprofile FILE]", name)
	}
	stop = func() {}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			return "", nil, fmt.Errorf("cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return "", nil, fmt.Errorf("cpuprofile: %w", err)
		}
		stop = func() { pprof.StopCPUProfile(); f.Close() }
	}
	return *cfg, stop, nil
}

// notConfigured gives a missing config file gokrazy's exit status 125, so
// the supervisor does not restart a service that has nothing to do.
func notConfigured(err error) error {
	if errors.Is(err, config.ErrNotConfigured) {
		return &ExitError{Code: 125, Err: err}
	}
	return err
}
