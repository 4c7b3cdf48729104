package updateapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
)

// Client talks to a device's update endpoints (Routes) for `pc2 update`.
type Client struct {
	// Base is the device's admin API, e.g. http://192.168.1.20:4200.
	Base     string
	Password string // the admin password
	HTTP     *http.Client
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// Bundle is a release bundle folder's manifest, read but not verified
// (the device verifies).
type Bundle struct {
	Dir       string
	Manifest  *manifest.Manifest
	Raw, Sig  []byte
	artifacts map[string]string
}

// OpenBundle reads the manifest and signature of the bundle in dir.
func OpenBundle(dir string) (*Bundle, error) {
	raw, sig, err := manifest.ReadFiles(dir)
	if err != nil {
		return nil, err
	}
	var m manifest.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", manifest.ErrMalformed, filepath.Join(dir, manifest.ManifestFile), err)
	}
	b := &Bundle{Dir: dir, Manifest: &m, Raw: raw, Sig: sig, artifacts: map[string]string{}}
	for name, a := range m.Artifacts {
		if a.File != filepath.Base(a.File) {
			return nil, fmt.Errorf("%w: artifact file %q", manifest.ErrMalformed, a.File)
		}
		b.artifacts[name] = filepath.Join(dir, a.File)
	}
	return b, nil
}

// post sends a multipart body of the bundle's manifest, signature and the
// named artifacts to path; sent counts the artifact bytes sent.
func (c *Client) post(ctx context.Context, path string, b *Bundle, names []string, sent *atomic.Int64) (*Answer, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			parts := []struct {
				name string
				data []byte
			}{{PartManifest, b.Raw}}
			if len(b.Sig) > 0 {
				parts = append(parts, struct {
					name string
					data []byte
				}{PartSignature, b.Sig})
			}
			for _, p := range parts {
				w, err := mw.CreateFormField(p.name)
				if err != nil {
					return err
				}
				if _, err := w.Write(p.data); err != nil {
					return err
				}
			}
			for _, n := range names {
				f, err := os.Open(b.artifacts[n])
				if err != nil {
					return err
				}
				w, err := mw.CreateFormFile(n, filepath.Base(b.artifacts[n]))
				if err == nil {
					var k int64
					k, err = io.Copy(w, f)
					if sent != nil {
						sent.Add(k)
					}
				}
				f.Close()
				if err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.Base, "/")+path, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.SetBasicAuth("admin", c.Password)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

func readAnswer(resp *http.Response) (*Answer, error) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("the device answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if resp.StatusCode != http.StatusOK {
		if a.Error == "" {
			a.Error = resp.Status
		}
		return &a, fmt.Errorf("the device %s the update: %s", orWord(a.Result, "refused"), a.Error)
	}
	return &a, nil
}

func orWord(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Check asks the device whether it accepts the bundle and what it needs.
func (c *Client) Check(ctx context.Context, b *Bundle) (*Answer, error) {
	return c.post(ctx, "/api/update/check", b, nil, nil)
}

// Push uploads the bundle's artifacts the device needs (Check first).
// It returns the device's answer and the artifact bytes sent.
func (c *Client) Push(ctx context.Context, b *Bundle) (*Answer, int64, error) {
	a, err := c.Check(ctx, b)
	if err != nil {
		return a, 0, err
	}
	var sent atomic.Int64
	a, err = c.post(ctx, "/api/update", b, a.Needs, &sent)
	return a, sent.Load(), err
}

// Status returns the device's update status (with the log when asked).
func (c *Client) Status(ctx context.Context, withLog bool) (*update.Status, error) {
	u := strings.TrimSuffix(c.Base, "/") + "/api/update"
	if withLog {
		u += "?log=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("admin", c.Password)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("the device answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var s update.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("the device's update status: %w", err)
	}
	return &s, nil
}
