// Package updateapi is the over-the-air update endpoints of the device's
// admin API (port 4200), from both ends: the device serves them (Routes)
// and hands what it receives to its updater; `pc2 update` on the build
// host pushes a release bundle through them (Client, OpenBundle). Both
// ends share the wire types (Answer, update.Status, the part names).
package updateapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
)

// The admin API's update endpoints (Routes), for `pc2 update`:
//
//	GET  /api/update        Status; ?log=1 adds the last update's log
//	POST /api/update/check  multipart: manifest, signature -> Plan (what
//	                        the device needs), or the refusal
//	POST /api/update        multipart: manifest, signature, then the
//	                        needed artifacts in the order root, boot ->
//	                        installs, answers, then calls installed
//	                        (the device reboots into the test boot)
//
// The parts are read as they arrive: the manifest is verified before a
// byte of an artifact is read, and an artifact is checked while it is
// staged, so a refused upload is answered at once.
const (
	PartManifest  = "manifest"
	PartSignature = "signature"
)

// Results in Answer.Result: the updater's outcomes, here for the client's
// users.
const (
	Installed = update.Installed // written, test boot next
	Refused   = update.Refused
	Failed    = update.Failed
)

// Answer is the JSON body of the update endpoints' answers.
type Answer struct {
	Version string   `json:"version,omitempty"`
	Needs   []string `json:"needs,omitempty"`
	Result  string   `json:"result,omitempty"` // Installed, Refused or Failed
	Error   string   `json:"error,omitempty"`
}

// Routes adds the update endpoints of u to mux, each wrapped by auth (the
// admin password check). installed is called after the answer to a
// successful install.
func Routes(mux *http.ServeMux, u *update.Updater, auth func(http.HandlerFunc) http.HandlerFunc, installed func(*manifest.Manifest)) {
	mux.HandleFunc("GET /api/update", auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, http.StatusOK, u.Status(r.URL.Query().Get("log") != ""))
	}))
	mux.HandleFunc("POST /api/update/check", auth(func(w http.ResponseWriter, r *http.Request) {
		_, raw, sig, err := readHead(r)
		if err != nil {
			writeJSONAnswer(w, http.StatusBadRequest, Answer{Result: Refused, Error: err.Error()})
			return
		}
		p, err := u.Check(raw, sig)
		if err != nil {
			// A refused push is the last update's result too.
			u.Refuse(raw, "push from "+r.RemoteAddr, err)
			writeJSONAnswer(w, statusOf(err), Answer{Result: Refused, Error: err.Error()})
			return
		}
		writeJSONAnswer(w, http.StatusOK, Answer{Version: p.Manifest.Version, Needs: p.Needs})
	}))
	mux.HandleFunc("POST /api/update", auth(func(w http.ResponseWriter, r *http.Request) {
		mr, raw, sig, err := readHead(r)
		if err != nil {
			writeJSONAnswer(w, http.StatusBadRequest, Answer{Result: Refused, Error: err.Error()})
			return
		}
		fetch := func(_ context.Context, name string) (io.ReadCloser, error) {
			p, err := mr.NextPart()
			if err != nil {
				return nil, fmt.Errorf("%w: it has no %s part: %v", errUpload, name, err)
			}
			if p.FormName() != name {
				return nil, fmt.Errorf("%w: its next part is %q, the device needs %q", errUpload, p.FormName(), name)
			}
			return p, nil
		}
		m, err := u.Install(r.Context(), "push from "+r.RemoteAddr, raw, sig, fetch)
		if err != nil {
			result := Failed
			if statusOf(err) != http.StatusInternalServerError {
				result = Refused
			}
			writeJSONAnswer(w, statusOf(err), Answer{Version: manifest.UnverifiedVersion(raw), Result: result, Error: err.Error()})
			return
		}
		writeJSONAnswer(w, http.StatusOK, Answer{Version: m.Version, Result: Installed})
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if installed != nil {
			installed(m)
		}
	}))
}

// readHead reads the manifest and signature parts.
func readHead(r *http.Request) (*multipart.Reader, []byte, []byte, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("updateapi: want a multipart upload: %w", err)
	}
	var got [2][]byte
	for i, name := range []string{PartManifest, PartSignature} {
		p, err := mr.NextPart()
		if err != nil {
			if name == PartSignature && errors.Is(err, io.EOF) {
				return mr, got[0], nil, nil
			}
			return nil, nil, nil, fmt.Errorf("updateapi: the upload has no %s part: %w", name, err)
		}
		if p.FormName() != name {
			if name == PartSignature {
				// Unsigned: the verification says so (and records it).
				return mr, got[0], nil, nil
			}
			return nil, nil, nil, fmt.Errorf("updateapi: the upload starts with %q, want %q", p.FormName(), name)
		}
		b, err := io.ReadAll(io.LimitReader(p, manifest.MaxSize+1))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("updateapi: read %s: %w", name, err)
		}
		if len(b) > manifest.MaxSize {
			return nil, nil, nil, fmt.Errorf("%w: the %s is larger than %d bytes", manifest.ErrMalformed, name, manifest.MaxSize)
		}
		got[i] = b
	}
	return mr, got[0], got[1], nil
}

// errUpload is a push whose parts are not what the device asked for.
var errUpload = errors.New("updateapi: malformed upload")

// statusOf maps Install's and Check's errors to HTTP statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errUpload):
		return http.StatusBadRequest
	case errors.Is(err, manifest.ErrUnsigned), errors.Is(err, manifest.ErrBadSignature):
		return http.StatusForbidden
	case errors.Is(err, manifest.ErrMalformed), errors.Is(err, manifest.ErrArtifact), errors.Is(err, manifest.ErrBoard),
		errors.Is(err, manifest.ErrDowngrade), errors.Is(err, update.ErrNoKeys):
		return http.StatusUnprocessableEntity
	case errors.Is(err, update.ErrBusy), errors.Is(err, update.ErrTesting):
		return http.StatusConflict
	case errors.Is(err, update.ErrNoSpace):
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

func writeJSONAnswer(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
