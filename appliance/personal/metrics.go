package personal

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pc2/pc2/services/metrics"
)

// The node's metrics (Config.MetricsListen): whether it is online and
// how many supernodes it is attached to, the requests its visitors made
// through them (relayed and spliced) by status, its storage, and its last
// backup; libp2p's own (dht.Config.Metrics), the Go runtime's and the
// process's come with them.

// startMetrics serves the node's metrics until ctx ends and returns the
// registry (nil when Config.MetricsListen is not set).
func (n *Node) startMetrics(ctx context.Context) (prometheus.Registerer, error) {
	ln := n.opts.MetricsListener
	if ln == nil && n.cfg.MetricsListen == "" {
		return nil, nil
	}
	log := n.log.With("service", "metrics")
	if ln == nil {
		var err error
		if ln, err = metrics.Listen(n.cfg.MetricsListen, log); err != nil {
			return nil, err
		}
	}
	reg := metrics.NewRegistry()
	gauge := func(name, help string, f func(Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "node", Name: name, Help: help},
			func() float64 { return f(n.Status()) })
	}
	if err := metrics.Register(reg,
		gauge("online", "1 when the node is reachable (relayed or direct), else 0.", func(s Status) float64 {
			if s.State == "online" {
				return 1
			}
			return 0
		}),
		gauge("supernodes_attached", "Supernodes the node is attached to now.", func(s Status) float64 {
			k := 0
			if s.Tunnel != nil {
				for _, l := range s.Tunnel.Supernodes {
					if l.Attached {
						k++
					}
				}
			}
			return float64(k)
		}),
		gauge("storage_used_bytes", "Bytes of the owner's files.", func(s Status) float64 {
			if s.Storage == nil {
				return 0
			}
			return float64(s.Storage.Used)
		}),
		gauge("disk_free_bytes", "Free bytes on the disk of the owner's files.", func(s Status) float64 {
			if s.Storage == nil {
				return 0
			}
			return float64(s.Storage.DiskFree)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "node", Name: "backup_last_success_timestamp_seconds",
			Help: "When the last backup succeeded (Unix seconds; 0: never, or backups off)."}, func() float64 {
			if n.backups == nil || n.backups.Status().LastSuccess.IsZero() {
				return 0
			}
			return float64(n.backups.Status().LastSuccess.Unix())
		}),
		n.visits,
	); err != nil {
		return nil, err
	}
	go func() {
		if err := metrics.Serve(ctx, ln, reg, log); err != nil {
			log.Error("metrics stopped", "err", err)
		}
	}()
	return reg, nil
}

// newVisits counts the requests that reach the node through supernodes
// (relayed HTTP and spliced TLS), by status code.
func newVisits() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "node", Name: "visitor_requests_total",
		Help: "Visitors' requests that reached the node through its supernodes (relayed or end to end), by status code."}, []string{"code"})
}

// countVisits counts h's requests in n.visits.
func (n *Node) countVisits(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(n.visits, h)
}
