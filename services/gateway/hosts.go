package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/customdomain"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// Owners' own domains by invite (CustomInvite): an owner registers
// cloud.example.org with one of the operator's granting supernodes,
// POST /api/hosts with an invite code. The request carries no
// signature of its own: the proof in the host's DNS names the node, and
// only the node's key makes one, so whoever sends it can only do what
// the node's owner asked for. The supernode adds the host to the DID's
// tally of hosts (records.TallyHosts, signed like a grant) and marks
// the code used (records.TallyHostInvite); every gateway of the
// operator's reads that tally before serving the host. A registration
// lasts GrantTTL; registering again renews it without a code. A host
// whose proof is gone or names another node no longer counts toward the
// DID's share: the next registration drops it.

// initHosts reads the custom-domain invite codes (n.hostInvites stays
// nil, and /api/hosts absent, unless the policy is CustomInvite and
// this supernode has codes).
func (n *Names) initHosts() error {
	c := n.cfg.Custom
	if c == nil || c.Policy != CustomInvite {
		return nil
	}
	if len(c.Invites) == 0 {
		return nil // registrations go to the operator's other supernodes
	}
	if c.LookupTXT == nil || c.Tally == nil {
		return errors.New("names: the custom-domain invite policy needs DNS and tally lookups")
	}
	n.hostInvites = map[string]bool{}
	for _, code := range c.Invites {
		if len(code) < 8 {
			return fmt.Errorf("names: custom-domain invite code %q is shorter than 8 characters", code)
		}
		n.hostInvites[hashCode(code)] = true
	}
	return nil
}

// registerHost is POST /api/hosts.
func (n *Names) registerHost(r *http.Request, domain string) (*namesapi.HostInfo, int, error) {
	var req namesapi.HostRequest
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, 0, refuse(http.StatusBadRequest, "bad_request", "request body: %v", err)
	}
	host := strings.TrimSuffix(strings.ToLower(req.Host), ".")
	if err := customdomain.Check(host); err != nil {
		return nil, 0, refuse(http.StatusBadRequest, "invalid_host", "%v", err)
	}
	for d := range n.grants {
		if host == d || strings.HasSuffix(host, "."+d) {
			return nil, 0, refuse(http.StatusBadRequest, "invalid_host", "%s is under %s: claim a name instead", host, d)
		}
	}
	gr, err := n.granterOf(domain)
	if err != nil {
		return nil, 0, err
	}
	code := hashCode(req.Invite)
	if req.Invite != "" && !n.hostInvites[code] {
		return nil, 0, refuse(http.StatusForbidden, "invite_invalid", "unknown invite code") // before any lookup
	}
	c := n.cfg.Custom
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	id, err := c.proof(ctx, host)
	switch {
	case errors.Is(err, ErrNoRecord), customdomain.Refused(err):
		return nil, 0, refuse(http.StatusForbidden, "no_proof", "%s: no valid proof at %s: %v", host, customdomain.TXTName(host), err)
	case err != nil:
		return nil, 0, fmt.Errorf("proof of %s: %w", host, err)
	}

	subject := records.TallyHosts + id.String()
	hosts := func() ([]records.TalliedName, error) {
		switch t, err := c.Tally(ctx, domain, subject); {
		case err == nil:
			return t.Live(n.cfg.Now().Unix()), nil
		case errors.Is(err, dht.ErrNotFound):
			return nil, nil
		default:
			return nil, fmt.Errorf("hosts of %s: %w", id.DID(), err)
		}
	}
	// The proofs of the DID's other hosts, read before the names API's
	// lock: up to perNode DNS lookups, which would hold every claim at
	// this supernode meanwhile. Only a new registration needs them.
	gone := map[string]bool{}
	if req.Invite != "" {
		before, err := hosts()
		if err != nil {
			return nil, 0, err
		}
		if !slices.ContainsFunc(before, func(t records.TalliedName) bool { return t.Name == host }) { // else a renewal
			for _, t := range before {
				pid, err := c.proof(ctx, t.Name)
				gone[t.Name] = (err == nil && pid != id) || errors.Is(err, ErrNoRecord) || customdomain.Refused(err)
			}
		}
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.cfg.Now()
	listed, err := hosts()
	if err != nil {
		return nil, 0, err
	}
	expires := now.Add(n.cfg.GrantTTL).Unix()
	info := &namesapi.HostInfo{Host: host, DID: id.DID(), Domain: domain, Expires: time.Unix(expires, 0).UTC()}
	if i := slices.IndexFunc(listed, func(t records.TalliedName) bool { return t.Name == host }); i >= 0 {
		// A renewal: written only when under half its time is left.
		if listed[i].Expires > now.Add(n.cfg.GrantTTL/2).Unix() {
			info.Expires = time.Unix(listed[i].Expires, 0).UTC()
			return info, http.StatusOK, nil
		}
		if err := n.tally(ctx, gr, domain, subject, func(names []records.TalliedName) []records.TalliedName {
			names = slices.DeleteFunc(names, func(t records.TalliedName) bool { return t.Name == host })
			return append(names, records.TalliedName{Name: host, Expires: expires})
		}); err != nil {
			return nil, 0, fmt.Errorf("renew %s: %w", host, err)
		}
		n.log.Info("own domain renewed", "host", host, "did", id.DID(), "domain", domain)
		return info, http.StatusOK, nil
	}

	if req.Invite == "" {
		return nil, 0, refuse(http.StatusForbidden, "invite_required", "own domains at %s's gateways need an invite code", domain)
	}
	switch t, err := c.Tally(ctx, domain, records.TallyHostInvite+code); {
	case err == nil:
		for _, used := range t.Live(now.Unix()) {
			if used.Name != host {
				return nil, 0, refuse(http.StatusForbidden, "invite_used", "this invite code was already used")
			}
		}
	case !errors.Is(err, dht.ErrNotFound):
		return nil, 0, fmt.Errorf("invite code: %w", err)
	}
	// The DID's share: hosts whose proof still names it. Those known to
	// be gone (no proof, or another node's) leave the tally; one
	// registered since the proofs were read counts.
	kept := 0
	for _, t := range listed {
		if !gone[t.Name] {
			kept++
		}
	}
	if kept >= c.perNode() {
		return nil, 0, refuse(http.StatusForbidden, "too_many_hosts", "%s has %d own domains at %s's gateways, the most one node may", id.DID(), kept, domain)
	}
	if !n.perAddr.allow(clientKey(r)) {
		return nil, 0, refuse(http.StatusTooManyRequests, "rate_limited", "too many registrations from this address; try again in an hour")
	}
	// The code first: a failure after it leaves the code spent on this
	// host, which registering again (with it) completes.
	if err := n.tally(ctx, gr, domain, records.TallyHostInvite+code, func([]records.TalliedName) []records.TalliedName {
		return []records.TalliedName{{Name: host, Expires: expires}}
	}); err != nil {
		return nil, 0, fmt.Errorf("register %s: %w", host, err)
	}
	if err := n.tally(ctx, gr, domain, subject, func(names []records.TalliedName) []records.TalliedName {
		names = slices.DeleteFunc(names, func(t records.TalliedName) bool { return t.Name == host || gone[t.Name] })
		return append(names, records.TalliedName{Name: host, Expires: expires})
	}); err != nil {
		return nil, 0, fmt.Errorf("register %s: %w", host, err)
	}
	if n.cfg.Changed != nil {
		n.cfg.Changed(host)
	}
	n.log.Info("own domain registered", "host", host, "did", id.DID(), "domain", domain)
	return info, http.StatusCreated, nil
}
