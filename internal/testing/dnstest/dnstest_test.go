package dnstest

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

func lookup(t *testing.T, s *Server, name string) ([]string, error) {
	t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, s.Addr)
	}}
	return r.LookupTXT(context.Background(), name)
}

// TestServer: the records given are answered, one TXT record per
// value; after Set, the new ones and no more.
func TestServer(t *testing.T) {
	s := Start(t, Records{Zones: []string{"example.test"}, TXT: map[string][]string{"_x.example.test": {"one", "two words"}}})
	got, err := lookup(t, s, "_x.example.test")
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{"one", "two words"}) {
		t.Fatalf("TXT: %q %v\n%s", got, err, s.Log())
	}
	s.Set(Records{Zones: []string{"example.test"}})
	got, err = lookup(t, s, "_x.example.test")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("after the record was removed: %q %v\n%s", got, err, s.Log())
	}
}
