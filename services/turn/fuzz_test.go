package turn

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/stun/v3"
)

// FuzzParseUsername: usernames come from anyone who can send a packet.
func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{
		"1700000000:alice", "1700000000:did:boson:abc", "alice", ":alice",
		"1700000000:", "-1:alice", "+1:alice", "99999999999999999999:a", "0:a", "",
		"1700000000", "17e8:alice", " 1:alice", "1 :alice",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, username string) {
		exp, user, err := parseUsername(username)
		if err != nil {
			return
		}
		if user == "" || exp.Unix() < 0 {
			t.Fatalf("parseUsername(%q) = %v, %q: accepted an empty user or negative expiry", username, exp, user)
		}
		// Accepted usernames are exactly what Credentials writes, give or
		// take leading zeros.
		ts, _, _ := strings.Cut(username, ":")
		if strconv.FormatInt(exp.Unix(), 10) != strings.TrimLeft(ts, "0") && !(exp.Unix() == 0 && strings.Trim(ts, "0") == "") {
			t.Fatalf("parseUsername(%q): expiry %d does not round-trip", username, exp.Unix())
		}
		if userOf(username) != user {
			t.Fatalf("userOf(%q) = %q, parseUsername says %q", username, userOf(username), user)
		}
	})
}

// FuzzParseBindingResponse: responses come from the network.
func FuzzParseBindingResponse(f *testing.F) {
	tid := [stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	f.Add(bindingSuccess(tid, netip.MustParseAddrPort("192.0.2.1:3478")))
	f.Add(bindingSuccess(tid, netip.MustParseAddrPort("[2001:db8::1]:9")))
	f.Add(stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingError, stun.CodeBadRequest).Raw)
	f.Add(stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingSuccess).Raw)
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		addr, ok, err := parseBindingResponse(b, tid)
		if !ok && (err != nil || addr.IsValid()) {
			t.Fatalf("not ours, yet %v, %v", addr, err)
		}
		if ok && err == nil && (!addr.IsValid() || addr.Port() == 0 || addr.Addr().Is4In6()) {
			t.Fatalf("accepted bad address %v", addr)
		}
	})
}
