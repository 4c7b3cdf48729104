package supernode

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pc2/pc2/services/metrics"
)

// startMetrics serves the supernode's Prometheus metrics at
// Config.MetricsListen (or Options.MetricsListener) until ctx ends and
// returns the registry its services register with; nil (no metrics)
// when neither is set.
func startMetrics(ctx context.Context, cfg *Config, opts Options, log *slog.Logger) (prometheus.Registerer, error) {
	ln := opts.MetricsListener
	if ln == nil && cfg.MetricsListen == "" {
		return nil, nil
	}
	if ln == nil {
		var err error
		if ln, err = metrics.Listen(cfg.MetricsListen, log); err != nil {
			return nil, err
		}
	}
	reg := metrics.NewRegistry()
	go func() {
		if err := metrics.Serve(ctx, ln, reg, log); err != nil {
			log.Error("metrics stopped", "err", err)
		}
	}()
	return reg, nil
}

// turnMetrics reports the TURN server's allocations.
func turnMetrics(reg prometheus.Registerer, allocations func() int) error {
	return metrics.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "turn", Name: "allocations",
		Help: "TURN allocations now."}, func() float64 { return float64(allocations()) }))
}

// gatewayMetrics count the gateway's HTTP requests (pc2_gateway_...).
type gatewayMetrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newGatewayMetrics(reg prometheus.Registerer) (*gatewayMetrics, error) {
	m := &gatewayMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "gateway", Name: "requests_total",
			Help: "HTTP requests the gateway answered (visitors' and the names API's), by scheme and status code."}, []string{"scheme", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metrics.Namespace, Subsystem: "gateway", Name: "request_duration_seconds",
			Help:    "Time to answer an HTTP request (a WebSocket: its whole life), by scheme.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12)}, []string{"scheme"}),
	}
	return m, metrics.Register(reg, m.requests, m.seconds)
}

// wrap counts h's requests of scheme.
func (m *gatewayMetrics) wrap(scheme string, h http.Handler) http.Handler {
	l := prometheus.Labels{"scheme": scheme}
	return promhttp.InstrumentHandlerDuration(m.seconds.MustCurryWith(l), promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(l), h))
}
