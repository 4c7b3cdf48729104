// Package metrics serves a process's Prometheus metrics
// (github.com/prometheus/client_golang, which libp2p already uses): the
// registry the services register theirs with, the Go runtime's and the
// process's own (memory, goroutines, open descriptors), and the HTTP
// endpoint at the address the operator or owner chooses. Nothing is
// served unless an address is configured, and an address that is not
// loopback or private is served with a warning: the figures (attached
// nodes, names, traffic) are the operator's, not the internet's.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes PC2's own metrics (pc2_gateway_requests_total, ...).
const Namespace = "pc2"

// NewRegistry is a registry with the Go runtime's and the process's
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Register registers cs with reg, which may be nil (metrics off: the
// collectors still count, nobody reads them).
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// Listen opens addr (host:port) for Serve, warning through log when the
// host is neither loopback nor private.
func Listen(addr string, log *slog.Logger) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %q: %w", addr, err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && !ip.IsLoopback() && !ip.IsPrivate()) || (err == nil && ip.IsUnspecified()) {
		log.Warn("metrics served on a public or every address: firewall it, or listen on loopback or a private address", "listen", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	return ln, nil
}

// Serve serves reg at /metrics on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("metrics served", "url", "http://"+ln.Addr().String()+"/metrics")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
