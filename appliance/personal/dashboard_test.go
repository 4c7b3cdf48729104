package personal

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/promtext"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
)

const dashboardFile = "../../docs/grafana/pc2.json"

// TestGrafanaDashboard checks that every metric the Grafana dashboard
// (docs/grafana/pc2.json) queries is one a supernode or a node really
// exposes: it runs them as TestMetrics does, makes the events that give
// the counter vectors their first series, scrapes both, and names each
// metric neither serves. A renamed metric then fails here, not on an
// operator's empty panel.
func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t, dashboardFile)
	used := d.metrics(t)
	if len(used) == 0 {
		t.Fatal("the dashboard queries no metrics")
	}

	// The supernode and node of TestMetrics: attached, a name claimed,
	// visitors' requests (200 and 404) through the gateway.
	gw, nodeMetrics := metricsNode(t)
	testenv.WaitFor(t, 30*time.Second, "alice through the gateway", func() bool {
		code, _ := visitStatus(gw, "alice.pc2.test")
		return code == http.StatusOK
	})
	if code, _ := visitStatus(gw, "nobody.pc2.test"); code != http.StatusNotFound {
		t.Fatalf("an unknown name: got %d, want %d", code, http.StatusNotFound)
	}
	// gwtest runs no TURN server, and nothing there is refused: a second
	// supernode runs TURN (pc2_turn_allocations) and refuses a bad
	// attach (pc2_relay_refused_total's first series).
	turnAddrs, turnMetrics := startTURNSupernode(t)
	refuseAttach(t, turnAddrs)

	// libp2p's resource manager reports to package-level collectors, so
	// in this one process either endpoint may show the other's libp2p
	// series: the check is on the union, as the dashboard covers both.
	exposed := map[string]bool{}
	for _, url := range []string{gw.Metrics, turnMetrics, nodeMetrics} {
		m, err := promtext.Scrape(url)
		if err != nil {
			t.Fatal(err)
		}
		for name := range m {
			exposed[name] = true
		}
	}
	for _, u := range used {
		if !exposed[u.metric] {
			t.Errorf("panel %q queries %s: no supernode or node exposes it", u.panel, u.metric)
		}
	}
}

// TestGrafanaDashboardMetricNames checks the extractor the dashboard
// test relies on: it must find every metric and nothing else.
func TestGrafanaDashboardMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`go_goroutines`, []string{"go_goroutines"}},
		{`process_open_fds{instance=~"$instance"} and on (instance) pc2_node_online`, []string{"process_open_fds", "pc2_node_online"}},
		{`sum by (reason) (rate(pc2_relay_refused_total{instance=~"$instance"}[$__rate_interval]))`, []string{"pc2_relay_refused_total"}},
		{`histogram_quantile(0.99, sum by (le, scheme) (rate(a_bucket{x="rate(b)", y='{c}'}[5m])))`, []string{"a_bucket"}},
		{`SUM WITHOUT (dir) (x) / ignoring(dir) group_left(scope) y offset 1h30m`, []string{"x", "y"}},
		{`time() - (t{i=~"$i"} > 0) or vector(0)`, []string{"t"}},
		{`sum(rate(x[${__rate_interval}])) by (code) > bool 1e3 unless on() z:recorded`, []string{"x", "z:recorded"}},
		{`label_replace(m, "dst", "$1", "src", "(.*)") # a comment naming not_a_metric`, []string{"m"}},
	} {
		got, err := promMetrics(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, expr := range []string{`rat(x[5m])`, `x{a="b"`, `sum(x`} {
		if got, err := promMetrics(expr); err == nil {
			t.Errorf("%s: got %q, want an error", expr, got)
		}
	}
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID      int            `json:"id"`
	Type    string         `json:"type"`
	Title   string         `json:"title"`
	Panels  []grafanaPanel `json:"panels"` // a collapsed row's
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// loadDashboard reads the dashboard at path and checks its shape: the
// two rows, panels with queries, the datasource and instance variables.
func loadDashboard(t *testing.T, path string) *dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion: got %d, want 36 or later", d.SchemaVersion)
	}
	rows, ids := map[string]bool{}, map[int]string{}
	for _, p := range d.all() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			rows[p.Title] = true
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q, query %s: no expr", p.Title, tg.RefID)
			}
		}
	}
	for _, r := range []string{"Supernode", "Personal node"} {
		if !rows[r] {
			t.Errorf("no row %q", r)
		}
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("template variables: got %v, want datasource (datasource) and instance (query)", vars)
	}
	if len(ids) == len(rows) {
		t.Fatal("the dashboard has no panels but rows")
	}
	return &d
}

// all are d's panels, those of collapsed rows included.
func (d *dashboard) all() []grafanaPanel {
	var out []grafanaPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// use is a metric a panel (or template variable) queries.
type use struct{ panel, metric string }

// metrics are the metrics d's queries and query variables use.
func (d *dashboard) metrics(t *testing.T) []use {
	t.Helper()
	var out []use
	add := func(where, expr string) {
		names, err := promMetrics(expr)
		if err != nil {
			t.Errorf("%s: %q: %v", where, expr, err)
		}
		for _, n := range names {
			out = append(out, use{where, n})
		}
	}
	for _, p := range d.all() {
		for _, tg := range p.Targets {
			add(p.Title, tg.Expr)
		}
	}
	// A variable's label_values(selector, label) names a metric in its
	// selector; the label is not one.
	labelValues := regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		var obj struct{ Query string }
		if json.Unmarshal(v.Query, &obj) == nil && obj.Query != "" {
			q = obj.Query
		} else if s := ""; json.Unmarshal(v.Query, &s) == nil && s != "" {
			q = s
		}
		if m := labelValues.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		add("variable "+v.Name, q)
	}
	return out
}

// PromQL's functions and aggregation operators (prometheus.io/docs/
// prometheus/latest/querying/functions/ and .../operators/): names that
// are never metrics.
var promFuncs = strings.Fields(`
	abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time
	ceil changes clamp clamp_max clamp_min cos cosh count_over_time
	day_of_month day_of_week day_of_year days_in_month deg delta deriv
	double_exponential_smoothing exp floor histogram_avg histogram_count
	histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
	histogram_sum holt_winters hour idelta increase info irate label_join
	label_replace last_over_time ln log10 log2 mad_over_time max_over_time
	min_over_time minute month pi predict_linear present_over_time
	quantile_over_time rad rate resets round scalar sgn sin sinh sort
	sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
	stdvar_over_time sum_over_time tan tanh time timestamp vector year
	avg bottomk count count_values group limit_ratio limitk max min quantile
	stddev stdvar sum topk`)

// promKeywords are PromQL's other words: modifiers, set operators and
// float literals. Those in promLabelLists take a list of label names.
var (
	promKeywords   = strings.Fields(`bool offset and or unless atan2 inf nan start end`)
	promLabelLists = strings.Fields(`by without on ignoring group_left group_right`)
)

// promMetrics are the metric names in the PromQL expression expr (with
// Grafana's $variables), in order of first use: the identifiers that are
// neither functions, keywords, label names (in selectors and by/on
// lists), strings, numbers, durations nor variables. An identifier
// called like a function that PromQL does not know is an error, as are
// unbalanced brackets and strings.
func promMetrics(expr string) ([]string, error) {
	var names []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }
	// skipString returns the index after the string literal at i.
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	// skipTo returns the index after the close that matches the open
	// bracket at i, skipping strings.
	skipTo := func(i int, close byte) (int, error) {
		open := expr[i]
		depth := 0
		for j := i; j < len(expr); {
			switch expr[j] {
			case '"', '\'', '`':
				k, err := skipString(j)
				if err != nil {
					return 0, err
				}
				j = k
				continue
			case open:
				depth++
			case close:
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
			j++
		}
		return 0, fmt.Errorf("unbalanced %c at %d", open, i)
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	// Parentheses are only counted: the extractor does not parse.
	parens := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{': // label matchers
			j, err := skipTo(i, '}')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[': // a range or subquery: durations and variables
			j, err := skipTo(i, ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '#': // a comment
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$': // a Grafana variable: $name or ${name...}
			if i+1 < len(expr) && expr[i+1] == '{' {
				j, err := skipTo(i+1, '}')
				if err != nil {
					return nil, err
				}
				i = j
				break
			}
			for i++; i < len(expr) && isIdent(expr[i]); i++ {
			}
		case '0' <= c && c <= '9' || c == '.': // a number or a duration
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word, lower := expr[i:j], strings.ToLower(expr[i:j])
			next := nextNonSpace(j)
			called := next < len(expr) && expr[next] == '('
			switch {
			case slices.Contains(promLabelLists, lower):
				if called {
					k, err := skipTo(next, ')')
					if err != nil {
						return nil, err
					}
					j = k
				}
			case slices.Contains(promKeywords, lower), slices.Contains(promFuncs, lower):
			case called:
				return nil, fmt.Errorf("%s(...): not a PromQL function", word)
			case !slices.Contains(names, word):
				names = append(names, word)
			}
			i = j
		default:
			switch c {
			case '(':
				parens++
			case ')':
				parens--
			}
			if c == '}' || c == ']' || parens < 0 {
				return nil, fmt.Errorf("unbalanced %c at %d", c, i)
			}
			i++
		}
	}
	if parens != 0 {
		return nil, fmt.Errorf("unbalanced parentheses")
	}
	return names, nil
}

// startTURNSupernode runs a supernode with TURN on loopback and its
// metrics until the test ends; it returns its multiaddrs and metrics URL.
func startTURNSupernode(t *testing.T) (addrs []string, metricsURL string) {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &supernode.Config{KeyFile: filepath.Join(dir, "sn.key"), CreateKey: true, DataDir: filepath.Join(dir, "sn"),
		Listen: []string{"/ip4/127.0.0.1/tcp/0"}, TURNListen: "127.0.0.1:0", TURNAllowPrivatePeers: true, AllowPrivateDials: true}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- supernode.Run(ctx, cfg, supernode.Options{Logger: testlog.New(t, 0), MetricsListener: ln,
			Ready: func(a []string) { ready <- a }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("TURN supernode: %v", err)
	}
	return addrs, "http://" + ln.Addr().String() + "/metrics"
}

// refuseAttach opens an attach stream to the supernode at addrs and
// closes it instead of answering the challenge, so the relay refuses
// the attach (and counts it) before the stream ends.
func refuseAttach(t *testing.T, addrs []string) {
	t.Helper()
	ais, err := dht.ParseAddrInfos(addrs)
	if err != nil {
		t.Fatal(err)
	}
	// No resource manager: libp2p's metrics are package-level, and this
	// host's must not stand in for the supernode's or the node's.
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableMetrics(), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Connect(ctx, ais[0]); err != nil {
		t.Fatal(err)
	}
	st, err := h.NewStream(ctx, ais[0].ID, relay.ProtocolAttach)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(30 * time.Second))
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The challenge, then the refusal (counted before it is sent).
	var got []string
	for {
		m, err := relay.ReadMessage(st)
		if err != nil {
			t.Fatalf("attach stream: got %v, then %v; want a refusal", got, err)
		}
		if got = append(got, m.Type); m.Type == relay.TypeRefused {
			return
		}
	}
}
