// Package relayfront is a test helper: a bare HTTP front to the nodes
// attached to a relay server, routed by the first label of the Host, which
// is the node's key in base32 (HostLabel). Tests of the tunnel and of the
// appliance reach nodes through it without names, a DHT or a gateway; the
// product serves names with services/gateway instead.
package relayfront

import (
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/relay/nodeproxy"
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
		return id, fmt.Errorf("relayfront: %q is not a node host label", s)
	}
	copy(id[:], b)
	return id, nil
}

// resolve routes by the first label of the request's Host:
// <HostLabel(id)>.<anything>.
func resolve(r *http.Request) (identity.ID, error) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, _, _ := strings.Cut(host, ".")
	return ParseHostLabel(label)
}

// NewRequest returns a request for path on node id through the front at
// frontURL (http://host:port), with the node's host label as Host.
func NewRequest(frontURL string, id identity.ID, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, frontURL+path, body)
	if err != nil {
		return nil, err
	}
	req.Host = HostLabel(id) + ".relay.invalid"
	return req, nil
}

// Do sends method path to node id through the front at frontURL with the
// default HTTP client and returns the status and body; any failure to get
// an answer fails the test.
func Do(tb testing.TB, frontURL string, id identity.ID, method, path string, body io.Reader) (int, string) {
	tb.Helper()
	req, err := NewRequest(frontURL, id, method, path, body)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("relayfront: read the answer of %s %s: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

// Relay opens streams to attached nodes (relayserver.Relay does).
type Relay interface {
	OpenStream(ctx context.Context, id identity.ID, proto protocol.ID) (network.Stream, error)
}

// Handler returns the front of r: each request goes to the node its Host
// names, if it is attached to r. An unknown host label gets 404, a node
// that is not attached 502, one at its stream limit 503. log (nil:
// discard) gets the failures.
func Handler(r Relay, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	np, err := nodeproxy.New(nodeproxy.Config{
		Dial: func(ctx context.Context, id identity.ID) (net.Conn, error) {
			st, err := r.OpenStream(ctx, id, relay.ProtocolHTTP)
			if err != nil {
				return nil, err
			}
			return relay.StreamConn{Stream: st}, nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			code := http.StatusBadGateway
			if errors.Is(err, relay.ErrBusy) {
				code = http.StatusServiceUnavailable
			}
			log.Info("proxy error", "host", req.Host, "err", err)
			http.Error(w, "PC2 relay: "+err.Error(), code)
		},
	})
	if err != nil {
		panic(err) // Dial is set above
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id, err := resolve(req)
		if err != nil {
			http.Error(w, "PC2 relay: "+err.Error(), http.StatusNotFound)
			return
		}
		np.ServeNode(w, req, id)
	})
}
