package device

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pc2/pc2/services/netconf"
)

// NetconfNetwork is the Network of a real device: netconf on this
// process's network namespace.
type NetconfNetwork struct {
	Logger *slog.Logger
	// StatePath is netconf's record of the addresses it manages.
	StatePath string
	// Quiet is how long link events must settle before a re-apply
	// (default 500 ms).
	Quiet time.Duration

	mu     sync.Mutex
	status NetworkStatus
}

// Run implements Network.
func (n *NetconfNetwork) Run(ctx context.Context, cfg *netconf.Config, changed func()) error {
	var c netconf.Config
	if cfg != nil {
		c = *cfg
	}
	m, err := netconf.New(netconf.Options{StatePath: n.StatePath, Logger: n.Logger})
	if err != nil {
		return err
	}
	defer m.Close()
	w, err := m.Watch(ctx)
	if err != nil {
		return fmt.Errorf("netconf: watch: %w", err)
	}
	events, unsubscribe := w.Subscribe()
	defer unsubscribe()
	quiet := n.Quiet
	if quiet == 0 {
		quiet = 500 * time.Millisecond
	}
	settled := netconf.Debounce(ctx, events, quiet)
	for {
		changes, err := m.Apply(ctx, c)
		n.record(changes, err)
		if err != nil {
			n.Logger.Error("network settings not applied", "err", err)
		} else if len(changes) > 0 {
			n.Logger.Info("network settings applied", "changes", len(changes))
		}
		// Re-apply after links or addresses change: a link that went down
		// and up again loses its routes.
		select {
		case <-ctx.Done():
			return nil
		case <-w.Done():
			return w.Err()
		case _, ok := <-settled:
			if !ok {
				return nil
			}
			if changed != nil {
				changed()
			}
		}
	}
}

func (n *NetconfNetwork) record(changes []netconf.Change, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status.Applied = time.Now()
	if err != nil {
		n.status.LastError = err.Error()
		return
	}
	n.status.LastError = ""
	if len(changes) > 0 {
		n.status.Changes = n.status.Changes[:0]
		for _, c := range changes {
			n.status.Changes = append(n.status.Changes, c.String())
		}
	}
}

// Status implements Network.
func (n *NetconfNetwork) Status() NetworkStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.status
	s.Changes = append([]string(nil), s.Changes...)
	return s
}
