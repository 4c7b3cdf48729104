package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/services/dht/records"
)

// One granter per domain. Two supernodes holding a domain's operator key
// could each find a free name free and grant it, to two DIDs, if two
// claims raced; the DHT would keep one grant and the other claimer would
// have been told the name was theirs. So new names are granted by one
// supernode only, the domain's primary: the first gateway the signed
// domain record lists (the operator orders the list; supernodes holding
// the key append themselves, so the first of them stays first). Another
// supernode holding the key serves renewals and releases of names their
// holders hold, and hands a claim for a new name to the primary over
// ProtocolNames, with the client's address for the primary's limits.
// Without a resolvable domain record (a single supernode, the DHT
// unreachable) a supernode grants itself.

// ProtocolNames carries one names API request, as HTTP/1.1, from a
// gateway of a domain to the domain's primary, and its response.
const ProtocolNames = protocol.ID("/pc2/names/1")

// clientHeader carries the client's address on ProtocolNames (set by
// the forwarding gateway, trusted only from gateways of the domain).
const clientHeader = "X-Pc2-Client-Addr"

// forwardedKey marks, in its context, a request that a domain's gateway
// handed over (ServeNames): it is decided here, never handed on. A
// context value, not a header, so that a visitor cannot set it.
type forwardedKey struct{}

// Primaries says which supernode grants new names of a domain
// (dht.GatewaySet: the first gateway the domain's record lists).
type Primaries interface {
	// Primary is the domain's primary; an error when it cannot be
	// told (the supernode then grants itself).
	Primary(ctx context.Context, domain string) (peer.ID, error)
}

// forwardNew hands a claim for a new name to the domain's primary and
// writes its answer; false when this supernode is to decide (it is the
// primary, the claim is a renewal by the holder, the request was already
// forwarded, or it cannot be parsed: claim answers that).
func (n *Names) forwardNew(w http.ResponseWriter, r *http.Request, domain string) bool {
	if n.cfg.Primaries == nil || n.cfg.Host == nil || r.Context().Value(forwardedKey{}) != nil {
		return false
	}
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxAPIBody))
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if err != nil {
		return false
	}
	_, c, err := n.readClaim(r, domain, records.ActionHold)
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	primary, err := n.cfg.Primaries.Primary(ctx, domain)
	if err != nil {
		n.log.Debug("no primary known; granting here", "domain", domain, "err", err)
		return false
	}
	if primary == n.cfg.Host.ID() {
		return false
	}
	if cur, err := n.current(ctx, c.Name); err == nil && cur != nil && cur.Grant.Status == records.StatusActive && cur.Grant.DID == c.DID {
		return false // a renewal: the holder's own
	}
	resp, err := n.sendToPrimary(ctx, primary, r, raw)
	if err != nil {
		n.log.Warn("claim not handed to the domain's primary", "name", c.Name, "primary", primary, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, errorBody(refuse(http.StatusServiceUnavailable, "primary_unreachable",
			"new names under %s are granted by its primary supernode, which cannot be reached now; try again later", domain)))
		return true
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		w.Header().Set(h, resp.Header.Get(h))
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, io.LimitReader(resp.Body, MaxAPIBody))
	return true
}

// sendToPrimary sends r (with body raw) to primary over ProtocolNames.
func (n *Names) sendToPrimary(ctx context.Context, primary peer.ID, r *http.Request, raw []byte) (*http.Response, error) {
	st, err := n.cfg.Host.NewStream(ctx, primary, ProtocolNames)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.Host+r.URL.Path, bytes.NewReader(raw))
	if err != nil {
		st.Reset()
		return nil, err
	}
	out.Header.Set("Content-Type", "application/json")
	out.Header.Set(clientHeader, clientIP(r))
	if err := out.Write(st); err != nil {
		st.Reset()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(st), out)
	if err != nil {
		st.Reset()
		return nil, err
	}
	resp.Body = streamBody{resp.Body, st}
	return resp, nil
}

// streamBody closes the stream with the response body.
type streamBody struct {
	io.ReadCloser
	st network.Stream
}

func (b streamBody) Close() error {
	b.ReadCloser.Close()
	return b.st.Close()
}

// ServeNames returns the ProtocolNames handler: requests from peers
// allowed accepts (the domains' gateways, dht.GatewaySet) are served as
// names API requests from the client address they carry.
func (n *Names) ServeNames(allowed func(context.Context, peer.ID) bool) network.StreamHandler {
	return func(st network.Stream) {
		defer st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st.SetDeadline(time.Now().Add(20 * time.Second))
		if allowed == nil || !allowed(ctx, st.Conn().RemotePeer()) {
			st.Reset()
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(st, MaxAPIBody+8<<10)))
		if err != nil {
			st.Reset()
			return
		}
		addr := net.ParseIP(req.Header.Get(clientHeader))
		if addr == nil || req.Method != http.MethodPost || req.URL.Path != "/api/names" {
			st.Reset()
			return
		}
		req.RemoteAddr = net.JoinHostPort(addr.String(), "0")
		rec := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
		n.ServeHTTP(rec, req.WithContext(context.WithValue(ctx, forwardedKey{}, true)))
		resp := &http.Response{StatusCode: rec.code, ProtoMajor: 1, ProtoMinor: 1, Header: rec.header,
			ContentLength: int64(rec.body.Len()), Body: io.NopCloser(&rec.body)}
		if err := resp.Write(st); err != nil {
			st.Reset()
		}
	}
}

// bufferedResponse is an http.ResponseWriter that keeps a small answer.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
