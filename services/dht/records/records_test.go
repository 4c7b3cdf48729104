package records

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	record "github.com/libp2p/go-libp2p-record"

	"github.com/pc2/pc2/provisioning/identity"
)

// testNow is the fixed clock of every test, fuzz target and benchmark here.
// The committed fuzz seeds are valid at this instant.
var testNow = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return testNow }

const (
	testDomain = "ela.city"
	testName   = "alice.ela.city"
)

// Deterministic keys: nodes A and B, the domain operator, a second operator,
// and a supernode.
func testKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

var (
	keyA        = testKey(1)
	keyB        = testKey(2)
	keyOperator = testKey(10)
	keyOther    = testKey(11)
	keySuper    = testKey(20)
)

func idOf(tb testing.TB, key ed25519.PrivateKey) identity.ID {
	tb.Helper()
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		tb.Fatalf("IDFromPublicKey: %v", err)
	}
	return id
}

// smallOrderID is the Ed25519 identity point: a public key for which
// smallOrderSig verifies any message.
var smallOrderID = identity.ID{1}

func smallOrderSig() []byte {
	sig := make([]byte, ed25519.SignatureSize)
	sig[0] = 1
	return sig
}

// strictValidator trusts testDomain with keyOperator and nothing else.
func strictValidator(tb testing.TB) *Validator {
	tb.Helper()
	return &Validator{Now: fixedClock, Trust: TrustMap{testDomain: idOf(tb, keyOperator)}}
}

func unix(d time.Duration) int64 { return testNow.Add(d).Unix() }

func testDID(tb testing.TB, key ed25519.PrivateKey) *DID {
	tb.Helper()
	return &DID{
		Version:  Version,
		ID:       idOf(tb, key),
		Seq:      1,
		IssuedAt: unix(-time.Hour),
		Expires:  unix(6 * 24 * time.Hour),
		Direct:   []string{"/ip4/192.0.2.7/tcp/4001", "/ip6/2001:db8::7/udp/4001/quic-v1"},
		Supernodes: []Peer{{
			ID:    idOf(tb, keySuper),
			Addrs: []string{"/dns4/sn1.ela.city/tcp/4001", "/ip4/198.51.100.1/udp/4001/quic-v1"},
		}},
		Names:    []string{testName},
		Services: []Service{{Name: "cloud", Endpoint: "http://192.0.2.7:4200"}},
	}
}

func signDID(tb testing.TB, key ed25519.PrivateKey, d *DID) []byte {
	tb.Helper()
	v, err := SignDID(key, d)
	if err != nil {
		tb.Fatalf("SignDID: %v", err)
	}
	return v
}

func testClaim(tb testing.TB, key ed25519.PrivateKey, name string, a Action) *Claim {
	tb.Helper()
	return &Claim{
		Version:  Version,
		Name:     name,
		DID:      idOf(tb, key),
		Action:   a,
		IssuedAt: unix(-24 * time.Hour),
		Nonce:    []byte("0123456789abcdef"),
	}
}

func signClaim(tb testing.TB, key ed25519.PrivateKey, c *Claim) SignedClaim {
	tb.Helper()
	sc, err := SignClaim(key, c)
	if err != nil {
		tb.Fatalf("SignClaim: %v", err)
	}
	return sc
}

func testGrant(tb testing.TB, name string, holder identity.ID, s Status) *Grant {
	tb.Helper()
	return &Grant{
		Version:  Version,
		Name:     name,
		DID:      holder,
		Seq:      1,
		Status:   s,
		IssuedAt: unix(-24 * time.Hour),
		Expires:  unix(364 * 24 * time.Hour),
		Operator: idOf(tb, keyOperator),
	}
}

func mustSignGrant(tb testing.TB, op ed25519.PrivateKey, g *Grant, sc *SignedClaim) []byte {
	tb.Helper()
	v, err := SignGrant(op, g, sc)
	if err != nil {
		tb.Fatalf("SignGrant: %v", err)
	}
	return v
}

// activeName is a valid active name record of A for testName.
func activeName(tb testing.TB) []byte {
	tb.Helper()
	sc := signClaim(tb, keyA, testClaim(tb, keyA, testName, ActionHold))
	return mustSignGrant(tb, keyOperator, testGrant(tb, testName, idOf(tb, keyA), StatusActive), &sc)
}

func testDomainRecord(tb testing.TB, op ed25519.PrivateKey) *Domain {
	tb.Helper()
	return &Domain{
		Version:  Version,
		Domain:   testDomain,
		Operator: idOf(tb, op),
		Seq:      1,
		IssuedAt: unix(-24 * time.Hour),
		Expires:  unix(364 * 24 * time.Hour),
		Gateways: []Peer{{ID: idOf(tb, keySuper), Addrs: []string{"/dns4/gw.ela.city/tcp/443"}}},
	}
}

func signDomain(tb testing.TB, op ed25519.PrivateKey, d *Domain) []byte {
	tb.Helper()
	v, err := SignDomain(op, d)
	if err != nil {
		tb.Fatalf("SignDomain: %v", err)
	}
	return v
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := marshal(v)
	if err != nil {
		tb.Fatalf("marshal %T: %v", v, err)
	}
	return b
}

// decodeEnv opens a value produced by one of the Sign functions so a test
// can tamper with it.
func decodeEnv(tb testing.TB, value []byte) *envelope {
	tb.Helper()
	env, err := decodeEnvelope(value)
	if err != nil {
		tb.Fatalf("decodeEnvelope: %v", err)
	}
	return env
}

func wantErr(tb testing.TB, err, want error) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Fatalf("got error %v, want %v", err, want)
	}
}

func wantOK(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("got error %v, want nil", err)
	}
}

// Hand-built CBOR, to produce encodings the package itself never would.

func cborHead(major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return []byte{m | byte(n)}
	case n <= 0xff:
		return []byte{m | 24, byte(n)}
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16([]byte{m | 25}, uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32([]byte{m | 26}, uint32(n))
	}
	return binary.BigEndian.AppendUint64([]byte{m | 27}, n)
}

func cborUint(n uint64) []byte  { return cborHead(0, n) }
func cborBytes(b []byte) []byte { return append(cborHead(2, uint64(len(b))), b...) }

type kv struct{ k, v []byte }

func cborMap(pairs ...kv) []byte {
	out := cborHead(5, uint64(len(pairs)))
	for _, p := range pairs {
		out = append(out, p.k...)
		out = append(out, p.v...)
	}
	return out
}

func envPairs(kind Kind, body, sig []byte) []kv {
	return []kv{
		{cborUint(1), cborUint(uint64(kind))},
		{cborUint(2), cborBytes(body)},
		{cborUint(3), cborBytes(sig)},
	}
}

// minimalDIDPairs is the body of a did record with only its required fields.
func minimalDIDPairs(id identity.ID) []kv {
	return []kv{
		{cborUint(1), cborUint(Version)},
		{cborUint(2), cborBytes(id[:])},
		{cborUint(3), cborUint(1)},
		{cborUint(4), cborUint(uint64(unix(-time.Hour)))},
		{cborUint(5), cborUint(uint64(unix(time.Hour)))},
	}
}

func TestRoundTripDID(t *testing.T) {
	v := strictValidator(t)
	d := testDID(t, keyA)
	val := signDID(t, keyA, d)
	got, err := v.ParseDID(DIDKey(d.ID), val)
	wantOK(t, err)
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("got %+v, want %+v", got, d)
	}

	// Optional fields may all be empty.
	min := &DID{Version: Version, ID: idOf(t, keyB), Seq: 7, IssuedAt: unix(-time.Minute), Expires: unix(time.Hour)}
	got, err = v.ParseDID(DIDKey(min.ID), signDID(t, keyB, min))
	wantOK(t, err)
	if !reflect.DeepEqual(got, min) {
		t.Fatalf("got %+v, want %+v", got, min)
	}

	// Signing is deterministic: the same record gives the same bytes.
	if again := signDID(t, keyA, d); !bytes.Equal(again, val) {
		t.Fatalf("got different bytes for the same record:\n%x\n%x", again, val)
	}
}

func TestRoundTripName(t *testing.T) {
	a := idOf(t, keyA)
	for _, tc := range []struct {
		status Status
		claim  *Claim // nil: revocation without a claim
	}{
		{StatusActive, testClaim(t, keyA, testName, ActionHold)},
		{StatusReleased, testClaim(t, keyA, testName, ActionRelease)},
		{StatusRevoked, nil},
	} {
		t.Run(tc.status.String(), func(t *testing.T) {
			g := testGrant(t, testName, a, tc.status)
			var sc *SignedClaim
			want := &Name{Grant: *g}
			if tc.claim != nil {
				s := signClaim(t, keyA, tc.claim)
				sc = &s
				h := sha256.Sum256(s.Body)
				want.Grant.ClaimHash = h[:]
				want.Claim = tc.claim
			}
			val := mustSignGrant(t, keyOperator, g, sc)
			if g.ClaimHash != nil {
				t.Fatalf("SignGrant changed the caller's grant: got ClaimHash %x, want nil", g.ClaimHash)
			}
			got, err := strictValidator(t).ParseName(NameKey(testName), val)
			wantOK(t, err)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v (claim %+v), want %+v (claim %+v)", got, got.Claim, want, want.Claim)
			}
		})
	}
}

func TestRoundTripDomain(t *testing.T) {
	d := testDomainRecord(t, keyOperator)
	got, err := strictValidator(t).ParseDomain(DomainKey(testDomain), signDomain(t, keyOperator, d))
	wantOK(t, err)
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("got %+v, want %+v", got, d)
	}
}

func TestRoundTripClaim(t *testing.T) {
	for _, a := range []Action{ActionHold, ActionRelease} {
		c := testClaim(t, keyA, testName, a)
		got, err := ParseClaim(signClaim(t, keyA, c))
		wantOK(t, err)
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("got %+v, want %+v", got, c)
		}
	}
}

func TestParseDispatch(t *testing.T) {
	v := strictValidator(t)
	d := testDID(t, keyA)
	for _, tc := range []struct {
		key   string
		value []byte
		want  reflect.Type
	}{
		{DIDKey(d.ID), signDID(t, keyA, d), reflect.TypeFor[*DID]()},
		{NameKey(testName), activeName(t), reflect.TypeFor[*Name]()},
		{DomainKey(testDomain), signDomain(t, keyOperator, testDomainRecord(t, keyOperator)), reflect.TypeFor[*Domain]()},
	} {
		rec, err := v.Parse(tc.key, tc.value)
		wantOK(t, err)
		if got := reflect.TypeOf(rec); got != tc.want {
			t.Errorf("Parse(%q): got %v, want %v", tc.key, got, tc.want)
		}
		wantOK(t, v.Namespaced().Validate(tc.key, tc.value))
	}

	val := signDID(t, keyA, d)
	for _, key := range []string{"", "did", "did/" + d.ID.String(), "/did", "/did/"} {
		_, err := v.Parse(key, val)
		wantErr(t, err, ErrWrongKey)
	}
	_, err := v.Parse("/foo/x", val)
	wantErr(t, err, ErrUnknownKind)
	for _, key := range []string{"/DID/" + d.ID.String(), "//" + d.ID.String()} {
		_, err = v.Parse(key, val)
		wantErr(t, err, ErrUnknownKind)
	}
}

func TestKeys(t *testing.T) {
	id := idOf(t, keyA)
	if got, want := DIDKey(id), "/did/"+id.String(); got != want {
		t.Errorf("DIDKey: got %q, want %q", got, want)
	}
	ns, rest, err := record.SplitKey(DIDKey(id))
	wantOK(t, err)
	if ns != NamespaceDID {
		t.Errorf("namespace of DIDKey: got %q, want %q", ns, NamespaceDID)
	}
	back, err := identity.ParseID(rest)
	wantOK(t, err)
	if back != id {
		t.Errorf("ID in DIDKey: got %v, want %v", back, id)
	}
	if got, want := NameKey(testName), "/name/alice.ela.city"; got != want {
		t.Errorf("NameKey: got %q, want %q", got, want)
	}
	if got, want := DomainKey(testDomain), "/domain/ela.city"; got != want {
		t.Errorf("DomainKey: got %q, want %q", got, want)
	}
	// Every key lands in the validator that owns it.
	nv := strictValidator(t).Namespaced()
	for _, key := range []string{DIDKey(id), NameKey(testName), DomainKey(testDomain)} {
		if nv.ValidatorByKey(key) == nil {
			t.Errorf("no validator for key %q", key)
		}
	}
}

func TestKindAndStatusStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{KindDID.String(), "did"},
		{KindName.String(), "name"},
		{KindDomain.String(), "domain"},
		{Kind(9).String(), "kind(9)"},
		{StatusActive.String(), "active"},
		{StatusReleased.String(), "released"},
		{StatusRevoked.String(), "revoked"},
		{Status(9).String(), "status(9)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for a, want := range map[Action]string{ActionHold: "hold", ActionRelease: "release", Action(9): "action(9)"} {
		got, err := a.MarshalText()
		wantOK(t, err)
		if string(got) != want {
			t.Errorf("Action(%d).MarshalText: got %q, want %q", a, got, want)
		}
		var back Action
		if err := back.UnmarshalText(got); (err == nil) != (a <= ActionRelease) || (err == nil && back != a) {
			t.Errorf("Action.UnmarshalText(%q): got %v, %v", got, back, err)
		}
	}
	for _, s := range []Status{StatusActive, StatusReleased, StatusRevoked, Status(9)} {
		text, _ := s.MarshalText()
		var back Status
		if err := back.UnmarshalText(text); (err == nil) != (s <= StatusRevoked) || (err == nil && back != s) {
			t.Errorf("Status.UnmarshalText(%q): got %v, %v", text, back, err)
		}
	}
}

func TestSignRefusesWrongKey(t *testing.T) {
	d := testDID(t, keyA)
	if _, err := SignDID(keyB, d); err == nil {
		t.Errorf("SignDID with B's key for A's record: got nil error, want one")
	}
	if _, err := SignDID(keyA[:10], d); err == nil {
		t.Errorf("SignDID with a short key: got nil error, want one")
	}
	if _, err := SignClaim(keyB, testClaim(t, keyA, testName, ActionHold)); err == nil {
		t.Errorf("SignClaim with B's key for A's claim: got nil error, want one")
	}
	if _, err := SignGrant(keyOther, testGrant(t, testName, idOf(t, keyA), StatusRevoked), nil); err == nil {
		t.Errorf("SignGrant with another operator's key: got nil error, want one")
	}
	if _, err := SignDomain(keyOther, testDomainRecord(t, keyOperator)); err == nil {
		t.Errorf("SignDomain with another operator's key: got nil error, want one")
	}
}

func TestNames(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		label string
		ok    bool
	}{
		{"abc", true},
		{"a1-b2", true},
		{"123", true},
		{"xn--bcher-kva", true},
		{long(63), true},
		{"", false},
		{"ab", false},
		{long(64), false},
		{"Alice", false},
		{"-abc", false},
		{"abc-", false},
		{"-", false},
		{"a_c", false},
		{"al ce", false},
		{"al.ce", false},
		{"ålice", false},
	} {
		err := ValidLabel(tc.label)
		if tc.ok {
			if err != nil {
				t.Errorf("ValidLabel(%q): got %v, want nil", tc.label, err)
			}
		} else if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidLabel(%q): got %v, want %v", tc.label, err, ErrInvalidName)
		}
	}

	label63 := long(63)
	domain253 := strings.Join([]string{label63, label63, label63, long(61)}, ".")
	for _, tc := range []struct {
		domain string
		ok     bool
	}{
		{"ela.city", true},
		{"a.b", true},
		{"sub.ela.city", true},
		{"my-net.example", true},
		{"ela.c0m", true},
		{label63 + ".city", true},
		{domain253, true},
		{"", false},
		{"city", false},
		{"ela..city", false},
		{".ela.city", false},
		{"ela.city.", false},
		{"Ela.city", false},
		{"-ela.city", false},
		{"ela-.city", false},
		{"e_la.city", false},
		{"ela.city/x", false},
		{long(64) + ".city", false},
		{domain253 + "a", false},
	} {
		err := ValidDomain(tc.domain)
		if tc.ok {
			if err != nil {
				t.Errorf("ValidDomain(%q): got %v, want nil", tc.domain, err)
			}
		} else if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidDomain(%q): got %v, want %v", tc.domain, err, ErrInvalidName)
		}
	}

	// 3 + 1 + 250: both halves valid on their own, the whole too long.
	fqdn254 := "abc." + strings.Join([]string{label63, label63, label63, long(59)}, ".")
	for _, tc := range []struct {
		fqdn, label, domain string
		ok                  bool
	}{
		{"alice.ela.city", "alice", "ela.city", true},
		{"abc.a.b", "abc", "a.b", true},
		{"alice.sub.ela.city", "alice", "sub.ela.city", true},
		{"", "", "", false},
		{"alice", "", "", false},
		{"al.ela.city", "", "", false},
		{long(64) + ".ela.city", "", "", false},
		{"Alice.ela.city", "", "", false},
		{"-alice.ela.city", "", "", false},
		{"alice-.ela.city", "", "", false},
		{"al_ce.ela.city", "", "", false},
		{"alice.city", "", "", false},
		{"alice..city", "", "", false},
		{".ela.city", "", "", false},
		{"alice.ela.city.", "", "", false},
		{"alice.ELA.city", "", "", false},
		{fqdn254, "", "", false},
	} {
		label, domain, err := SplitName(tc.fqdn)
		if !tc.ok {
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("SplitName(%q): got %v, want %v", tc.fqdn, err, ErrInvalidName)
			}
			continue
		}
		if err != nil || label != tc.label || domain != tc.domain {
			t.Errorf("SplitName(%q): got %q, %q, %v, want %q, %q, nil", tc.fqdn, label, domain, err, tc.label, tc.domain)
		}
	}
}

// TestCBORBuilder checks the hand-built CBOR helpers against the package's
// encoder, so the malformed variants below differ from a valid record only
// where they mean to.
func TestCBORBuilder(t *testing.T) {
	val := signDID(t, keyA, testDID(t, keyA))
	env := decodeEnv(t, val)
	if got := cborMap(envPairs(env.Kind, env.Body, env.Sig)...); !bytes.Equal(got, val) {
		t.Fatalf("hand-built envelope:\ngot  %x\nwant %x", got, val)
	}
	id := idOf(t, keyA)
	want := mustMarshal(t, &DID{Version: Version, ID: id, Seq: 1, IssuedAt: unix(-time.Hour), Expires: unix(time.Hour)})
	if got := cborMap(minimalDIDPairs(id)...); !bytes.Equal(got, want) {
		t.Fatalf("hand-built did body:\ngot  %x\nwant %x", got, want)
	}
	for _, n := range []uint64{0, 23, 24, 255, 256, 65535, 65536, 1 << 32} {
		b := cborUint(n)
		if want := mustMarshal(t, n); !bytes.Equal(b, want) {
			t.Errorf("cborUint(%d): got %x, want %x", n, b, want)
		}
	}
}

func TestRejectsMalformedEnvelope(t *testing.T) {
	v := strictValidator(t)
	d := testDID(t, keyA)
	key := DIDKey(d.ID)
	val := signDID(t, keyA, d)
	env := decodeEnv(t, val)
	pairs := func() []kv { return envPairs(env.Kind, env.Body, env.Sig) }

	// The same envelope with a body length one size wider than needed.
	nonMinimalLen := pairs()
	if len(env.Body) < 256 {
		nonMinimalLen[1].v = binary.BigEndian.AppendUint16([]byte{0x59}, uint16(len(env.Body)))
	} else {
		nonMinimalLen[1].v = binary.BigEndian.AppendUint32([]byte{0x5a}, uint32(len(env.Body)))
	}
	nonMinimalLen[1].v = append(nonMinimalLen[1].v, env.Body...)

	cases := map[string][]byte{
		"empty":              {},
		"garbage":            []byte("hello, world"),
		"one byte":           {0xff},
		"null":               {0xf6},
		"array":              {0x83, 0x01, 0x40, 0x40},
		"truncated":          val[:len(val)-1],
		"half":               val[:len(val)/2],
		"trailing":           append(bytes.Clone(val), 0x00),
		"twice":              append(bytes.Clone(val), val...),
		"tagged":             append([]byte{0xd9, 0xd9, 0xf7}, val...),
		"non-minimal length": cborMap(nonMinimalLen...),
		"non-minimal kind": func() []byte {
			p := pairs()
			p[0].v = []byte{0x18, byte(KindDID)}
			return cborMap(p...)
		}(),
		"non-minimal map key": func() []byte {
			p := pairs()
			p[2].k = []byte{0x18, 0x03}
			return cborMap(p...)
		}(),
		"non-minimal map header": append([]byte{0xb8, 0x03}, cborMap(pairs()...)[1:]...),
		"indefinite-length body": func() []byte {
			p := pairs()
			chunks := append([]byte{0x5f}, cborBytes(env.Body[:10])...)
			chunks = append(chunks, cborBytes(env.Body[10:])...)
			p[1].v = append(chunks, 0xff)
			return cborMap(p...)
		}(),
		"indefinite-length map": func() []byte {
			m := cborMap(pairs()...)
			return append(append([]byte{0xbf}, m[1:]...), 0xff)
		}(),
		"unsorted keys": func() []byte {
			p := pairs()
			return cborMap(p[1], p[0], p[2])
		}(),
		"duplicate key": func() []byte {
			p := pairs()
			return cborMap(p[0], p[0], p[1], p[2])
		}(),
		"duplicate key, other value": func() []byte {
			p := pairs()
			return cborMap(p[0], p[1], p[2], kv{cborUint(2), cborBytes([]byte("x"))})
		}(),
		"unknown field": func() []byte {
			return cborMap(append(pairs(), kv{cborUint(9), cborBytes([]byte("x"))})...)
		}(),
		"text key": func() []byte {
			p := pairs()
			p[0].k = []byte{0x61, '1'}
			return cborMap(p...)
		}(),
		"negative kind": func() []byte {
			p := pairs()
			p[0].v = []byte{0x20}
			return cborMap(p...)
		}(),
		"kind out of range": func() []byte {
			p := pairs()
			p[0].v = cborUint(256 + uint64(KindDID))
			return cborMap(p...)
		}(),
		"body as text": func() []byte {
			p := pairs()
			p[1].v = append(cborHead(3, uint64(len(env.Body))), env.Body...)
			return cborMap(p...)
		}(),
		"empty claim field": func() []byte {
			return cborMap(append(pairs(), kv{cborUint(4), cborBytes(nil)})...)
		}(),
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := v.ParseDID(key, value)
			t.Log(err)
			wantErr(t, err, ErrMalformed)
			_, err = v.Parse(key, value)
			wantErr(t, err, ErrMalformed)
			if err := v.Namespaced().Validate(key, value); err == nil {
				t.Fatalf("Namespaced().Validate: got nil, want an error")
			}
		})
	}
}

// TestRejectsMalformedBody re-signs every bad body with the right key, so
// only the encoding is wrong.
func TestRejectsMalformedBody(t *testing.T) {
	v := strictValidator(t)
	id := idOf(t, keyA)
	base := func() []kv { return minimalDIDPairs(id) }
	cases := map[string][]byte{
		"non-minimal version": func() []byte {
			p := base()
			p[0].v = []byte{0x18, Version}
			return cborMap(p...)
		}(),
		"non-minimal issued-at": func() []byte {
			p := base()
			p[3].v = binary.BigEndian.AppendUint64([]byte{0x1b}, uint64(unix(-time.Hour)))
			return cborMap(p...)
		}(),
		"unsorted keys": func() []byte {
			p := base()
			return cborMap(p[0], p[2], p[1], p[3], p[4])
		}(),
		"duplicate seq": func() []byte {
			p := base()
			return cborMap(p[0], p[1], p[2], kv{cborUint(3), cborUint(99)}, p[3], p[4])
		}(),
		"unknown field": func() []byte {
			return cborMap(append(base(), kv{cborUint(10), cborUint(1)})...)
		}(),
		"empty direct list": func() []byte {
			return cborMap(append(base(), kv{cborUint(6), cborHead(4, 0)})...)
		}(),
		"short id": func() []byte {
			p := base()
			p[1].v = cborBytes(id[:31])
			return cborMap(p...)
		}(),
		"long id": func() []byte {
			p := base()
			p[1].v = cborBytes(append(id[:], 0))
			return cborMap(p...)
		}(),
		"invalid utf-8": func() []byte {
			return cborMap(append(base(), kv{cborUint(8), append(cborHead(4, 1), 0x62, 0xff, 0xfe)})...)
		}(),
		"trailing byte": append(cborMap(base()...), 0x00),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			value := mustMarshal(t, &envelope{Kind: KindDID, Body: body, Sig: sign(keyA, tagDID, body)})
			_, err := v.ParseDID(DIDKey(id), value)
			t.Log(err)
			wantErr(t, err, ErrMalformed)
		})
	}
	// Control: the same builder with nothing wrong is accepted.
	body := cborMap(base()...)
	value := mustMarshal(t, &envelope{Kind: KindDID, Body: body, Sig: sign(keyA, tagDID, body)})
	_, err := v.ParseDID(DIDKey(id), value)
	wantOK(t, err)
}
