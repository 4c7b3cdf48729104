package cli

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/services/netconf"
)

func init() {
	register("node", "run a personal node (identity, did record, tunnel, status page) from a JSON config", runNode)
}

func runNode(ctx context.Context, env Env, args []string) error {
	path, stop, err := configFlag(env, "node", args)
	if err != nil {
		return err
	}
	defer stop()
	cfg, err := personal.LoadConfig(path)
	if err != nil {
		return notConfigured(err)
	}
	log := env.logger()
	var node atomic.Pointer[personal.Node]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go netconf.OnChange(ctx, log, 200*time.Millisecond, func() {
		if n := node.Load(); n != nil {
			log.Info("network changed: reattaching")
			n.Reconnect()
		}
	})
	return personal.Run(ctx, cfg, personal.Options{Logger: log, Version: Version, Started: func(n *personal.Node) { node.Store(n) }})
}
