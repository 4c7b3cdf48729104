package frpbench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pc2/pc2/internal/testing/echotest"
)

// TestProxies: a TCP echo through a tcp proxy and a GET through an http
// proxy's subdomain, both over frpc's TLS, multiplexed connection.
func TestProxies(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Host)
	}))
	t.Cleanup(web.Close)
	tun := Start(t, Config{
		TCP:  []TCPProxy{{Name: "echo", LocalAddr: echotest.Start(t)}},
		HTTP: []HTTPProxy{{Name: "web", Subdomain: "app", LocalAddr: web.Listener.Addr().String()}},
	})

	c, err := net.Dial("tcp", tun.TCPAddr("echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "through frp\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "through frp\n" {
		t.Fatalf("tcp echo: got %q %v, want %q", line, err, "through frp\n")
	}

	req, _ := http.NewRequest("GET", "http://"+tun.HTTPAddr+"/", nil)
	req.Host = tun.Host("web")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := "hello app.frp.test"; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("http: got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}
