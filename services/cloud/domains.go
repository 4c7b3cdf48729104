package cloud

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pc2/pc2/services/gateway/customdomain"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// Own domains: the owner adds cloud.example.org (or an apex) and the
// page shows the DNS records to create at the domain's DNS provider: a
// CNAME to the node's name (whose DNS leads to the operator's gateways;
// for an apex, which cannot have a CNAME, A/AAAA records with the
// name's addresses) and a TXT record at _pc2.<domain> holding the proof
// the node's key signs (customdomain.Sign). The gateways serve the
// domain for this node once they find the proof. The page reads the TXT
// record back to say whether it is in place.

// maxDomains bounds the owner's own domains (the operators' gateways
// bound how many they serve per node too).
const maxDomains = 8

// domainRow is one own domain on the page: the DNS records to create
// and what the DNS says now.
type domainRow struct {
	Domain  string
	Records []dnsRecord
	Status  string
	OK      bool
	// Registered is until when the name's operator serves it by
	// registration ("" when not registered).
	Registered string
}

// dnsRecord is one record to create.
type dnsRecord struct{ Name, Type, Value string }

// records are the DNS records that make domain this node's: a CNAME to
// the node's name (an apex, which cannot have one, gets the name's
// addresses) and the proof.
func domainRecords(domain, name string, addrs []string, proof string) []dnsRecord {
	var out []dnsRecord
	switch {
	case strings.Count(domain, ".") > 1:
		out = append(out, dnsRecord{domain, "CNAME", name + "."})
	case len(addrs) == 0:
		out = append(out, dnsRecord{domain, "A/AAAA", "the addresses of " + name + " (not found right now)"})
	default:
		for _, a := range addrs {
			t := "A"
			if strings.Contains(a, ":") {
				t = "AAAA"
			}
			out = append(out, dnsRecord{domain, t, a})
		}
	}
	return append(out, dnsRecord{customdomain.TXTName(domain), "TXT", proof})
}

func (s *Server) handleDomainsPage(w http.ResponseWriter, r *http.Request) {
	o := s.state.getOwner()
	key := s.opts.Node.Key()
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var rows []domainRow
	var addrs []string
	if o.Name != "" {
		addrs, _ = net.DefaultResolver.LookupHost(ctx, o.Name)
	}
	for _, d := range o.Domains {
		var proof string
		if key != nil {
			proof, _ = customdomain.Sign(key, d)
		}
		row := domainRow{Domain: d, Records: domainRecords(d, o.Name, addrs, proof)}
		row.Status, row.OK = s.checkDomain(ctx, d)
		if reg, ok := o.Registered[d]; ok {
			row.Registered = reg.Until.UTC().Format("2 January 2006")
		}
		rows = append(rows, row)
	}
	s.render(w, r, http.StatusOK, "domains", "Your own domains", struct {
		Name     string
		Rows     []domainRow
		Msg, Err string
	}{o.Name, rows, r.URL.Query().Get("msg"), r.URL.Query().Get("err")})
}

// DomainProofs reads the proof of each of the owner's own domains from
// DNS: true when it names this node, false when the DNS says otherwise
// (no proof, or another node's); a domain whose lookup failed is left
// out. The node keeps certificates of its own for the true ones.
func (s *Server) DomainProofs(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	for _, d := range s.state.getOwner().Domains {
		txts, err := s.lookupTXT()(ctx, customdomain.TXTName(d))
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			out[d] = false
		case err != nil:
			continue
		default:
			id, err := customdomain.Verify(txts, d)
			out[d] = err == nil && id.DID() == s.opts.Node.DID()
		}
	}
	return out
}

// lookupTXT is Options.LookupTXT or the system's resolver.
func (s *Server) lookupTXT() func(ctx context.Context, name string) ([]string, error) {
	if s.opts.LookupTXT != nil {
		return s.opts.LookupTXT
	}
	return net.DefaultResolver.LookupTXT
}

// checkDomain reads domain's proof back from DNS.
func (s *Server) checkDomain(ctx context.Context, domain string) (string, bool) {
	txts, err := s.lookupTXT()(ctx, customdomain.TXTName(domain))
	if err != nil {
		return "no proof found in DNS yet (" + err.Error() + ")", false
	}
	id, err := customdomain.Verify(txts, domain)
	switch {
	case err != nil:
		return err.Error(), false
	case id.DID() != s.opts.Node.DID():
		return "the proof in DNS is another node's (" + id.DID() + ")", false
	}
	return "the proof is in place: the gateways serve " + domain + " for this node", true
}

func (s *Server) handleDomainAdd(w http.ResponseWriter, r *http.Request) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(r.PostFormValue("domain"))), ".")
	if err := customdomain.Check(d); err != nil {
		back(w, r, "/_/domains", "", "not a domain name: "+d)
		return
	}
	if o := s.state.getOwner(); o.Name != "" && (d == o.Name || strings.HasSuffix(o.Name, "."+d)) {
		back(w, r, "/_/domains", "", d+" is your PC2 name's own domain")
		return
	}
	var full bool
	err := s.state.updateOwner(func(o *owner) {
		if slices.Contains(o.Domains, d) {
			return
		}
		if full = len(o.Domains) >= maxDomains; !full {
			o.Domains = append(o.Domains, d)
		}
	})
	switch {
	case err != nil:
		back(w, r, "/_/domains", "", err.Error())
	case full:
		back(w, r, "/_/domains", "", "at most 8 own domains")
	default:
		s.log.Info("own domain added", "domain", d)
		back(w, r, "/_/domains", "added "+d+": create the DNS records below", "")
	}
}

func (s *Server) handleDomainRemove(w http.ResponseWriter, r *http.Request) {
	d := r.PostFormValue("domain")
	if err := s.state.updateOwner(func(o *owner) {
		o.Domains = slices.DeleteFunc(o.Domains, func(x string) bool { return x == d })
		delete(o.Registered, d)
	}); err != nil {
		back(w, r, "/_/domains", "", err.Error())
		return
	}
	back(w, r, "/_/domains", "removed "+d+" here; delete its TXT record at your DNS provider to stop it", "")
}

// Registration (gateway.CustomInvite): where the operator of the
// owner's name takes own domains by invite, the owner registers each
// with a code at the names API the name was claimed at; the node
// renews the registration at half its time (RenewHosts).

func (s *Server) handleDomainRegister(w http.ResponseWriter, r *http.Request) {
	d := r.PostFormValue("domain")
	o := s.state.getOwner()
	if !slices.Contains(o.Domains, d) {
		back(w, r, "/_/domains", "", "add "+d+" first")
		return
	}
	if o.Name == "" {
		back(w, r, "/_/domains", "", "claim a PC2 name first: the domain is registered with its operator")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := s.registerHost(ctx, o, d, strings.TrimSpace(r.PostFormValue("invite"))); err != nil {
		back(w, r, "/_/domains", "", err.Error())
		return
	}
	back(w, r, "/_/domains", "registered "+d+" with the operator of "+o.Name, "")
}

// registerHost registers (or renews) d with the operator of o's name.
func (s *Server) registerHost(ctx context.Context, o owner, d, invite string) error {
	_, domain, _ := strings.Cut(o.Name, ".")
	c := &namesapi.Client{API: o.NameAPI, HTTP: s.opts.HTTPClient, Now: s.opts.Now}
	hi, err := c.RegisterHost(ctx, domain, d, invite)
	if err != nil {
		var ae *namesapi.APIError
		if errors.As(err, &ae) {
			return fmt.Errorf("register %s: %s", d, ae.Message)
		}
		return fmt.Errorf("register %s: %w", d, err)
	}
	if err := s.state.updateOwner(func(o *owner) {
		if !slices.Contains(o.Domains, d) {
			return // removed meanwhile
		}
		if o.Registered == nil {
			o.Registered = map[string]hostRegistration{}
		}
		o.Registered[d] = hostRegistration{At: s.opts.Now(), Until: hi.Expires}
	}); err != nil {
		return fmt.Errorf("register %s: %w", d, err)
	}
	s.log.Info("own domain registered", "domain", d, "until", hi.Expires)
	return nil
}

// RenewHosts renews the own domains registered with the name's
// operator when less than half of their time is left; the first error
// is returned after all were tried.
func (s *Server) RenewHosts(ctx context.Context) error {
	o := s.state.getOwner()
	if o.Name == "" {
		return nil
	}
	now := s.opts.Now()
	var errs []error
	for _, d := range o.Domains {
		reg, ok := o.Registered[d]
		if !ok || now.Before(reg.At.Add(reg.Until.Sub(reg.At)/2)) {
			continue
		}
		if err := s.registerHost(ctx, o, d, ""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
