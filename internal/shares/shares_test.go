package shares

import "testing"

func TestCounter(t *testing.T) {
	var c Counter[string]
	var releases []func()
	for i := range 3 {
		r, ok := c.Take("a", 3)
		if !ok {
			t.Fatalf("take %d refused within the limit", i)
		}
		releases = append(releases, r)
	}
	if _, ok := c.Take("a", 3); ok {
		t.Fatal("a take past the limit was granted")
	}
	if _, ok := c.Take("b", 3); !ok {
		t.Fatal("another key was refused")
	}
	releases[0]()
	releases[0]() // twice: counted once
	if got := c.Held("a"); got != 2 {
		t.Fatalf("held after one release (called twice): %d, want 2", got)
	}
	if _, ok := c.Take("a", 3); !ok {
		t.Fatal("a take after a release was refused")
	}
}
