package gateway

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/mtibben/confusables"
	"golang.org/x/net/idna"
)

// Look-alike names. A label is refused when a visitor could take it for
// another: an internationalized label (xn--...) that is not valid IDNA,
// mixes scripts, or reads as an ASCII label ("xn--80ak6aa92e" is
// Cyrillic "аррӏе"); and a label that looks like a reserved one or like a
// name another DID holds ("paypa1" beside "paypal"). "Looks like" is
// equality of skeletons (Unicode TS #39: the confusables table maps every
// character to a prototype, so "1" and "l", "rn" and "m", Cyrillic "а"
// and Latin "a" meet), lowercased since labels are.
//
// The table comes from github.com/mtibben/confusables, generated from
// Unicode's confusables.txt; x/text has no confusables data.

// errLookalike marks refusals of look-alike labels.
var errLookalike = errors.New("looks like another name")

// skeletonOf is label's look-alike key, or an error when label is an
// internationalized label that no one should hold.
func skeletonOf(label string) (string, error) {
	u := label
	if strings.HasPrefix(label, "xn--") {
		var err error
		if u, err = idna.Lookup.ToUnicode(label); err != nil {
			return "", fmt.Errorf("%s is not a valid internationalized label: %w", label, err)
		}
		if s := scripts(u); len(s) > 1 {
			return "", fmt.Errorf("%w: %s (%q) mixes scripts (%s)", errLookalike, label, u, strings.Join(s, ", "))
		}
	}
	key := strings.ToLower(confusables.Skeleton(strings.ToLower(u)))
	if u != label && isASCII(key) {
		return "", fmt.Errorf("%w: %s (%q) reads as %q", errLookalike, label, u, key)
	}
	return key, nil
}

// scripts names the scripts of s's letters (Common and Inherited
// characters, such as digits and hyphens, belong to none).
func scripts(s string) []string {
	var out []string
	for _, r := range s {
		if !unicode.IsLetter(r) {
			continue
		}
		for name, table := range unicode.Scripts {
			if name == "Common" || name == "Inherited" || !unicode.Is(table, r) {
				continue
			}
			found := false
			for _, n := range out {
				found = found || n == name
			}
			if !found {
				out = append(out, name)
			}
			break
		}
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
