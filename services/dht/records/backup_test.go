package records

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func testBackup(tb testing.TB, seq uint64) *Backup {
	return &Backup{Version: Version, ID: idOf(tb, keyA), Seq: seq, IssuedAt: unix(-time.Hour),
		Expires: unix(399 * 24 * time.Hour), Sealed: bytes.Repeat([]byte{7}, 100)}
}

func TestBackupRecord(t *testing.T) {
	v := strictValidator(t)
	b := testBackup(t, 1)
	key := BackupKey(b.ID)
	val, err := SignBackup(keyA, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.ParseBackup(key, val)
	if err != nil || !bytes.Equal(got.Sealed, b.Sealed) || got.Seq != 1 {
		t.Fatalf("ParseBackup = %+v, %v", got, err)
	}
	if _, err := v.Parse(key, val); err != nil {
		t.Errorf("Parse: %v", err)
	}
	if err := v.Namespaced().Validate(key, val); err != nil {
		t.Errorf("the DHT validator refuses a good backup record: %v", err)
	}

	// Only the ID's own key signs it.
	if _, err := SignBackup(keyB, b); err == nil {
		t.Error("SignBackup with another key: no error")
	}
	body := mustMarshal(t, b)
	forged := mustMarshal(t, &envelope{Kind: KindBackup, Body: body, Sig: sign(keyB, tagBackup, body)})
	_, err = v.ParseBackup(key, forged)
	wantErr(t, err, ErrBadSignature)
	// A did record's signature over the same body does not verify.
	crossed := mustMarshal(t, &envelope{Kind: KindBackup, Body: body, Sig: sign(keyA, tagDID, body)})
	_, err = v.ParseBackup(key, crossed)
	wantErr(t, err, ErrBadSignature)

	// Under another node's key, or as another kind.
	_, err = v.ParseBackup(BackupKey(idOf(t, keyB)), val)
	wantErr(t, err, ErrWrongKey)
	_, err = v.ParseDID(DIDKey(b.ID), val)
	wantErr(t, err, ErrWrongKey)
	_, err = v.ParseBackup(key, signDID(t, keyA, testDID(t, keyA)))
	wantErr(t, err, ErrWrongKey)

	for _, tc := range []struct {
		name string
		edit func(*Backup)
		want error
	}{
		{"too long a life", func(b *Backup) { b.Expires = unix(401 * 24 * time.Hour) }, ErrLifetime},
		{"expired", func(b *Backup) { b.IssuedAt, b.Expires = unix(-48*time.Hour), unix(-time.Hour) }, ErrExpired},
		{"future", func(b *Backup) { b.IssuedAt = unix(time.Hour) }, ErrFuture},
		{"nothing sealed", func(b *Backup) { b.Sealed = nil }, ErrTooManyEntries},
		{"too much sealed", func(b *Backup) { b.Sealed = make([]byte, MaxSealed+1) }, ErrTooManyEntries},
		{"version", func(b *Backup) { b.Version = 2 }, ErrVersion},
	} {
		bad := testBackup(t, 1)
		tc.edit(bad)
		val, err := SignBackup(keyA, bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.ParseBackup(key, val); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	// Select: the higher seq wins, so a restored device's record
	// replaces the old one.
	newer, _ := SignBackup(keyA, testBackup(t, 2))
	i, err := v.Namespaced().Select(key, [][]byte{val, newer})
	if err != nil || i != 1 {
		t.Errorf("Select = %d, %v; want the higher seq (1)", i, err)
	}
}
