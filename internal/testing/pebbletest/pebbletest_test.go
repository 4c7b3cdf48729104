package pebbletest

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	s := Start(t, Options{})
	if _, err := s.IssuingRoots(); err != nil {
		t.Fatal(err)
	}
	if s.HTTPPort == 0 || s.TLSPort == 0 {
		t.Fatalf("got ports %d/%d, want both set", s.HTTPPort, s.TLSPort)
	}

	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.DNSAddr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if addrs, err := r.LookupHost(ctx, "nobody.example.test"); err == nil {
		t.Fatalf("an unknown name resolves to %v; want no answer", addrs)
	}
	if err := s.AddA("alice.example.test", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if addrs, err := r.LookupHost(ctx, "alice.example.test"); err != nil || !slices.Equal(addrs, []string{"127.0.0.1"}) {
		t.Fatalf("alice.example.test: got %v %v, want [127.0.0.1]", addrs, err)
	}
	if err := s.SetTXT("_acme-challenge.example.test", "token"); err != nil {
		t.Fatal(err)
	}
	if txt, err := r.LookupTXT(ctx, "_acme-challenge.example.test"); err != nil || !slices.Equal(txt, []string{"token"}) {
		t.Fatalf("TXT: got %v %v, want [token]", txt, err)
	}
	if err := s.ClearTXT("_acme-challenge.example.test"); err != nil {
		t.Fatal(err)
	}
	if got := s.Orders(); got != 0 {
		t.Fatalf("got %d orders, want 0", got)
	}
}
