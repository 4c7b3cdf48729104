package personal

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/peerconn"
)

// Backups to a friend's node, both sides. The friend's node serves its
// backup space (backup.Space) to the nodes its owner allowed, over
// authenticated node-to-node connections (services/peerconn: through
// its relays, or directly); this node reaches a friend's space through a
// local bridge, a loopback HTTP server for restic whose connections are
// such node-to-node connections.

// serveSpace serves the backup space to friends' connections on node's
// host until ctx ends.
func (n *Node) serveSpace(ctx context.Context, node *dht.Node, key ed25519.PrivateKey) {
	sp := n.space
	if sp == nil {
		return
	}
	ln, err := peerconn.Listen(node.Host(), key, sp.Allowed, n.log.With("service", "backup-space"))
	if err != nil {
		n.log.Error("backup space not served", "err", err)
		return
	}
	srv := &http.Server{Handler: sp, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerconn.Conn); ok {
				return backup.WithPeer(ctx, pc.Peer())
			}
			return ctx
		}}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		ln.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		n.log.Error("backup space stopped", "err", err)
	}
}

// friendURL is backup.Config.NodeURL: a loopback endpoint for restic
// whose requests go to did's backup space. Its path starts with a random
// token, so other programs on this device cannot use the bridge.
func (n *Node) friendURL(ctx context.Context, did string) (string, func(), error) {
	id, err := identity.ParseDID(did)
	if err != nil {
		return "", nil, err
	}
	node, _, err := n.network()
	if err != nil {
		return "", nil, err
	}
	key := n.currentKey()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	rec, err := node.ResolveDID(rctx, id)
	cancel()
	if err != nil {
		return "", nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	prefix := "/" + hex.EncodeToString(tok)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "friend"
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = "friend"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return peerconn.Dial(ctx, node.Host(), key, rec)
			},
			MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: 5 * time.Minute,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			n.log.Warn("friend's backup space", "friend", did, "err", err)
			http.Error(w, "friend's node unreachable: "+err.Error(), http.StatusBadGateway)
		},
	}
	srv := &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != prefix && !strings.HasPrefix(r.URL.Path, prefix+"/") {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	return fmt.Sprintf("http://%s%s/", ln.Addr(), prefix), func() {
		srv.Close()
		proxy.Transport.(*http.Transport).CloseIdleConnections()
	}, nil
}

// resolveNode turns a friend given by name (alice.ela.city) into its
// DID; a DID is returned as it is.
func (n *Node) resolveNode(ctx context.Context, s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "did:") {
		id, err := identity.ParseDID(s)
		if err != nil {
			return "", err
		}
		return id.DID(), nil
	}
	node, _, err := n.network()
	if err != nil {
		return "", fmt.Errorf("%w: give the friend's DID", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := node.ResolveName(rctx, strings.ToLower(strings.TrimSuffix(s, ".")))
	if err != nil {
		return "", fmt.Errorf("find %s: %w", s, err)
	}
	if g := res.Name.Grant; g.Status != records.StatusActive {
		return "", fmt.Errorf("%s is %s", s, g.Status)
	}
	return res.Name.Grant.DID.DID(), nil
}
