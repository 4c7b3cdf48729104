package cloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pc2/pc2/services/gateway/namesapi"
)

// RenewName renews the owner's name at the names API it was claimed at
// when less than half of its grant's lifetime is left: grants are short
// (so a released or revoked name's old grant is not honoured for long)
// and would lapse without it. It reports whether it renewed; no name, or
// one with time left, is no error.
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
	if ni.DID != s.opts.Node.DID() {
		return false, fmt.Errorf("renew %s: the name is held by %s, not this node", o.Name, ni.DID)
	}
	if o.NameOperator == "" {
		// Claimed before the operator was recorded: pin it now.
		if err := s.state.updateOwner(func(o *owner) { o.NameOperator = ni.Operator }); err != nil {
			return false, fmt.Errorf("renew %s: %w", o.Name, err)
		}
	}
	now := s.opts.Now()
	if half := ni.IssuedAt.Add(ni.Expires.Sub(ni.IssuedAt) / 2); now.Before(half) {
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
