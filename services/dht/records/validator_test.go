package records

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	record "github.com/libp2p/go-libp2p-record"
)

// resignDID re-encodes a did record's fields and signs them with key, whoever
// the record names: the Sign functions refuse to do that.
func resignDID(tb testing.TB, key ed25519.PrivateKey, d *DID) []byte {
	tb.Helper()
	body := mustMarshal(tb, d)
	return mustMarshal(tb, &envelope{Kind: KindDID, Body: body, Sig: sign(key, tagDID, body)})
}

func TestRejectsForgedSignature(t *testing.T) {
	v := strictValidator(t)
	d := testDID(t, keyA)
	key := DIDKey(d.ID)
	val := signDID(t, keyA, d)

	for _, i := range []int{0, 31, 63} {
		env := decodeEnv(t, val)
		env.Sig[i] ^= 0x01
		_, err := v.ParseDID(key, mustMarshal(t, env))
		wantErr(t, err, ErrBadSignature)
	}

	// A changed body under the old signature.
	env := decodeEnv(t, val)
	bumped := *d
	bumped.Seq++
	env.Body = mustMarshal(t, &bumped)
	_, err := v.ParseDID(key, mustMarshal(t, env))
	wantErr(t, err, ErrBadSignature)

	// The record of A, signed by B.
	_, err = v.ParseDID(key, resignDID(t, keyB, d))
	wantErr(t, err, ErrBadSignature)

	// The right key, the wrong domain tag: a did body signed as a domain
	// record, a grant or a claim must not verify.
	body := mustMarshal(t, d)
	for _, tag := range []string{tagDomain, tagGrant, tagClaim, ""} {
		value := mustMarshal(t, &envelope{Kind: KindDID, Body: body, Sig: sign(keyA, tag, body)})
		_, err := v.ParseDID(key, value)
		wantErr(t, err, ErrBadSignature)
	}

	// Missing or short signatures.
	for _, sig := range [][]byte{nil, env.Sig[:63], append(bytes.Clone(env.Sig), 0)} {
		value := mustMarshal(t, &envelope{Kind: KindDID, Body: body, Sig: sig})
		_, err := v.ParseDID(key, value)
		wantErr(t, err, ErrBadSignature)
	}

	// Grant and domain signed by someone other than the operator they name.
	g := testGrant(t, testName, idOf(t, keyA), StatusRevoked)
	gb := mustMarshal(t, g)
	value := mustMarshal(t, &envelope{Kind: KindName, Body: gb, Sig: sign(keyOther, tagGrant, gb)})
	_, err = v.ParseName(NameKey(testName), value)
	wantErr(t, err, ErrBadSignature)

	db := mustMarshal(t, testDomainRecord(t, keyOperator))
	value = mustMarshal(t, &envelope{Kind: KindDomain, Body: db, Sig: sign(keyOther, tagDomain, db)})
	_, err = v.ParseDomain(DomainKey(testDomain), value)
	wantErr(t, err, ErrBadSignature)
}

func TestRejectsWrongKey(t *testing.T) {
	v := strictValidator(t)
	a, b := idOf(t, keyA), idOf(t, keyB)
	didA := signDID(t, keyA, testDID(t, keyA))
	name := activeName(t)
	domain := signDomain(t, keyOperator, testDomainRecord(t, keyOperator))

	for _, tc := range []struct {
		what, key string
		value     []byte
	}{
		{"did of A under B's key", DIDKey(b), didA},
		{"did under its DID form", "/did/" + a.DID(), didA},
		{"did under a sub-key", DIDKey(a) + "/x", didA},
		{"did under a /name/ key", "/name/" + a.String(), didA},
		{"did under the name's key", NameKey(testName), didA},
		{"did under a /domain/ key", DomainKey(testDomain), didA},
		{"name under another name's key", NameKey("bob.ela.city"), name},
		{"name under its domain's key", NameKey(testDomain), name},
		{"name under a /did/ key", DIDKey(a), name},
		{"name under a /domain/ key", DomainKey(testName), name},
		{"domain under another domain's key", DomainKey("other.city"), domain},
		{"domain under a /name/ key", NameKey(testDomain), domain},
		{"domain under a /did/ key", DIDKey(a), domain},
	} {
		t.Run(tc.what, func(t *testing.T) {
			_, err := v.Parse(tc.key, tc.value)
			wantErr(t, err, ErrWrongKey)
			wantErr(t, v.Namespaced().Validate(tc.key, tc.value), ErrWrongKey)
		})
	}

	// Each Parse function checks its own namespace, whatever the key says.
	_, err := v.ParseName(DIDKey(a), didA)
	wantErr(t, err, ErrWrongKey)
	_, err = v.ParseDID(NameKey(testName), name)
	wantErr(t, err, ErrWrongKey)
	_, err = v.ParseDomain(DIDKey(a), didA)
	wantErr(t, err, ErrWrongKey)

	// An envelope whose kind is none of ours.
	env := decodeEnv(t, didA)
	env.Kind = 9
	_, err = v.ParseDID(DIDKey(a), mustMarshal(t, env))
	wantErr(t, err, ErrWrongKey)
}

func TestUnknownNamespace(t *testing.T) {
	v := strictValidator(t)
	val := signDID(t, keyA, testDID(t, keyA))
	for _, key := range []string{"/foo/x", "/pk/x", "/ipns/x"} {
		if err := v.Namespaced().Validate(key, val); !errors.Is(err, record.ErrInvalidRecordType) {
			t.Errorf("Namespaced().Validate(%q): got %v, want %v", key, err, record.ErrInvalidRecordType)
		}
		if _, err := v.Namespaced().Select(key, [][]byte{val}); !errors.Is(err, record.ErrInvalidRecordType) {
			t.Errorf("Namespaced().Select(%q): got %v, want %v", key, err, record.ErrInvalidRecordType)
		}
		_, err := v.Parse(key, val)
		wantErr(t, err, ErrUnknownKind)
	}
}

func TestTimes(t *testing.T) {
	const day = 24 * time.Hour
	didAt := func(issued, expires int64) (string, []byte) {
		d := testDID(t, keyA)
		d.IssuedAt, d.Expires = issued, expires
		return DIDKey(d.ID), signDID(t, keyA, d)
	}
	for _, tc := range []struct {
		what            string
		skew            time.Duration
		issued, expires int64
		want            error // nil: accepted
	}{
		{"valid", 0, unix(-time.Hour), unix(time.Hour), nil},
		{"expires in a second", 0, unix(-time.Hour), unix(time.Second), nil},
		{"expires now", 0, unix(-time.Hour), unix(0), ErrExpired},
		{"expired", 0, unix(-2 * time.Hour), unix(-time.Hour), ErrExpired},
		{"issued at the skew limit", 0, unix(DefaultClockSkew), unix(day), nil},
		{"issued beyond the skew", 0, unix(DefaultClockSkew + time.Second), unix(day), ErrFuture},
		{"issued far in the future", 0, unix(24 * time.Hour), unix(2 * day), ErrFuture},
		{"custom skew, within", time.Minute, unix(30 * time.Second), unix(day), nil},
		{"custom skew, beyond", time.Minute, unix(2 * time.Minute), unix(day), ErrFuture},
		{"expires when issued", 0, unix(-time.Hour), unix(-time.Hour), ErrMalformed},
		{"expires before issued", 0, unix(time.Hour), unix(-time.Hour), ErrMalformed},
		{"negative times", 0, -10, -5, ErrExpired},
	} {
		t.Run(tc.what, func(t *testing.T) {
			v := strictValidator(t)
			v.ClockSkew = tc.skew
			key, val := didAt(tc.issued, tc.expires)
			_, err := v.ParseDID(key, val)
			if tc.want == nil {
				wantOK(t, err)
				return
			}
			wantErr(t, err, tc.want)
		})
	}

	// The same checks run on grants and domain records.
	v := strictValidator(t)
	g := testGrant(t, testName, idOf(t, keyA), StatusRevoked)
	g.Expires = unix(0)
	_, err := v.ParseName(NameKey(testName), mustSignGrant(t, keyOperator, g, nil))
	wantErr(t, err, ErrExpired)
	g = testGrant(t, testName, idOf(t, keyA), StatusRevoked)
	g.IssuedAt = unix(time.Hour)
	_, err = v.ParseName(NameKey(testName), mustSignGrant(t, keyOperator, g, nil))
	wantErr(t, err, ErrFuture)
	d := testDomainRecord(t, keyOperator)
	d.Expires = unix(-time.Second)
	_, err = v.ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, d))
	wantErr(t, err, ErrExpired)
	d = testDomainRecord(t, keyOperator)
	d.IssuedAt = unix(time.Hour)
	_, err = v.ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, d))
	wantErr(t, err, ErrFuture)

	// A nil clock is the system clock: a record issued now is valid.
	now := time.Now()
	dd := testDID(t, keyA)
	dd.IssuedAt, dd.Expires = now.Unix(), now.Add(time.Hour).Unix()
	_, err = (&Validator{}).ParseDID(DIDKey(dd.ID), signDID(t, keyA, dd))
	wantOK(t, err)
}

func TestLifetime(t *testing.T) {
	v := strictValidator(t)
	issued := unix(-time.Hour)
	for _, tc := range []struct {
		kind  Kind
		max   time.Duration
		parse func(lifetime time.Duration) error
	}{
		{KindDID, MaxDIDLifetime, func(l time.Duration) error {
			d := testDID(t, keyA)
			d.IssuedAt, d.Expires = issued, issued+int64(l/time.Second)
			_, err := v.ParseDID(DIDKey(d.ID), signDID(t, keyA, d))
			return err
		}},
		{KindName, MaxNameLifetime, func(l time.Duration) error {
			g := testGrant(t, testName, idOf(t, keyA), StatusRevoked)
			g.IssuedAt, g.Expires = issued, issued+int64(l/time.Second)
			_, err := v.ParseName(NameKey(testName), mustSignGrant(t, keyOperator, g, nil))
			return err
		}},
		{KindDomain, MaxDomainLifetime, func(l time.Duration) error {
			d := testDomainRecord(t, keyOperator)
			d.IssuedAt, d.Expires = issued, issued+int64(l/time.Second)
			_, err := v.ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, d))
			return err
		}},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			wantOK(t, tc.parse(tc.max))
			wantErr(t, tc.parse(tc.max+time.Second), ErrLifetime)
			wantErr(t, tc.parse(10*tc.max), ErrLifetime)
		})
	}
	// A did record may not live as long as a name.
	d := testDID(t, keyA)
	d.IssuedAt, d.Expires = issued, issued+int64(MaxNameLifetime/time.Second)
	_, err := v.ParseDID(DIDKey(d.ID), signDID(t, keyA, d))
	wantErr(t, err, ErrLifetime)
}

// TestLifetimeOverflow: lifetimes that overflow a time.Duration or an int64
// difference must still be refused as too long.
func TestLifetimeOverflow(t *testing.T) {
	v := strictValidator(t)
	for _, tc := range []struct {
		what            string
		issued, expires int64
	}{
		{"292 years", unix(-time.Hour), unix(-time.Hour) + 9223372037},
		{"issued at MinInt64", math.MinInt64, unix(time.Hour)},
		{"MinInt64 to MaxInt64", math.MinInt64, math.MaxInt64},
	} {
		t.Run(tc.what, func(t *testing.T) {
			d := testDID(t, keyA)
			d.IssuedAt, d.Expires = tc.issued, tc.expires
			_, err := v.ParseDID(DIDKey(d.ID), signDID(t, keyA, d))
			wantErr(t, err, ErrLifetime)
		})
	}
}

// TestSmallOrderKey: crypto/ed25519 accepts a fixed signature for a
// small-order public key on any message; such IDs must be refused.
func TestSmallOrderKey(t *testing.T) {
	d := &DID{Version: Version, ID: smallOrderID, Seq: 1, IssuedAt: unix(-time.Hour), Expires: unix(time.Hour)}
	body := mustMarshal(t, d)
	value := mustMarshal(t, &envelope{Kind: KindDID, Body: body, Sig: smallOrderSig()})
	_, err := strictValidator(t).ParseDID(DIDKey(smallOrderID), value)
	wantErr(t, err, ErrBadSignature)
}

func TestOversize(t *testing.T) {
	v := strictValidator(t)
	junk := bytes.Repeat([]byte{0xa5}, MaxRecordSize+1)
	for _, key := range []string{DIDKey(idOf(t, keyA)), NameKey(testName), DomainKey(testDomain)} {
		_, err := v.Parse(key, junk)
		wantErr(t, err, ErrOversize)
	}

	// A properly signed record that is too large: 16 long addresses, names
	// and services are each within their own limits.
	d := testDID(t, keyA)
	d.Direct, d.Names, d.Services = nil, nil, nil
	for i := range maxAddrs {
		d.Direct = append(d.Direct, fmt.Sprintf("/dns4/%s%02d.example/tcp/4001", strings.Repeat("a", 230), i))
		d.Names = append(d.Names, fmt.Sprintf("%s%02d.ela.city", strings.Repeat("n", 240), i))
		d.Services = append(d.Services, Service{Name: fmt.Sprintf("svc%02d", i), Endpoint: "http://" + strings.Repeat("e", 240)})
	}
	val := signDID(t, keyA, d)
	if len(val) <= MaxRecordSize {
		t.Fatalf("test record of %d bytes: want more than %d", len(val), MaxRecordSize)
	}
	_, err := v.ParseDID(DIDKey(d.ID), val)
	wantErr(t, err, ErrOversize)

	// Half of it fits.
	d.Direct, d.Names, d.Services = d.Direct[:8], d.Names[:8], d.Services[:8]
	_, err = v.ParseDID(DIDKey(d.ID), signDID(t, keyA, d))
	wantOK(t, err)

	_, err = ParseClaim(SignedClaim{Body: junk, Sig: make([]byte, 64)})
	wantErr(t, err, ErrOversize)
}

func TestVersion(t *testing.T) {
	v := strictValidator(t)
	for _, ver := range []uint64{0, 2, math.MaxUint64} {
		d := testDID(t, keyA)
		d.Version = ver
		_, err := v.ParseDID(DIDKey(d.ID), signDID(t, keyA, d))
		wantErr(t, err, ErrVersion)

		g := testGrant(t, testName, idOf(t, keyA), StatusRevoked)
		g.Version = ver
		_, err = v.ParseName(NameKey(testName), mustSignGrant(t, keyOperator, g, nil))
		wantErr(t, err, ErrVersion)

		dom := testDomainRecord(t, keyOperator)
		dom.Version = ver
		_, err = v.ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, dom))
		wantErr(t, err, ErrVersion)

		c := testClaim(t, keyA, testName, ActionHold)
		c.Version = ver
		sc := signClaim(t, keyA, c)
		_, err = ParseClaim(sc)
		wantErr(t, err, ErrVersion)
		value := mustSignGrant(t, keyOperator, testGrant(t, testName, idOf(t, keyA), StatusActive), &sc)
		_, err = v.ParseName(NameKey(testName), value)
		wantErr(t, err, ErrVersion)
	}
}

func TestEntries(t *testing.T) {
	v := strictValidator(t)
	addrs := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("/ip4/192.0.2.%d/tcp/4001", i+1))
		}
		return out
	}
	peers := func(n, addrsEach int) []Peer {
		var out []Peer
		for i := range n {
			out = append(out, Peer{ID: idOf(t, testKey(byte(100+i))), Addrs: addrs(addrsEach)})
		}
		return out
	}
	strs := func(n int, f string) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf(f, i))
		}
		return out
	}
	services := func(n int) []Service {
		var out []Service
		for i := range n {
			out = append(out, Service{Name: fmt.Sprintf("svc%d", i), Endpoint: "http://192.0.2.7:4200"})
		}
		return out
	}
	for _, tc := range []struct {
		what   string
		change func(d *DID)
		want   error
	}{
		{"16 direct addresses", func(d *DID) { d.Direct = addrs(16) }, nil},
		{"17 direct addresses", func(d *DID) { d.Direct = addrs(17) }, ErrTooManyEntries},
		{"8 supernodes", func(d *DID) { d.Supernodes = peers(8, 2) }, nil},
		{"9 supernodes", func(d *DID) { d.Supernodes = peers(9, 1) }, ErrTooManyEntries},
		{"supernode with 16 addresses", func(d *DID) { d.Supernodes = peers(1, 16) }, nil},
		{"supernode with 17 addresses", func(d *DID) { d.Supernodes = peers(1, 17) }, ErrTooManyEntries},
		{"16 names", func(d *DID) { d.Names = strs(16, "name%d.ela.city") }, nil},
		{"17 names", func(d *DID) { d.Names = strs(17, "name%d.ela.city") }, ErrTooManyEntries},
		{"16 services", func(d *DID) { d.Services = services(16) }, nil},
		{"17 services", func(d *DID) { d.Services = services(17) }, ErrTooManyEntries},
		{"address of 256 bytes", func(d *DID) { d.Direct = []string{"/dns4/" + strings.Repeat("a", 256-len("/dns4//tcp/1")) + "/tcp/1"} }, nil},
		{"address of 257 bytes", func(d *DID) { d.Direct = []string{"/dns4/" + strings.Repeat("a", 257-len("/dns4//tcp/1")) + "/tcp/1"} }, ErrMalformed},
		{"empty address", func(d *DID) { d.Direct = []string{""} }, ErrMalformed},
		{"not a multiaddr", func(d *DID) { d.Direct = []string{"192.0.2.7:4001"} }, ErrMalformed},
		{"bad ip4", func(d *DID) { d.Direct = []string{"/ip4/300.0.2.7/tcp/4001"} }, ErrMalformed},
		{"bad port", func(d *DID) { d.Direct = []string{"/ip4/192.0.2.7/tcp/70000"} }, ErrMalformed},
		{"unknown protocol", func(d *DID) { d.Direct = []string{"/ipx/1"} }, ErrMalformed},
		{"missing value", func(d *DID) { d.Direct = []string{"/tcp"} }, ErrMalformed},
		{"bad supernode address", func(d *DID) { d.Supernodes[0].Addrs = []string{"sn1.ela.city:4001"} }, ErrMalformed},
		{"empty name", func(d *DID) { d.Names = []string{""} }, ErrMalformed},
		{"name of 257 bytes", func(d *DID) { d.Names = []string{strings.Repeat("a", 257)} }, ErrMalformed},
		{"service without endpoint", func(d *DID) { d.Services = []Service{{Name: "cloud"}} }, ErrMalformed},
		{"service without name", func(d *DID) { d.Services = []Service{{Endpoint: "http://x"}} }, ErrMalformed},
	} {
		t.Run(tc.what, func(t *testing.T) {
			d := testDID(t, keyA)
			tc.change(d)
			_, err := v.ParseDID(DIDKey(d.ID), signDID(t, keyA, d))
			if tc.want == nil {
				wantOK(t, err)
				return
			}
			wantErr(t, err, tc.want)
		})
	}

	for _, tc := range []struct {
		what     string
		gateways []Peer
		want     error
	}{
		{"16 gateways", peers(16, 1), nil},
		{"17 gateways", peers(17, 1), ErrTooManyEntries},
		{"gateway with 17 addresses", peers(1, 17), ErrTooManyEntries},
		{"gateway with a bad address", []Peer{{ID: idOf(t, keySuper), Addrs: []string{"gw.ela.city"}}}, ErrMalformed},
		{"no gateways", nil, nil},
	} {
		t.Run(tc.what, func(t *testing.T) {
			d := testDomainRecord(t, keyOperator)
			d.Gateways = tc.gateways
			_, err := v.ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, d))
			if tc.want == nil {
				wantOK(t, err)
				return
			}
			wantErr(t, err, tc.want)
		})
	}

	// The TLS mode: the three of records.Domain.TLS round-trip, anything
	// else (the config files' "auto" included) is refused.
	for _, mode := range []string{TLSAuto, TLSEndToEnd, TLSGateway, "auto", "sometimes"} {
		d := testDomainRecord(t, keyOperator)
		d.TLS = mode
		got, err := v.ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, d))
		switch mode {
		case TLSAuto, TLSEndToEnd, TLSGateway:
			if err != nil || got.TLS != mode {
				t.Errorf("TLS mode %q: %+v %v", mode, got, err)
			}
		default:
			if err == nil {
				t.Errorf("TLS mode %q accepted", mode)
			}
		}
	}
}

func TestTrust(t *testing.T) {
	op, other := idOf(t, keyOperator), idOf(t, keyOther)
	a := idOf(t, keyA)
	// A name and a domain record, each signed by the operator they name.
	nameBy := func(opKey ed25519.PrivateKey, name string) []byte {
		sc := signClaim(t, keyA, testClaim(t, keyA, name, ActionHold))
		g := testGrant(t, name, a, StatusActive)
		g.Operator = idOf(t, opKey)
		return mustSignGrant(t, opKey, g, &sc)
	}
	domainBy := func(opKey ed25519.PrivateKey, domain string) []byte {
		d := testDomainRecord(t, opKey)
		d.Domain = domain
		return signDomain(t, opKey, d)
	}
	const unknownName, unknownDomain = "alice.other.city", "other.city"
	for _, tc := range []struct {
		what  string
		v     *Validator
		key   string
		value []byte
		want  error
	}{
		{"name by the pinned operator", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			NameKey(testName), nameBy(keyOperator, testName), nil},
		{"name by another operator", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			NameKey(testName), nameBy(keyOther, testName), ErrWrongOperator},
		{"name by another operator, unknown domains allowed", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}, AllowUnknownDomains: true},
			NameKey(testName), nameBy(keyOther, testName), ErrWrongOperator},
		{"name in an unknown domain", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			NameKey(unknownName), nameBy(keyOther, unknownName), ErrUntrusted},
		{"name in an unknown domain, allowed", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}, AllowUnknownDomains: true},
			NameKey(unknownName), nameBy(keyOther, unknownName), nil},
		{"name, no trust at all", &Validator{Now: fixedClock},
			NameKey(testName), nameBy(keyOperator, testName), ErrUntrusted},
		{"name, no trust, unknown allowed", &Validator{Now: fixedClock, AllowUnknownDomains: true},
			NameKey(testName), nameBy(keyOther, testName), nil},
		{"name in a subdomain of a trusted domain", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			NameKey("alice.sub.ela.city"), nameBy(keyOperator, "alice.sub.ela.city"), ErrUntrusted},
		{"domain by the pinned operator", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			DomainKey(testDomain), domainBy(keyOperator, testDomain), nil},
		{"domain by another operator", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			DomainKey(testDomain), domainBy(keyOther, testDomain), ErrWrongOperator},
		{"domain by another operator, unknown allowed", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}, AllowUnknownDomains: true},
			DomainKey(testDomain), domainBy(keyOther, testDomain), ErrWrongOperator},
		{"unknown domain", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: op}},
			DomainKey(unknownDomain), domainBy(keyOther, unknownDomain), ErrUntrusted},
		{"unknown domain, allowed", &Validator{Now: fixedClock, AllowUnknownDomains: true},
			DomainKey(unknownDomain), domainBy(keyOther, unknownDomain), nil},
		{"domain pinned to another operator", &Validator{Now: fixedClock, Trust: TrustMap{testDomain: other}},
			DomainKey(testDomain), domainBy(keyOperator, testDomain), ErrWrongOperator},
	} {
		t.Run(tc.what, func(t *testing.T) {
			_, err := tc.v.Parse(tc.key, tc.value)
			if tc.want == nil {
				wantOK(t, err)
				return
			}
			wantErr(t, err, tc.want)
		})
	}

	// Trust is consulted before the signature: an operator field naming
	// the pinned key does not help a record signed by someone else.
	g := testGrant(t, testName, a, StatusRevoked)
	gb := mustMarshal(t, g)
	value := mustMarshal(t, &envelope{Kind: KindName, Body: gb, Sig: sign(keyOther, tagGrant, gb)})
	_, err := strictValidator(t).ParseName(NameKey(testName), value)
	wantErr(t, err, ErrBadSignature)

	// DID records need no trust.
	_, err = (&Validator{Now: fixedClock}).ParseDID(DIDKey(a), signDID(t, keyA, testDID(t, keyA)))
	wantOK(t, err)
}

// nameEnvelope builds a name record by hand: grant g (its ClaimHash as
// given) with claim sc attached, both as the test wants them.
func nameEnvelope(tb testing.TB, g *Grant, sc *SignedClaim) []byte {
	tb.Helper()
	body := mustMarshal(tb, g)
	env := &envelope{Kind: KindName, Body: body, Sig: sign(keyOperator, tagGrant, body)}
	if sc != nil {
		env.Claim, env.ClaimSig = sc.Body, sc.Sig
	}
	return mustMarshal(tb, env)
}

func TestNameConsistency(t *testing.T) {
	v := strictValidator(t)
	a, b := idOf(t, keyA), idOf(t, keyB)
	key := NameKey(testName)
	hold := signClaim(t, keyA, testClaim(t, keyA, testName, ActionHold))
	release := signClaim(t, keyA, testClaim(t, keyA, testName, ActionRelease))

	check := func(t *testing.T, value []byte, want error) {
		t.Helper()
		_, err := v.ParseName(key, value)
		if want == nil {
			wantOK(t, err)
			return
		}
		wantErr(t, err, want)
	}

	t.Run("claim signed by another key", func(t *testing.T) {
		c := testClaim(t, keyA, testName, ActionHold)
		body := mustMarshal(t, c)
		forged := SignedClaim{Body: body, Sig: sign(keyB, tagClaim, body)}
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &forged), ErrBadSignature)
		_, err := ParseClaim(forged)
		wantErr(t, err, ErrBadSignature)
		// The right key with the grant's tag.
		forged.Sig = sign(keyA, tagGrant, body)
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &forged), ErrBadSignature)
	})
	t.Run("claim signature flipped", func(t *testing.T) {
		bad := SignedClaim{Body: hold.Body, Sig: bytes.Clone(hold.Sig)}
		bad.Sig[10] ^= 0x80
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &bad), ErrBadSignature)
	})
	t.Run("grant for one claim, envelope carrying another", func(t *testing.T) {
		c2 := testClaim(t, keyA, testName, ActionHold)
		c2.Nonce = []byte("another nonce!!!")
		other := signClaim(t, keyA, c2)
		env := decodeEnv(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &hold))
		env.Claim, env.ClaimSig = other.Body, other.Sig
		check(t, mustMarshal(t, env), ErrInconsistent)
	})
	t.Run("claim for another name", func(t *testing.T) {
		sc := signClaim(t, keyA, testClaim(t, keyA, "bob.ela.city", ActionHold))
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &sc), ErrInconsistent)
	})
	t.Run("claim by another DID", func(t *testing.T) {
		sc := signClaim(t, keyB, testClaim(t, keyB, testName, ActionHold))
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &sc), ErrInconsistent)
		// And the other way round: B's grant with A's claim.
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, b, StatusActive), &hold), ErrInconsistent)
	})
	t.Run("active grant with a release claim", func(t *testing.T) {
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &release), ErrInconsistent)
	})
	t.Run("released grant with a hold claim", func(t *testing.T) {
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusReleased), &hold), ErrInconsistent)
	})
	t.Run("active grant without a claim", func(t *testing.T) {
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), nil), ErrInconsistent)
	})
	t.Run("released grant without a claim", func(t *testing.T) {
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusReleased), nil), ErrInconsistent)
	})
	t.Run("revoked grant with a claim hash but no claim", func(t *testing.T) {
		g := testGrant(t, testName, a, StatusRevoked)
		g.ClaimHash = bytes.Repeat([]byte{1}, 32)
		check(t, nameEnvelope(t, g, nil), ErrInconsistent)
	})
	t.Run("revoked grant with a claim signature but no claim", func(t *testing.T) {
		g := testGrant(t, testName, a, StatusRevoked)
		check(t, nameEnvelope(t, g, &SignedClaim{Sig: hold.Sig}), ErrInconsistent)
	})
	t.Run("claim without a claim hash", func(t *testing.T) {
		check(t, nameEnvelope(t, testGrant(t, testName, a, StatusActive), &hold), ErrInconsistent)
	})
	t.Run("revoked grant keeping the last claim", func(t *testing.T) {
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusRevoked), &hold), nil)
	})
	t.Run("unknown status", func(t *testing.T) {
		check(t, mustSignGrant(t, keyOperator, testGrant(t, testName, a, Status(3)), &hold), ErrMalformed)
	})
	t.Run("claim issued after the grant, within skew", func(t *testing.T) {
		c := testClaim(t, keyA, testName, ActionHold)
		g := testGrant(t, testName, a, StatusActive)
		c.IssuedAt = g.IssuedAt + int64(DefaultClockSkew/time.Second)
		sc := signClaim(t, keyA, c)
		check(t, mustSignGrant(t, keyOperator, g, &sc), nil)
	})
	t.Run("claim issued after the grant, beyond skew", func(t *testing.T) {
		c := testClaim(t, keyA, testName, ActionHold)
		g := testGrant(t, testName, a, StatusActive)
		c.IssuedAt = g.IssuedAt + int64(DefaultClockSkew/time.Second) + 1
		sc := signClaim(t, keyA, c)
		check(t, mustSignGrant(t, keyOperator, g, &sc), ErrFuture)
	})
	t.Run("invalid grant name", func(t *testing.T) {
		for _, name := range []string{"Alice.ela.city", "al.ela.city", "alice.city", "alice_x.ela.city"} {
			g := testGrant(t, name, a, StatusRevoked)
			_, err := v.ParseName(NameKey(name), mustSignGrant(t, keyOperator, g, nil))
			wantErr(t, err, ErrInvalidName)
		}
	})
	t.Run("invalid domain record name", func(t *testing.T) {
		for _, domain := range []string{"city", "Ela.city", "ela..city"} {
			d := testDomainRecord(t, keyOperator)
			d.Domain = domain
			_, err := v.ParseDomain(DomainKey(domain), signDomain(t, keyOperator, d))
			wantErr(t, err, ErrInvalidName)
		}
	})
}

func TestParseClaim(t *testing.T) {
	for _, tc := range []struct {
		what   string
		change func(c *Claim)
		want   error
	}{
		{"valid", func(c *Claim) {}, nil},
		{"nonce of 8 bytes", func(c *Claim) { c.Nonce = make([]byte, 8) }, nil},
		{"nonce of 64 bytes", func(c *Claim) { c.Nonce = make([]byte, 64) }, nil},
		{"nonce of 7 bytes", func(c *Claim) { c.Nonce = make([]byte, 7) }, ErrMalformed},
		{"nonce of 65 bytes", func(c *Claim) { c.Nonce = make([]byte, 65) }, ErrMalformed},
		{"no nonce", func(c *Claim) { c.Nonce = nil }, ErrMalformed},
		{"invalid name", func(c *Claim) { c.Name = "Alice.ela.city" }, ErrInvalidName},
		{"bare label", func(c *Claim) { c.Name = "alice" }, ErrInvalidName},
		{"version 2", func(c *Claim) { c.Version = 2 }, ErrVersion},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c := testClaim(t, keyA, testName, ActionHold)
			tc.change(c)
			_, err := ParseClaim(signClaim(t, keyA, c))
			if tc.want == nil {
				wantOK(t, err)
				return
			}
			wantErr(t, err, tc.want)
		})
	}
	for _, sc := range []SignedClaim{{}, {Body: []byte("junk")}, {Body: []byte{0xa0}}} {
		_, err := ParseClaim(sc)
		wantErr(t, err, ErrMalformed)
	}
}

// didVersion builds a did record of A with the given seq, issued-at and
// name (which changes its bytes, not its order).
func didVersion(tb testing.TB, seq uint64, issued time.Duration, name string) []byte {
	tb.Helper()
	d := testDID(tb, keyA)
	d.Seq, d.IssuedAt, d.Names = seq, unix(issued), []string{name}
	return signDID(tb, keyA, d)
}

func TestSelect(t *testing.T) {
	v := strictValidator(t)
	a := idOf(t, keyA)
	key := DIDKey(a)
	sel := v.Namespaced()[NamespaceDID]

	pick := func(t *testing.T, values ...[]byte) []byte {
		t.Helper()
		i, err := sel.Select(key, values)
		if err != nil {
			t.Fatalf("Select: %v", err)
		}
		if i < 0 || i >= len(values) {
			t.Fatalf("Select: got index %d of %d values", i, len(values))
		}
		return values[i]
	}
	wantPick := func(t *testing.T, want []byte, values ...[]byte) {
		t.Helper()
		if got := pick(t, values...); !bytes.Equal(got, want) {
			t.Fatalf("got %x, want %x", got, want)
		}
	}

	old := didVersion(t, 1, -2*time.Hour, "a.ela.city")
	cur := didVersion(t, 2, -3*time.Hour, "a.ela.city") // higher seq, older issued-at
	t.Run("higher seq wins", func(t *testing.T) {
		wantPick(t, cur, old, cur)
		wantPick(t, cur, cur, old)
		wantPick(t, cur, old, cur, old)
	})
	t.Run("replay loses", func(t *testing.T) {
		// A DHT node holding cur that is offered old keeps cur.
		if i, err := sel.Select(key, [][]byte{cur, old}); err != nil || i != 0 {
			t.Fatalf("got %d, %v, want 0, nil", i, err)
		}
		if i, err := sel.Select(key, [][]byte{old, cur}); err != nil || i != 1 {
			t.Fatalf("got %d, %v, want 1, nil", i, err)
		}
	})
	t.Run("equal seq, later issued-at wins", func(t *testing.T) {
		early := didVersion(t, 5, -2*time.Hour, "a.ela.city")
		late := didVersion(t, 5, -time.Hour, "a.ela.city")
		wantPick(t, late, early, late)
		wantPick(t, late, late, early)
	})
	t.Run("equal order is deterministic", func(t *testing.T) {
		x := didVersion(t, 5, -time.Hour, "x.ela.city")
		y := didVersion(t, 5, -time.Hour, "y.ela.city")
		z := didVersion(t, 5, -time.Hour, "z.ela.city")
		first := pick(t, x, y, z)
		for _, order := range [][][]byte{{x, z, y}, {y, x, z}, {y, z, x}, {z, x, y}, {z, y, x}} {
			if got := pick(t, order...); !bytes.Equal(got, first) {
				t.Fatalf("got %x, want %x (the winner in another order)", got, first)
			}
		}
		if got := pick(t, x, x); !bytes.Equal(got, x) {
			t.Fatalf("got %x, want %x", got, x)
		}
	})
	t.Run("invalid values ignored", func(t *testing.T) {
		expired := func() []byte {
			d := testDID(t, keyA)
			d.Seq, d.IssuedAt, d.Expires = 100, unix(-3*time.Hour), unix(-time.Hour)
			return signDID(t, keyA, d)
		}()
		forged := func() []byte {
			d := testDID(t, keyA)
			d.Seq = 100
			return resignDID(t, keyB, d)
		}()
		otherNode := func() []byte {
			d := testDID(t, keyB)
			d.Seq = 100
			return signDID(t, keyB, d)
		}()
		for _, values := range [][][]byte{
			{nil, old, expired, forged, otherNode, []byte("junk")},
			{expired, forged, otherNode, old, nil},
			{old, bytes.Repeat([]byte{0}, MaxRecordSize+1)},
		} {
			wantPick(t, old, values...)
		}
	})
	t.Run("all invalid", func(t *testing.T) {
		for _, values := range [][][]byte{
			{nil},
			{[]byte("junk"), {0xa0}},
			{signDID(t, keyB, testDID(t, keyB))},
		} {
			if i, err := sel.Select(key, values); err == nil {
				t.Fatalf("Select of invalid values: got %d, nil, want an error", i)
			}
		}
		if _, err := v.Namespaced().Select(key, nil); err == nil {
			t.Fatalf("Select of no values: got nil error, want one")
		}
	})
}

func TestSelectName(t *testing.T) {
	v := strictValidator(t)
	a := idOf(t, keyA)
	key := NameKey(testName)
	sel := v.Namespaced()[NamespaceName]
	hold := signClaim(t, keyA, testClaim(t, keyA, testName, ActionHold))
	release := signClaim(t, keyA, testClaim(t, keyA, testName, ActionRelease))

	active := mustSignGrant(t, keyOperator, testGrant(t, testName, a, StatusActive), &hold)
	rg := testGrant(t, testName, a, StatusReleased)
	rg.Seq = 2
	released := mustSignGrant(t, keyOperator, rg, &release)
	vg := testGrant(t, testName, a, StatusRevoked)
	vg.Seq = 3
	revoked := mustSignGrant(t, keyOperator, vg, nil)
	// A grant by an untrusted operator with a huge seq must not win.
	og := testGrant(t, testName, a, StatusActive)
	og.Seq, og.Operator = 1000, idOf(t, keyOther)
	usurper := mustSignGrant(t, keyOther, og, &hold)

	for _, values := range [][][]byte{
		{active, released, revoked, usurper},
		{usurper, revoked, released, active},
		{released, usurper, active, revoked},
	} {
		i, err := sel.Select(key, values)
		if err != nil || !bytes.Equal(values[i], revoked) {
			t.Fatalf("got %d, %v, want the revocation", i, err)
		}
	}
	for _, values := range [][][]byte{{active, released}, {released, active}} {
		i, err := sel.Select(key, values)
		if err != nil || !bytes.Equal(values[i], released) {
			t.Fatalf("got %d, %v, want the release", i, err)
		}
	}
	if i, err := sel.Select(key, [][]byte{usurper}); err == nil {
		t.Fatalf("Select of an untrusted grant: got %d, nil, want an error", i)
	}
}

func TestSelectDomain(t *testing.T) {
	v := strictValidator(t)
	key := DomainKey(testDomain)
	sel := v.Namespaced()[NamespaceDomain]
	d1 := testDomainRecord(t, keyOperator)
	d2 := testDomainRecord(t, keyOperator)
	d2.Seq = 2
	d2.Gateways = nil
	v1, v2 := signDomain(t, keyOperator, d1), signDomain(t, keyOperator, d2)
	for _, values := range [][][]byte{{v1, v2}, {v2, v1}} {
		i, err := sel.Select(key, values)
		if err != nil || !bytes.Equal(values[i], v2) {
			t.Fatalf("got %d, %v, want seq 2", i, err)
		}
	}
}

// TestValidatorConcurrent runs one Validator from many goroutines, as the
// DHT does; run with -race.
func TestValidatorConcurrent(t *testing.T) {
	v := strictValidator(t)
	nv := v.Namespaced()
	did := signDID(t, keyA, testDID(t, keyA))
	name := activeName(t)
	a := idOf(t, keyA)
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			for range 20 {
				if err := nv.Validate(DIDKey(a), did); err != nil {
					errc <- err
					return
				}
				if err := nv.Validate(NameKey(testName), name); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	}
}

// TestSubValidatorChecksNamespace: each namespace's validator refuses keys
// of another namespace even when called directly.
func TestSubValidatorChecksNamespace(t *testing.T) {
	nv := strictValidator(t).Namespaced()
	if err := nv[NamespaceDID].Validate(NameKey(testName), activeName(t)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("did validator on a name key: got %v, want %v", err, ErrWrongKey)
	}
	if err := nv[NamespaceName].Validate(NameKey(testName), activeName(t)); err != nil {
		t.Fatalf("name validator on its own key: got %v, want nil", err)
	}
}
