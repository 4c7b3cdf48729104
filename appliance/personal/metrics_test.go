package personal

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/services/cloud"
)

// TestMetrics (issue 21): the supernode's and the node's Prometheus
// metrics count what happened: the node attached, its name claimed, a
// visitor's requests through the gateway (by status at the gateway and
// at the node), the bytes relayed; libp2p's resource manager and the
// process's own figures are there too.
func TestMetrics(t *testing.T) {
	gw, nodeMetrics := metricsNode(t)
	for range 3 {
		testenv.WaitFor(t, 30*time.Second, "alice through the gateway", func() bool {
			code, _ := visitStatus(gw, "alice.pc2.test")
			return code == http.StatusOK
		})
	}
	if code, _ := visitStatus(gw, "nobody.pc2.test"); code != http.StatusNotFound {
		t.Fatalf("an unknown name: %d", code)
	}
	scrape := func(url string) string {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
		}
		return string(b)
	}
	// value is the sample of metric (with its labels as printed) in text.
	value := func(text, metric string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`).FindStringSubmatch(text)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	sn := scrape(gw.Metrics)
	for metric, atLeast := range map[string]float64{
		`pc2_relay_attached_nodes`:                                  1,
		`pc2_relay_max_nodes`:                                       1,
		`pc2_relay_streams_total{protocol="/pc2/http/1"}`:           1,
		`pc2_relay_bytes_total{direction="from_node"}`:              1,
		`pc2_relay_bytes_total{direction="to_node"}`:                1,
		`pc2_gateway_requests_total{code="200",scheme="http"}`:      3,
		`pc2_gateway_requests_total{code="404",scheme="http"}`:      1,
		`pc2_gateway_request_duration_seconds_count{scheme="http"}`: 4,
		`pc2_names_api_calls_total{call="claim",result="ok"}`:       1,
		`go_goroutines`:    1,
		`process_open_fds`: 1,
		`libp2p_rcmgr_connections{dir="inbound",scope="system"}`: 1,
	} {
		if v := value(sn, metric); v < atLeast {
			t.Errorf("supernode: %s = %v, want at least %v", metric, v, atLeast)
		}
	}
	// No identities or addresses in the labels.
	for _, secret := range []string{"did:boson:", "12D3KooW", "alice", "127.0.0.1"} {
		if strings.Contains(sn, secret) {
			t.Errorf("the supernode's metrics name %q", secret)
		}
	}
	node := scrape(nodeMetrics)
	for _, secret := range []string{"did:boson:", "12D3KooW", "alice", "127.0.0.1"} {
		if strings.Contains(node, secret) {
			t.Errorf("the node's metrics name %q", secret)
		}
	}
	for metric, atLeast := range map[string]float64{
		`pc2_node_online`:                                1,
		`pc2_node_supernodes_attached`:                   1,
		`pc2_node_visitor_requests_total{code="200"}`:    3,
		`pc2_node_disk_free_bytes`:                       1,
		`pc2_node_storage_used_bytes`:                    0,
		`pc2_node_backup_last_success_timestamp_seconds`: 0,
	} {
		if v := value(node, metric); v < atLeast {
			t.Errorf("node: %s = %v, want at least %v", metric, v, atLeast)
		}
	}
}

// metricsNode starts a supernode and alice's node, relayed through it,
// both serving metrics, and returns the supernode and the node's
// metrics URL.
func metricsNode(t *testing.T) (*gwtest.Gateway, string) {
	gw := gwtest.Start(t, gwtest.Options{Metrics: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: gw.Addrs, PinSupernodes: true,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: gw.API}}}
	setUpNode(t, cfg, Options{MetricsListener: ln}, "alice")
	return gw, "http://" + ln.Addr().String() + "/metrics"
}
