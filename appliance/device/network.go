package device

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/pc2/pc2/services/dhcp"
	"github.com/pc2/pc2/services/netconf"
	"github.com/pc2/pc2/services/netconf/keep"
)

// NetconfNetwork is the Network of a real device: netconf on this
// process's network namespace, with its DHCP clients (package keep).
type NetconfNetwork struct {
	Logger *slog.Logger
	// StatePath is netconf's record of the addresses it manages.
	StatePath string
	// Quiet is how long link events must settle before a re-apply
	// (default 500 ms).
	Quiet time.Duration
	// DHCPAlso and Hostname: see keep.Options.
	DHCPAlso []string
	Hostname string

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
	return keep.Run(ctx, m, c, keep.Options{Logger: n.Logger, Quiet: n.Quiet, Changed: changed, Applied: n.record,
		Leased: n.leased, DHCPAlso: n.DHCPAlso, Hostname: n.Hostname})
}

func (n *NetconfNetwork) leased(leases map[string]*dhcp.Lease) {
	out := make(map[string]Lease, len(leases))
	for name, l := range leases {
		ls := Lease{Address: l.Address.String(), Server: l.Server.String(), Expires: l.Acquired.Add(l.Time)}
		if l.Router.IsValid() {
			ls.Router = l.Router.String()
		}
		for _, d := range l.DNS {
			ls.DNS = append(ls.DNS, d.String())
		}
		out[name] = ls
	}
	n.mu.Lock()
	n.status.Leases = out
	n.mu.Unlock()
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
	s.Leases = maps.Clone(s.Leases)
	return s
}
