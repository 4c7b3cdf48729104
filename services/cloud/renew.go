package cloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// RenewName renews the owner's name at the names API it was claimed at
// when less than half of the time its grant routes visitors is left:
// that time is short (so a released or revoked name's old grant is not
// honoured for long) and would run out without it. It reports whether it
// renewed; no name, or one with time left, is no error. A name the node
// no longer holds (revoked, granted to an earlier claim, released) is
// forgotten, and the dashboard says why.
func (s *Server) RenewName(ctx context.Context) (bool, error) {
	o := s.state.getOwner()
	key := s.opts.Node.Key()
	if o.Name == "" || key == nil {
		return false, nil
	}
	c := &namesapi.Client{API: o.NameAPI, HTTP: s.opts.HTTPClient, Now: s.opts.Now}
	ni, err := c.Lookup(ctx, o.Name)
	if err != nil {
		return false, fmt.Errorf("renew %s: %w", o.Name, err)
	}
	var lost string
	switch {
	case ni.DID != s.opts.Node.DID():
		// Two supernodes granted the name at once and the other claim
		// came first (records.Beats), or it lapsed and was claimed again.
		lost = fmt.Sprintf("%s was granted to another node (%s), whose claim came first", o.Name, ni.DID)
	case ni.Status == records.StatusRevoked:
		lost = o.Name + " was revoked by the operator of " + strings.SplitN(o.Name, ".", 2)[1]
		if ni.Reason != "" {
			lost += ": " + ni.Reason
		}
	case ni.Status == records.StatusReleased:
		lost = o.Name + " was released"
	}
	if lost != "" {
		name := o.Name
		if err := s.state.updateOwner(func(o *owner) { o.Name, o.NameAPI, o.NameOperator, o.NameLost = "", "", "", lost }); err != nil {
			return false, fmt.Errorf("renew %s: %w", name, err)
		}
		s.log.Warn("name lost", "name", name, "why", lost)
		return false, fmt.Errorf("renew %s: %s", name, lost)
	}
	if o.NameOperator == "" {
		// Claimed before the operator was recorded: pin it now.
		if err := s.state.updateOwner(func(o *owner) { o.NameOperator = ni.Operator }); err != nil {
			return false, fmt.Errorf("renew %s: %w", o.Name, err)
		}
	}
	now := s.opts.Now()
	// Half of the time the grant routes visitors (its reservation,
	// Expires, is longer).
	until := ni.Expires
	if !ni.RouteUntil.IsZero() {
		until = ni.RouteUntil
	}
	if half := ni.IssuedAt.Add(until.Sub(ni.IssuedAt) / 2); now.Before(half) {
		return false, nil
	}
	if _, err := c.Claim(ctx, key, o.Name, ""); err != nil {
		var ae *namesapi.APIError
		if errors.As(err, &ae) {
			return false, fmt.Errorf("renew %s: %s", o.Name, ae.Message)
		}
		return false, fmt.Errorf("renew %s: %w", o.Name, err)
	}
	s.log.Info("name renewed", "name", o.Name, "expired", ni.Expires.Format(time.RFC3339))
	return true, nil
}

// NameOperator is the domain and operator DID of the owner's name's
// grant, as the node claimed it ("" when it holds no name).
func (s *Server) NameOperator() (domain, operator string) {
	o := s.state.getOwner()
	if o.Name == "" || o.NameOperator == "" {
		return "", ""
	}
	_, domain, _ = strings.Cut(o.Name, ".")
	return domain, o.NameOperator
}
