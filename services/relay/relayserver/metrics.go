package relayserver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pc2/pc2/services/metrics"
)

// relayMetrics are the relay's figures (Config.Metrics): attached nodes,
// streams opened to them by protocol, attaches and streams refused by
// reason, and bytes relayed each way.
type relayMetrics struct {
	streams          *prometheus.CounterVec
	refused          *prometheus.CounterVec
	toNode, fromNode prometheus.Counter
}

func newRelayMetrics(r *Relay, reg prometheus.Registerer) (*relayMetrics, error) {
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "relay", Name: "bytes_total",
		Help: "Bytes relayed to and from attached nodes."}, []string{"direction"})
	m := &relayMetrics{
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "relay", Name: "streams_total",
			Help: "Streams opened to attached nodes, by protocol."}, []string{"protocol"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "relay", Name: "refused_total",
			Help: "Attaches and streams refused, by reason (full: max_nodes; busy: a node's stream limit; attach: a bad attach)."}, []string{"reason"}),
		toNode:   bytes.WithLabelValues("to_node"),
		fromNode: bytes.WithLabelValues("from_node"),
	}
	attached := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "relay", Name: "attached_nodes",
		Help: "Nodes attached now."}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(len(r.sessions))
	})
	max := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "relay", Name: "max_nodes",
		Help: "The most nodes attached at once (0: no bound but the host's limits)."}, func() float64 { return float64(r.cfg.MaxNodes) })
	return m, metrics.Register(reg, m.streams, m.refused, bytes, attached, max)
}
