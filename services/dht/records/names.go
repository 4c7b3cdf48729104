package records

import (
	"fmt"
	"strings"
)

// Name rules: a name is one label of 3-63 characters (lowercase letters,
// digits, inner hyphens) under a domain of at least two DNS labels, all
// lowercase, at most 253 characters in total.

// ValidLabel reports whether label may be registered as a name.
func ValidLabel(label string) error {
	if len(label) < 3 || len(label) > 63 {
		return fmt.Errorf("%w: %q must be 3 to 63 characters", ErrInvalidName, label)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(label)-1:
		default:
			return fmt.Errorf("%w: %q may only use lowercase letters, digits and inner hyphens", ErrInvalidName, label)
		}
	}
	return nil
}

// ValidDomain reports whether domain is a lowercase DNS domain of at least
// two labels.
func ValidDomain(domain string) error {
	if len(domain) == 0 || len(domain) > 253 {
		return fmt.Errorf("%w: domain %q must be 1 to 253 characters", ErrInvalidName, domain)
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%w: domain %q needs at least two labels", ErrInvalidName, domain)
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return fmt.Errorf("%w: domain %q has an empty or overlong label", ErrInvalidName, domain)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			case c == '-' && i > 0 && i < len(l)-1:
			default:
				return fmt.Errorf("%w: domain %q has invalid character %q", ErrInvalidName, domain, c)
			}
		}
	}
	return nil
}

// SplitName splits a fully qualified name such as alice.ela.city into its
// label and domain, checking both.
func SplitName(fqdn string) (label, domain string, err error) {
	label, domain, ok := strings.Cut(fqdn, ".")
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not a fully qualified name", ErrInvalidName, fqdn)
	}
	if err := ValidLabel(label); err != nil {
		return "", "", err
	}
	if err := ValidDomain(domain); err != nil {
		return "", "", err
	}
	if len(fqdn) > 253 {
		return "", "", fmt.Errorf("%w: %q is longer than 253 characters", ErrInvalidName, fqdn)
	}
	return label, domain, nil
}
