package cli

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/services/netconf"
)

func init() {
	register("node", "run a personal node (identity, did record, tunnel, status page) from a JSON config", runNode)
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
	log := env.logger()
	var node atomic.Pointer[personal.Node]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go watchNetwork(ctx, log, func() {
		if n := node.Load(); n != nil {
			log.Info("network changed: reattaching")
			n.Reconnect()
		}
	})
	return personal.Run(ctx, cfg, personal.Options{Logger: log, Version: Version, Started: func(n *personal.Node) { node.Store(n) }})
}

// watchNetwork calls changed after link and address changes settle (the
// tunnel reattaches at once instead of waiting for its keep-alive to
// fail). Without netlink (not Linux) it logs why and returns.
func watchNetwork(ctx context.Context, log *slog.Logger, changed func()) {
	m, err := netconf.New(netconf.Options{Logger: log})
	if err != nil {
		log.Warn("not watching the network", "err", err)
		return
	}
	defer m.Close()
	w, err := m.Watch(ctx)
	if err != nil {
		log.Warn("not watching the network", "err", err)
		return
	}
	events, stop := w.Subscribe()
	defer stop()
	for range netconf.Debounce(ctx, events, 200*time.Millisecond) {
		changed()
	}
}
