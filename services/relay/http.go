package relay

import (
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
)

// b32 is the host-label form of a node ID: the 32-byte key in lower-case
// base32 without padding (52 characters, a valid DNS label, and safe from
// the lower-casing every HTTP client applies to host names, which Base58
// is not).
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// HostLabel returns id's host label.
func HostLabel(id identity.ID) string { return strings.ToLower(b32.EncodeToString(id[:])) }

// ParseHostLabel reverses HostLabel.
func ParseHostLabel(s string) (identity.ID, error) {
	var id identity.ID
	b, err := b32.DecodeString(strings.ToUpper(s))
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("relay: %q is not a node host label", s)
	}
	copy(id[:], b)
	return id, nil
}

// HostResolver routes by the first label of the request's Host:
// <HostLabel(id)>.<anything>.
func HostResolver(r *http.Request) (identity.ID, error) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, _, _ := strings.Cut(host, ".")
	return ParseHostLabel(label)
}

// NewRequest returns a request for path on node id through the relay front
// at frontURL (http://host:port), with the node's host label as Host.
func NewRequest(frontURL string, id identity.ID, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, frontURL+path, body)
	if err != nil {
		return nil, err
	}
	req.Host = HostLabel(id) + ".relay.invalid"
	return req, nil
}

// internalSuffix marks the upstream host names of the proxy's transport;
// one connection pool per node follows from the host name.
const internalSuffix = ".node.pc2.invalid"

// NodeProxy forwards HTTP requests to nodes over /pc2/http/1 streams:
// HTTP/1.1 with keep-alive (a pool of streams per node), WebSocket and
// other upgrades, bodies streamed both ways and responses flushed as they
// come. X-Forwarded-For/-Proto/-Host are set; the node sees the original
// Host. The relay's HTTP front and the web gateway both use it; they
// differ in how a stream to a node is opened (Dial).
type NodeProxy struct {
	rp *httputil.ReverseProxy
}

// DialNode opens a connection that carries HTTP/1.1 to node id.
type DialNode func(ctx context.Context, id identity.ID) (net.Conn, error)

// nodeKey carries the target node in a request's context.
type nodeKey struct{}

// NewNodeProxy returns a proxy that reaches nodes with dial; onError
// answers requests whose node could not be reached (or broke off).
func NewNodeProxy(dial DialNode, onError func(http.ResponseWriter, *http.Request, error)) *NodeProxy {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			id, err := ParseHostLabel(strings.TrimSuffix(host, internalSuffix))
			if err != nil {
				return nil, err
			}
			return dial(ctx, id)
		},
		// Enough idle streams that a client's few dozen keep-alive
		// connections reuse them instead of opening and closing a stream
		// per request (docs/benchmarks.md, "Gateway"); a quarter of the
		// default streams per node, the rest left for other streams.
		MaxIdleConnsPerHost: DefaultLimits.Streams / 4,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	return &NodeProxy{rp: &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			id := pr.In.Context().Value(nodeKey{}).(identity.ID)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = HostLabel(id) + internalSuffix
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: tr,
		// No FlushInterval: streamed responses (no Content-Length, or
		// text/event-stream) are flushed at every write anyway, and
		// flushing the others would cost a write per header and per body
		// write, and a goroutine per response.
		BufferPool:   copyBuffers{},
		ErrorHandler: onError,
	}}
}

// copyBuffers reuses the proxy's body copy buffers (32 KiB each, one per
// response otherwise).
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte { return *copyBufferPool.Get().(*[]byte) }

func (copyBuffers) Put(b []byte) { copyBufferPool.Put(&b) }

// ServeNode forwards req to node id.
func (p *NodeProxy) ServeNode(w http.ResponseWriter, req *http.Request, id identity.ID) {
	p.rp.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), nodeKey{}, id)))
}

// Proxy returns the relay's HTTP front: a handler that forwards each
// request to the node resolve names, if it is attached here (NodeProxy). A
// node that is not attached gets 502, one at its stream limit 503, within
// the request's context.
func (r *Relay) Proxy(resolve func(*http.Request) (identity.ID, error)) http.Handler {
	np := NewNodeProxy(func(ctx context.Context, id identity.ID) (net.Conn, error) {
		st, err := r.OpenStream(ctx, id, ProtocolHTTP)
		if err != nil {
			return nil, err
		}
		return StreamConn{st}, nil
	}, func(w http.ResponseWriter, req *http.Request, err error) {
		code := http.StatusBadGateway
		if errors.Is(err, ErrBusy) {
			code = http.StatusServiceUnavailable
		}
		r.log.Info("proxy error", "host", req.Host, "err", err)
		http.Error(w, "PC2 relay: "+err.Error(), code)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id, err := resolve(req)
		if err != nil {
			http.Error(w, "PC2 relay: "+err.Error(), http.StatusNotFound)
			return
		}
		if !r.Attached(id) {
			http.Error(w, "PC2 relay: node "+id.DID()+" is not attached here", http.StatusBadGateway)
			return
		}
		np.ServeNode(w, req, id)
	})
}
