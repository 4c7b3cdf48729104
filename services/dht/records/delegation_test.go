package records

import (
	"errors"
	"testing"
	"time"
)

func testDelegation(tb testing.TB, op, to []byte) *Delegation {
	tb.Helper()
	return &Delegation{Version: Version, Domain: testDomain, Operator: idOf(tb, op), Supernode: idOf(tb, to),
		IssuedAt: unix(-48 * time.Hour), Expires: unix(30 * 24 * time.Hour)}
}

func signDelegation(tb testing.TB, op []byte, d *Delegation) SignedDelegation {
	tb.Helper()
	sd, err := SignDelegation(op, d)
	if err != nil {
		tb.Fatalf("SignDelegation: %v", err)
	}
	return sd
}

// TestDelegatedGrant: a supernode grants under the operator's
// delegation; every way of getting the chain wrong is refused.
func TestDelegatedGrant(t *testing.T) {
	v := strictValidator(t)
	sc := signClaim(t, keyA, testClaim(t, keyA, testName, ActionHold))
	good := signDelegation(t, keyOperator, testDelegation(t, keyOperator, keySuper))
	val, err := SignDelegatedGrant(keySuper, good, testGrant(t, testName, idOf(t, keyA), StatusActive), &sc)
	if err != nil {
		t.Fatal(err)
	}
	n, err := v.ParseName(NameKey(testName), val)
	if err != nil {
		t.Fatalf("a delegated grant: %v", err)
	}
	if n.Grant.Signer != idOf(t, keySuper) || n.Delegation == nil || n.Delegation.Supernode != idOf(t, keySuper) {
		t.Fatalf("parsed %+v", n)
	}

	// The signing side refuses what it should not sign.
	if _, err := SignDelegatedGrant(keyB, good, testGrant(t, testName, idOf(t, keyA), StatusActive), &sc); err == nil {
		t.Error("a supernode signed with another supernode's delegation")
	}
	if _, err := SignGrant(keyOperator, &Grant{Signer: idOf(t, keySuper), Operator: idOf(t, keyOperator)}, &sc); err == nil {
		t.Error("SignGrant signed a grant that names a signer")
	}

	// A forged chain, built by hand where the signing side refuses.
	forge := func(del SignedDelegation, signer []byte, edit func(*Grant)) []byte {
		g := testGrant(t, testName, idOf(t, keyA), StatusActive)
		g.Signer = idOf(t, signer)
		if edit != nil {
			edit(g)
		}
		gg := *g
		v, err := signGrant(signer, &gg, &sc, envelope{Kind: KindName, Delegation: del.Body, DelegationSig: del.Sig})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	otherOp := signDelegation(t, keyOther, testDelegation(t, keyOther, keySuper))
	expired := testDelegation(t, keyOperator, keySuper)
	expired.Expires = unix(-time.Hour)
	late := testDelegation(t, keyOperator, keySuper)
	late.IssuedAt = unix(-time.Hour) // after the grant (issued a day ago)
	otherDomain := testDelegation(t, keyOperator, keySuper)
	otherDomain.Domain = "pc2.net"
	tampered := good
	tampered.Body = append([]byte(nil), good.Body...)
	tampered.Body[len(tampered.Body)-1] ^= 1
	for name, tc := range map[string]struct {
		val  []byte
		want error
	}{
		"no delegation":             {forge(SignedDelegation{}, keySuper, nil), ErrWrongOperator},
		"delegation by another key": {forge(otherOp, keySuper, nil), ErrWrongOperator},
		"delegation to another":     {forge(good, keyB, nil), ErrWrongOperator},
		"expired delegation":        {forge(signDelegation(t, keyOperator, expired), keySuper, nil), ErrExpired},
		"grant before delegation":   {forge(signDelegation(t, keyOperator, late), keySuper, nil), ErrWrongOperator},
		"delegation for another":    {forge(signDelegation(t, keyOperator, otherDomain), keySuper, nil), ErrInconsistent},
		"tampered delegation":       {forge(tampered, keySuper, nil), ErrBadSignature},
		"operator grant with a delegation": {func() []byte {
			g := testGrant(t, testName, idOf(t, keyA), StatusActive)
			v, err := signGrant(keyOperator, g, &sc, envelope{Kind: KindName, Delegation: good.Body, DelegationSig: good.Sig})
			if err != nil {
				t.Fatal(err)
			}
			return v
		}(), ErrInconsistent},
		"holding begins after the grant": {forge(good, keySuper, func(g *Grant) { g.Since = g.IssuedAt + 1 }), ErrMalformed},
		"follows a later record":         {forge(good, keySuper, func(g *Grant) { g.After = g.Seq }), ErrMalformed},
		"routes after it expires":        {forge(good, keySuper, func(g *Grant) { g.RouteUntil = g.Expires + 1 }), ErrMalformed},
	} {
		_, err := v.ParseName(NameKey(testName), tc.val)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

// TestBeats: the order of name records Select and publishers use.
func TestBeats(t *testing.T) {
	a, b := idOf(t, keyA), idOf(t, keyB)
	g := func(did [32]byte, seq uint64, since int64, after uint64, st Status) *Grant {
		return &Grant{DID: did, Seq: seq, IssuedAt: int64(seq / 1000), Since: since, After: after, Status: st}
	}
	for _, tc := range []struct {
		name string
		x, y *Grant
		want int
	}{
		{"renewal beats the grant it renews", g(a, 2000, 1, 0, StatusActive), g(a, 1000, 1, 0, StatusActive), 1},
		{"release beats the holding's grants", g(a, 3000, 1, 0, StatusReleased), g(a, 2000, 1, 0, StatusActive), 1},
		{"a holding that saw the release beats an old grant", g(b, 4000, 4, 3000, StatusActive), g(a, 2000, 1, 0, StatusActive), 1},
		{"an old grant with a higher seq still loses to a holding that saw it", g(b, 4000, 4, 3000, StatusActive), g(a, 3000, 1, 0, StatusActive), 1},
		{"racing holdings: the earlier began first", g(b, 9000, 9, 0, StatusActive), g(a, 8000, 8, 0, StatusActive), -1},
		{"racing holdings in one second: the lower seq", g(b, 8001, 8, 0, StatusActive), g(a, 8002, 8, 0, StatusActive), 1},
		{"the earlier holding's renewal still wins the race", g(a, 9500, 8, 0, StatusActive), g(b, 9000, 9, 0, StatusActive), 1},
		{"records of before holdings were dated: by seq", g(a, 2000, 0, 0, StatusActive), g(a, 1000, 0, 0, StatusActive), 1},
		{"equal records", g(a, 1000, 1, 0, StatusActive), g(a, 1000, 1, 0, StatusActive), 0},
	} {
		if got := Beats(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: Beats = %d, want %d", tc.name, got, tc.want)
		}
		if got := Beats(tc.y, tc.x); got != -tc.want {
			t.Errorf("%s (swapped): Beats = %d, want %d", tc.name, got, -tc.want)
		}
	}
}

// TestRoutesAt: an active grant routes until RouteUntil (or Expires).
func TestRoutesAt(t *testing.T) {
	g := &Grant{Status: StatusActive, IssuedAt: 100, RouteUntil: 200, Expires: 1000}
	if !g.RoutesAt(199) || g.RoutesAt(200) {
		t.Error("RouteUntil not honoured")
	}
	g.RouteUntil = 0
	if !g.RoutesAt(999) || g.RoutesAt(1000) {
		t.Error("without RouteUntil a grant routes until it expires")
	}
	g.Status = StatusReleased
	if g.RoutesAt(150) {
		t.Error("a released name routes")
	}
}

// TestTally: tallies signed by the operator or a delegated supernode
// validate; anything else is refused.
func TestTally(t *testing.T) {
	v := strictValidator(t)
	subject := TallyDID + idOf(t, keyA).String()
	tally := func() *Tally {
		return &Tally{Version: Version, Domain: testDomain, Subject: subject, Seq: 1, IssuedAt: unix(-time.Hour),
			Expires: unix(24 * time.Hour), Operator: idOf(t, keyOperator), Names: []TalliedName{{Name: testName, Expires: unix(time.Hour)}}}
	}
	good := signDelegation(t, keyOperator, testDelegation(t, keyOperator, keySuper))
	for name, sign := range map[string]func() ([]byte, error){
		"by the operator":          func() ([]byte, error) { return SignTally(keyOperator, nil, tally()) },
		"by a delegated supernode": func() ([]byte, error) { return SignTally(keySuper, &good, tally()) },
	} {
		val, err := sign()
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.ParseTally(TallyKey(testDomain, subject), val)
		if err != nil || len(got.Live(unix(0))) != 1 || len(got.Live(unix(2*time.Hour))) != 0 {
			t.Fatalf("%s: %+v %v", name, got, err)
		}
	}
	// Owners' own domains: hosts outside the domain.
	hosts := tally()
	hosts.Subject = TallyHosts + idOf(t, keyA).String()
	hosts.Names = []TalliedName{{Name: "cloud.example.org", Expires: unix(time.Hour)}, {Name: "example.net", Expires: unix(time.Hour)}}
	if val, err := SignTally(keyOperator, nil, hosts); err != nil {
		t.Fatal(err)
	} else if got, err := v.ParseTally(TallyKey(testDomain, hosts.Subject), val); err != nil || !got.HoldsHosts() || len(got.Names) != 2 {
		t.Fatalf("hosts tally: %+v %v", got, err)
	}
	nameAsHost := tally()
	nameAsHost.Subject = hosts.Subject
	otherDomain := tally()
	otherDomain.Names = []TalliedName{{Name: "alice.pc2.net", Expires: unix(time.Hour)}}
	badSubject := tally()
	badSubject.Subject = "invite-xyz"
	for name, tc := range map[string]struct {
		key  []byte
		del  *SignedDelegation
		t    *Tally
		want error
	}{
		"another key as the operator":    {keyOther, nil, func() *Tally { x := tally(); x.Operator = idOf(t, keyOther); return x }(), ErrWrongOperator},
		"a supernode without delegation": {keySuper, nil, func() *Tally { x := tally(); x.Operator = idOf(t, keySuper); return x }(), ErrWrongOperator},
		"a name of another domain":       {keyOperator, nil, otherDomain, ErrMalformed},
		"a malformed subject":            {keyOperator, nil, badSubject, ErrMalformed},
		"a name of the domain as a host": {keyOperator, nil, nameAsHost, ErrMalformed},
	} {
		val, err := SignTally(tc.key, tc.del, tc.t)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.ParseTally(TallyKey(testDomain, tc.t.Subject), val); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	val, _ := SignTally(keyOperator, nil, tally())
	if _, err := v.ParseTally(TallyKey(testDomain, TallyDID+idOf(t, keyB).String()), val); !errors.Is(err, ErrWrongKey) {
		t.Errorf("under another subject's key: %v", err)
	}
}
