package personal

import (
	"encoding/json"
	"html/template"
	"net/http"
	"time"
)

// Handler serves the status page (/), /api/status (JSON) and /healthz.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if st := n.Status(); st.State != "online" {
			http.Error(w, st.State+": "+st.LastError, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		statusPage.Execute(w, n.Status())
	})
	if n.opts.Routes != nil {
		n.opts.Routes(mux)
	}
	return mux
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta http-equiv="refresh" content="10">
<title>PC2 node</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:2em auto;padding:0 1em;color:#222}
code{word-break:break-all}dt{font-weight:600;margin-top:.6em}.online{color:#070}.error,.connecting{color:#a50}</style>
</head><body>
<h1>PC2 personal node</h1>
<dl>
<dt>Identity</dt><dd><code id="did">{{.DID}}</code></dd>
<dt>State</dt><dd class="{{.State}}" id="state">{{.State}}{{with .Detail}} ({{.}}){{end}}</dd>
{{with .LastError}}<dt>Last error</dt><dd class="error">{{.}}</dd>{{end}}
<dt>Supernodes</dt><dd>{{range .Supernodes}}<code>{{.}}</code><br>{{else}}none configured{{end}}</dd>
<dt>Connected peers</dt><dd>{{.Peers}}</dd>
<dt>DID record</dt><dd>{{if .Seq}}seq {{.Seq}}, published {{when .Published}}, stored on {{.StoredOn}} of {{.SentTo}} supernodes{{else}}not published yet{{end}}</dd>
{{if .NewKey}}<dt>Recovery words</dt><dd>A new identity was created on this boot. Its 24 words are on the data partition; the setup wizard will show them.</dd>{{end}}
<dt>Version</dt><dd>{{with .Version}}{{.}}{{else}}development{{end}}</dd>
<dt>Running since</dt><dd>{{when .Started}}</dd>
</dl>
</body></html>
`))
