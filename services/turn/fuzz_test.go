package turn

import (
	"strconv"
	"strings"
	"testing"
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
