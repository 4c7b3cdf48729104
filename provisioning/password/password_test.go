package password

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h, "correct") {
		t.Fatalf("hash %q", h)
	}
	if err := Verify(h, "correct horse battery"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := Verify(h, "correct horse batterY"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := Hash("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	if _, err := Hash("short"); err == nil {
		t.Fatal("short password accepted")
	}
}

// TestKnownHash checks a hash made by another implementation (the argon2
// command line tool of the reference implementation: echo -n password |
// argon2 somesalt -id -t 2 -m 16 -p 4 -l 24 -e, Debian package argon2),
// so the PHC reading is compatible.
func TestKnownHash(t *testing.T) {
	const h = "$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$F1jG2CV3/Nr+yRuIsPKw0J9r4s7cJHBU"
	if err := Verify(h, "password"); err != nil {
		t.Fatalf("reference hash: %v", err)
	}
	if err := Verify(h, "passwore"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("reference hash, wrong password: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	for _, h := range []string{
		"",
		"password",
		"$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8",
		"$argon2id$v=16$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8",
		"$argon2id$v=19$m=99999999,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8",
		"$argon2id$v=19$m=19456,t=0,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8",
		"$argon2id$v=19$m=19456,t=2,p=1,x=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8",
		"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$",
	} {
		if err := Check(h); err == nil {
			t.Errorf("Check(%q): no error", h)
		}
		if err := Verify(h, "password"); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Verify(%q): %v, want a format error", h, err)
		}
	}
}

// The guard: a client out of attempts is refused even the right
// password, others are not; a password that passed is taken again
// without an attempt until forgotten.
func TestGuard(t *testing.T) {
	g, now, hash := newTestGuard(t)
	if g.Remembered(hash, "right password") {
		t.Fatal("a password remembered before it was checked")
	}
	if err := g.Check(Client{Addr: "a"}, hash, "right password"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if !g.Remembered(hash, "right password") || g.Remembered(hash, "wrong") {
		t.Fatal("Remembered does not tell the password that passed")
	}
	for i := range AttemptsPerClientBurst {
		if err := g.Check(Client{Addr: "b"}, hash, "wrong"); !errors.Is(err, ErrMismatch) {
			t.Fatalf("guess %d: got %v, want ErrMismatch", i, err)
		}
	}
	if err := g.Check(Client{Addr: "b"}, hash, "right password"); !errors.Is(err, ErrLimited) {
		t.Fatalf("right password from a limited client: got %v, want ErrLimited", err)
	}
	if err := g.Check(Client{Addr: "a"}, hash, "right password"); err != nil {
		t.Fatalf("remembered password of another client: %v", err)
	}
	if err := g.Check(Client{Addr: "c"}, hash, "wrong"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("another client: got %v, want ErrMismatch", err)
	}
	*now = (*now).Add(7 * time.Second) // one attempt back
	if err := g.Check(Client{Addr: "b"}, hash, "right password"); err != nil {
		t.Fatalf("after waiting: %v", err)
	}
	g.Forget()
	for range AttemptsPerClientBurst {
		g.Allow(Client{Addr: "a"})
	}
	if err := g.Check(Client{Addr: "a"}, hash, "right password"); !errors.Is(err, ErrLimited) {
		t.Fatalf("forgotten password, no attempts left: got %v, want ErrLimited", err)
	}
}

// TestGuardStrangersCannotLockOut: guesses from many addresses empty the
// global bucket; then strangers are refused, but the owner on the local
// network, or from an address whose password passed before, still logs
// in with the right password. An IPv6 /64 is one client.
func TestGuardStrangersCannotLockOut(t *testing.T) {
	g, now, hash := newTestGuard(t)
	// The owner logged in from 203.0.113.9 yesterday.
	if err := g.Check(Client{Addr: "203.0.113.9"}, hash, "right password"); err != nil {
		t.Fatal(err)
	}
	*now = (*now).Add(24 * time.Hour) // the remembered password is gone
	// Strangers from many addresses, two guesses each.
	for i := range AttemptsGlobalBurst {
		for range 2 {
			g.Allow(Client{Addr: fmt.Sprintf("198.51.100.%d", i)})
		}
	}
	if err := g.Check(Client{Addr: "198.51.100.200"}, hash, "right password"); !errors.Is(err, ErrLimited) {
		t.Fatalf("a new stranger while the global bucket is empty: got %v, want ErrLimited", err)
	}
	if err := g.Check(Client{Addr: "192.168.1.20", Local: true}, hash, "right password"); err != nil {
		t.Fatalf("the owner on the LAN during the attack: %v", err)
	}
	g.Forget()
	if err := g.Check(Client{Addr: "203.0.113.9"}, hash, "right password"); err != nil {
		t.Fatalf("the owner from a known address during the attack: %v", err)
	}
	if err := g.Check(Client{Addr: "203.0.113.9"}, hash, "wrong"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("a wrong password from a known address: got %v, want ErrMismatch", err)
	}

	// A guesser on the LAN rotating through its addresses empties the
	// local bucket only: the owner from a known address still gets in.
	for i := range AttemptsGlobalBurst {
		g.Allow(Client{Addr: fmt.Sprintf("192.168.1.%d", 100+i), Local: true})
	}
	if err := g.Check(Client{Addr: "192.168.1.250", Local: true}, hash, "right password"); !errors.Is(err, ErrLimited) {
		t.Fatalf("a new LAN address once the local bucket is empty: got %v, want ErrLimited", err)
	}
	if err := g.Check(Client{Addr: "203.0.113.9"}, hash, "right password"); err != nil {
		t.Fatalf("the owner from a known address after the LAN guessing: %v", err)
	}

	// One /64: rotating through its addresses does not give more attempts.
	g, _, _ = newTestGuard(t)
	for i := range AttemptsPerClientBurst {
		g.Allow(Client{Addr: fmt.Sprintf("2001:db8:1:2::%x", i+1)})
	}
	if g.Allow(Client{Addr: "2001:db8:1:2:ffff::1"}) {
		t.Fatal("another address of the same /64 got an attempt past the burst")
	}
	if !g.Allow(Client{Addr: "2001:db8:1:3::1"}) {
		t.Fatal("another /64 was refused")
	}
}

// newTestGuard is a Guard on a clock the test moves, and the hash of
// "right password".
func newTestGuard(t *testing.T) (*Guard, *time.Time, string) {
	t.Helper()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	g, err := NewGuard(func() time.Time { return now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := Hash("right password")
	if err != nil {
		t.Fatal(err)
	}
	return g, &now, hash
}
