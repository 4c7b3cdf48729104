// Package nodeproxy is the HTTP reverse proxy from a supernode to personal
// nodes: each request goes to the node it is given, over a connection that
// the caller's Dial opens (a /pc2/http/1 stream through a relay, directly
// or forwarded by another supernode). The web gateway serves names with it.
package nodeproxy

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
)

// Dial opens a connection that carries HTTP/1.1 to node id.
type Dial func(ctx context.Context, id identity.ID) (net.Conn, error)

// IdleTimeout is how long an idle pooled stream to a node is kept: each
// counts in the node's stream limit, and nodes close theirs after 30 s,
// so the proxy lets go first (a request never meets a stream the node is
// closing).
const IdleTimeout = 20 * time.Second

// Config configures a Proxy.
type Config struct {
	// Dial reaches a node. Required.
	Dial Dial
	// ErrorHandler answers requests whose node could not be reached (or
	// broke off); nil: httputil.ReverseProxy's 502.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// Proxy forwards HTTP requests to nodes: HTTP/1.1 with keep-alive (a pool
// of connections per node), WebSocket and other upgrades, bodies streamed
// both ways and responses flushed as they come. X-Forwarded-For/-Proto/
// -Host are set; the node sees the original Host.
type Proxy struct {
	rp *httputil.ReverseProxy
}

// targetKey carries a request's node in its context, from ServeNode to
// the transport's DialContext.
type targetKey struct{}

// poolSuffix ends the internal upstream host names; they only key the
// transport's connection pool (one per node) and are never resolved.
const poolSuffix = ".node.pc2.invalid"

// New returns a Proxy that reaches nodes with cfg.Dial.
func New(cfg Config) (*Proxy, error) {
	if cfg.Dial == nil {
		return nil, errors.New("nodeproxy: no Dial")
	}
	tr := &http.Transport{
		// The transport dials with a context derived from the request's
		// by context.WithoutCancel (Transport.getConn in
		// net/http/transport.go: "We retain the request context's
		// values"), so the node ServeNode put there is still in it. A
		// connection dialled for one request may serve a later one of the
		// same pool key, that is of the same node.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			id, ok := ctx.Value(targetKey{}).(identity.ID)
			if !ok {
				return nil, errors.New("nodeproxy: request without a node")
			}
			return cfg.Dial(ctx, id)
		},
		// Enough idle streams that a client's few dozen keep-alive
		// connections reuse them instead of opening and closing a stream
		// per request (docs/benchmarks.md, "Gateway"); a quarter of the
		// default streams per node, the rest left for other streams.
		MaxIdleConnsPerHost: relay.DefaultLimits.Streams / 4,
		IdleConnTimeout:     IdleTimeout,
		DisableCompression:  true,
	}
	return &Proxy{rp: &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			id := pr.In.Context().Value(targetKey{}).(identity.ID)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = hex.EncodeToString(id[:]) + poolSuffix
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: tr,
		// No FlushInterval: streamed responses (no Content-Length, or
		// text/event-stream) are flushed at every write anyway, and
		// flushing the others would cost a write per header and per body
		// write, and a goroutine per response.
		BufferPool:   copyBuffers{},
		ErrorHandler: cfg.ErrorHandler,
	}}, nil
}

// copyBuffers reuses the proxy's body copy buffers (32 KiB each, one per
// response otherwise).
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte { return *copyBufferPool.Get().(*[]byte) }

func (copyBuffers) Put(b []byte) { copyBufferPool.Put(&b) }

// ServeNode forwards req to node id.
func (p *Proxy) ServeNode(w http.ResponseWriter, req *http.Request, id identity.ID) {
	p.rp.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), targetKey{}, id)))
}
