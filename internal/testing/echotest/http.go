package echotest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/gorilla/websocket"
)

// HTTP is the web service that tests reach through relays and gateways:
//
//	GET /hello  "hello <Host> xff=<X-Forwarded-For> xfh=<X-Forwarded-Host> xfp=<X-Forwarded-Proto>"
//	POST /sum   "<body length> <hex SHA-256 of the body>", read as a stream
//	GET /ws     a WebSocket that echoes every message
//	GET /peer   "<the connection's remote host> <protocol> tls=<true|false>"
func HTTP() http.Handler {
	mux := http.NewServeMux()
	Register(mux)
	return mux
}

// Register adds HTTP's paths to mux, beside other handlers (a
// personal node's cloud at /).
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s xff=%s xfh=%s xfp=%s", r.Host, r.Header.Get("X-Forwarded-For"),
			r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"))
	})
	mux.HandleFunc("POST /sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("GET /peer", func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		fmt.Fprintf(w, "%s %s tls=%t", host, r.Proto, r.TLS != nil)
	})
	up := websocket.Upgrader{}
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, b); err != nil {
				return
			}
		}
	})
}
