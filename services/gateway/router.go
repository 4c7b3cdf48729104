package gateway

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"

	"github.com/pc2/pc2/internal/chanlisten"

	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/services/gateway/sni"
)

// Limits of the TLS router's peek (ServeTLS): what one client, and all
// of them together, may hold in connections that have not finished their
// ClientHello. A connection past them is closed at once.
const (
	PeeksPerClient = 16
	PeeksTotal     = 4096
)

// ServeTLS serves port 443: each connection's ClientHello is read without
// terminating it (services/gateway/sni), within the per-client request
// limit and the peek limits (a client that sends nothing is cut after
// sni.DefaultTimeout), and routed by its server name. Today every name
// goes to the gateway's own TLS termination (tlsConfig, then srv); issue
// 18 adds routes that pass the raw bytes on. A ClientHello without a
// server name, or that is not one, is closed without an answer. It
// returns when ln fails or is closed.
func (g *Gateway) ServeTLS(ln net.Listener, tlsConfig *tls.Config, srv *http.Server) error {
	term := chanlisten.New(ln.Addr())
	defer term.Close()
	go srv.Serve(tls.NewListener(term, tlsConfig))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.route(c, term)
		}()
	}
}

// route peeks at c's ClientHello and hands c on, or closes it.
func (g *Gateway) route(c net.Conn, term *chanlisten.Listener) {
	client := netaddr.ClientKey(netaddr.Host(c.RemoteAddr().String()))
	if !g.limiter.allow(client) {
		c.Close()
		return
	}
	mine, ok := g.peeking.Take(client, PeeksPerClient)
	if !ok {
		c.Close()
		return
	}
	all, ok := g.peekingAll.Take(struct{}{}, PeeksTotal)
	if !ok {
		mine()
		c.Close()
		return
	}
	hello, replay, err := sni.Peek(c, 0, g.cfg.PeekTimeout)
	all()
	mine()
	if err != nil {
		g.log.Debug("TLS connection refused", "client", client, "err", err)
		c.Close()
		return
	}
	_ = hello // every name is terminated here for now
	if !term.Deliver(replay) {
		c.Close()
	}
}
