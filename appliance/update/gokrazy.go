package update

import (
	"net/http"
)

// gokrazyWrites are gokrazy's own update endpoints that write the disk
// (its update.go): partitions by PUT, the switch and test boot by POST.
var gokrazyWrites = []string{
	"PUT /update/mbr", "PUT /update/root", "PUT /update/boot", "PUT /update/bootonly",
	"POST /update/switch", "POST /update/testboot", "POST /update/bootonly",
}

// RefuseGokrazyUpdates makes gokrazy's own update API (served on its web
// interface when the image has a gokrazy password, and on its local
// socket) refuse to write: it would install any root or boot image
// without our signatures, version floor or health gate. Call it on
// http.DefaultServeMux before gokrazy.SuperviseServices registers that
// API there: these method-specific patterns are more specific than
// gokrazy's method-less ones, so they win, and they do not conflict with
// them. Reading endpoints (/update/features, the status pages) stay.
// Updates go through pc2's update API (updateapi) and pull.
func RefuseGokrazyUpdates(mux *http.ServeMux) {
	refuse := func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "pc2: gokrazy's update API is off on this device; install signed releases with `pc2 update` or update.url", http.StatusForbidden)
	}
	for _, p := range gokrazyWrites {
		mux.HandleFunc(p, refuse)
	}
}
