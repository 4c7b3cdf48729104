package records

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzValidate feeds DHT keys and values to the validator. The seed corpus
// in testdata/fuzz/FuzzValidate holds a valid record of each kind at
// testNow, records for the small-order ID (whose signature verifies whatever
// the body says, so mutations get past the signature check), and garbage,
// truncated and oversize values.
func FuzzValidate(f *testing.F) {
	v := &Validator{Now: fixedClock, AllowUnknownDomains: true}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		rec, err := v.Parse(key, value)
		if err != nil {
			if rv := reflect.ValueOf(rec); rv.IsValid() && !rv.IsNil() {
				t.Fatalf("got record %+v and error %v, want no record", rec, err)
			}
			if nerr := v.Namespaced().Validate(key, value); nerr == nil {
				t.Fatalf("Namespaced().Validate: got nil, want an error like %v", err)
			}
			return
		}
		if len(value) > MaxRecordSize {
			t.Fatalf("accepted a value of %d bytes, limit %d", len(value), MaxRecordSize)
		}
		again, err := v.Parse(key, value)
		if err != nil {
			t.Fatalf("second validation: got %v, want nil", err)
		}
		if !reflect.DeepEqual(again, rec) {
			t.Fatalf("second validation: got %+v, want %+v", again, rec)
		}
		if err := v.Namespaced().Validate(key, value); err != nil {
			t.Fatalf("Namespaced().Validate: got %v, want nil", err)
		}
		// What is accepted has exactly one encoding.
		env, err := decodeEnvelope(value)
		if err != nil {
			t.Fatalf("decodeEnvelope of an accepted value: %v", err)
		}
		if re, err := marshal(env); err != nil || !bytes.Equal(re, value) {
			t.Fatalf("re-encoded envelope: got %x, %v, want %x", re, err, value)
		}
		now := testNow.Unix()
		var wantKey string
		var issued, expires int64
		switch r := rec.(type) {
		case *DID:
			wantKey, issued, expires = DIDKey(r.ID), r.IssuedAt, r.Expires
			if len(r.Direct) > maxAddrs || len(r.Supernodes) > maxPeers || len(r.Names) > maxNames || len(r.Services) > maxServices {
				t.Fatalf("accepted a did record with too many entries: %+v", r)
			}
		case *Name:
			wantKey, issued, expires = NameKey(r.Grant.Name), r.Grant.IssuedAt, r.Grant.Expires
			if _, _, err := SplitName(r.Grant.Name); err != nil {
				t.Fatalf("accepted an invalid name: %v", err)
			}
			if (r.Grant.Status == StatusActive || r.Grant.Status == StatusReleased) && r.Claim == nil {
				t.Fatalf("accepted a %s grant without a claim", r.Grant.Status)
			}
			if r.Claim != nil && (r.Claim.Name != r.Grant.Name || r.Claim.DID != r.Grant.DID) {
				t.Fatalf("accepted a claim for %s by %s under a grant for %s to %s",
					r.Claim.Name, r.Claim.DID, r.Grant.Name, r.Grant.DID)
			}
		case *Domain:
			wantKey, issued, expires = DomainKey(r.Domain), r.IssuedAt, r.Expires
			if err := ValidDomain(r.Domain); err != nil {
				t.Fatalf("accepted an invalid domain: %v", err)
			}
			if len(r.Gateways) > maxGateways {
				t.Fatalf("accepted %d gateways", len(r.Gateways))
			}
		case *Backup:
			wantKey, issued, expires = BackupKey(r.ID), r.IssuedAt, r.Expires
			if len(r.Sealed) == 0 || len(r.Sealed) > MaxSealed {
				t.Fatalf("accepted %d sealed bytes", len(r.Sealed))
			}
		default:
			t.Fatalf("Parse returned a %T", rec)
		}
		if key != wantKey {
			t.Fatalf("accepted a record for %q under %q", wantKey, key)
		}
		if issued > testNow.Add(DefaultClockSkew).Unix() || expires <= now || expires <= issued {
			t.Fatalf("accepted issued-at %d, expires %d at %d", issued, expires, now)
		}
		// Select over copies of one valid value picks one of them.
		if i, err := v.Namespaced().Select(key, [][]byte{value, value}); err != nil || (i != 0 && i != 1) {
			t.Fatalf("Select: got %d, %v, want 0 or 1, nil", i, err)
		}
	})
}

// FuzzParseClaim feeds signed claims to ParseClaim, as an operator's API
// receives them.
func FuzzParseClaim(f *testing.F) {
	f.Fuzz(func(t *testing.T, body, sig []byte) {
		sc := SignedClaim{Body: body, Sig: sig}
		c, err := ParseClaim(sc)
		if err != nil {
			if c != nil {
				t.Fatalf("got claim %+v and error %v, want no claim", c, err)
			}
			return
		}
		if len(body) > MaxRecordSize {
			t.Fatalf("accepted a claim of %d bytes, limit %d", len(body), MaxRecordSize)
		}
		again, err := ParseClaim(sc)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("second parse: got %+v, %v, want %+v, nil", again, err, c)
		}
		if c.Version != Version {
			t.Fatalf("accepted version %d", c.Version)
		}
		if len(c.Nonce) < 8 || len(c.Nonce) > 64 {
			t.Fatalf("accepted a nonce of %d bytes", len(c.Nonce))
		}
		if _, _, err := SplitName(c.Name); err != nil {
			t.Fatalf("accepted an invalid name: %v", err)
		}
		if re, err := marshal(c); err != nil || !bytes.Equal(re, body) {
			t.Fatalf("re-encoded claim: got %x, %v, want %x", re, err, body)
		}
	})
}

// readCorpusFile reads a "go test fuzz v1" file whose values are all
// string or []byte literals.
func readCorpusFile(tb testing.TB, path string) [][]byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() || sc.Text() != "go test fuzz v1" {
		tb.Fatalf("%s: missing the go test fuzz v1 header", path)
	}
	var vals [][]byte
	for sc.Scan() {
		line := sc.Text()
		var lit string
		switch {
		case strings.HasPrefix(line, "string(") && strings.HasSuffix(line, ")"):
			lit = line[len("string(") : len(line)-1]
		case strings.HasPrefix(line, "[]byte(") && strings.HasSuffix(line, ")"):
			lit = line[len("[]byte(") : len(line)-1]
		default:
			tb.Fatalf("%s: unexpected line %.40q", path, line)
		}
		s, err := strconv.Unquote(lit)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		vals = append(vals, []byte(s))
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return vals
}

// TestFuzzSeedsValid keeps the committed corpora honest: the seeds named
// valid-* must pass at testNow, so the fuzzers start from real records.
func TestFuzzSeedsValid(t *testing.T) {
	v := &Validator{Now: fixedClock, AllowUnknownDomains: true}
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzValidate", "valid-*"))
	if len(files) < 5 {
		t.Fatalf("got %d valid FuzzValidate seeds, want at least 5", len(files))
	}
	for _, path := range files {
		vals := readCorpusFile(t, path)
		if len(vals) != 2 {
			t.Fatalf("%s: got %d values, want 2", path, len(vals))
		}
		if _, err := v.Parse(string(vals[0]), vals[1]); err != nil {
			t.Errorf("%s: got %v, want nil", path, err)
		}
	}
	files, _ = filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParseClaim", "valid-*"))
	if len(files) < 2 {
		t.Fatalf("got %d valid FuzzParseClaim seeds, want at least 2", len(files))
	}
	for _, path := range files {
		vals := readCorpusFile(t, path)
		if len(vals) != 2 {
			t.Fatalf("%s: got %d values, want 2", path, len(vals))
		}
		if _, err := ParseClaim(SignedClaim{Body: vals[0], Sig: vals[1]}); err != nil {
			t.Errorf("%s: got %v, want nil", path, err)
		}
	}
}
