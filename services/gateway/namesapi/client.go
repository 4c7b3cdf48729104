// Package namesapi is the wire format of a gateway's names API (the
// supernode's server is services/gateway) and its client, used by
// `pc2 name` and the personal cloud's setup wizard.
package namesapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

// Client calls a gateway's names API (pc2 name, the personal node's
// wizard).
type Client struct {
	// API is the base URL; empty: https://<domain of the name>. The
	// request's Host is always the domain, so an API URL naming an address
	// works too.
	API string
	// HTTP is the client; nil: one with a 30 s timeout that checks the
	// certificate against the name's domain.
	HTTP *http.Client
	// Now is the clock claims are signed with; nil: time.Now.
	Now func() time.Time
}

// APIError is a refusal from the API.
type APIError struct {
	Status  int    // HTTP status
	Code    string // machine-readable reason, e.g. "taken"
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// SignClaim makes a claim request for name (a full name) signed with key.
func SignClaim(key ed25519.PrivateKey, name string, action records.Action, now time.Time) (records.SignedClaim, error) {
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return records.SignedClaim{}, err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return records.SignedClaim{}, err
	}
	return records.SignClaim(key, &records.Claim{Version: records.Version, Name: name, DID: id, Action: action,
		IssuedAt: now.Unix(), Nonce: nonce})
}

// Claim asks for name (label.domain), or renews it, as key's DID.
func (c *Client) Claim(ctx context.Context, key ed25519.PrivateKey, name, invite string) (*NameInfo, error) {
	sc, err := SignClaim(key, name, records.ActionHold, c.now())
	if err != nil {
		return nil, err
	}
	var ni NameInfo
	return &ni, c.do(ctx, http.MethodPost, name, "/api/names", ClaimRequest{Claim: sc, Invite: invite}, &ni)
}

// Release gives name up.
func (c *Client) Release(ctx context.Context, key ed25519.PrivateKey, name string) (*NameInfo, error) {
	sc, err := SignClaim(key, name, records.ActionRelease, c.now())
	if err != nil {
		return nil, err
	}
	var ni NameInfo
	return &ni, c.do(ctx, http.MethodDelete, name, "/api/names/"+url.PathEscape(name), ClaimRequest{Claim: sc}, &ni)
}

// Lookup returns name's grant.
func (c *Client) Lookup(ctx context.Context, name string) (*NameInfo, error) {
	var ni NameInfo
	return &ni, c.do(ctx, http.MethodGet, name, "/api/names/"+url.PathEscape(name), nil, &ni)
}

// Available says whether name could be claimed.
func (c *Client) Available(ctx context.Context, name string) (*Availability, error) {
	var a Availability
	return &a, c.do(ctx, http.MethodGet, name, "/api/names/"+url.PathEscape(name)+"/available", nil, &a)
}

// RegisterHost registers an owner's own domain host with domain's
// operator (whose gateways take own domains by invite), or renews it.
func (c *Client) RegisterHost(ctx context.Context, domain, host, invite string) (*HostInfo, error) {
	if err := records.ValidDomain(domain); err != nil {
		return nil, err
	}
	var hi HostInfo
	return &hi, c.doDomain(ctx, http.MethodPost, domain, "/api/hosts", HostRequest{Host: host, Invite: invite}, &hi)
}

// Supernodes asks a domain's gateway for the domain's supernodes.
func (c *Client) Supernodes(ctx context.Context, domain string) (*SupernodeList, error) {
	if err := records.ValidDomain(domain); err != nil {
		return nil, err
	}
	var l SupernodeList
	return &l, c.doDomain(ctx, http.MethodGet, domain, "/api/supernodes", nil, &l)
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) do(ctx context.Context, method, name, path string, body, out any) error {
	_, domain, err := records.SplitName(name)
	if err != nil {
		return err
	}
	return c.doDomain(ctx, method, domain, path, body, out)
}

func (c *Client) doDomain(ctx context.Context, method, domain, path string, body, out any) error {
	base := c.API
	if base == "" {
		base = "https://" + domain
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Host = domain
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		// The certificate is the domain's, whatever address API names.
		hc = &http.Client{Timeout: 30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: domain}, Proxy: http.ProxyFromEnvironment}}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("names API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("names API: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Code string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s answered %s for %s", base, resp.Status, domain)
		}
		return &APIError{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("names API: answer: %w", err)
	}
	return nil
}
