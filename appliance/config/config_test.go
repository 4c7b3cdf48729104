package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	type cfg struct {
		A string   `json:"a"`
		D Duration `json:"d"`
	}
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var c cfg
	if err := Load(write("{\"a\": \"x\", \"d\": \"90s\"}\n   \n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.A != "x" || c.D.Or(0) != 90*time.Second {
		t.Fatalf("got %+v, want a=x d=90s", c)
	}
	if got := Duration(0).Or(time.Hour); got != time.Hour {
		t.Fatalf("zero Or: got %v, want 1h", got)
	}
	for body, want := range map[string]string{
		`{"a": "x"} {"a": "y"}`: "trailing data",
		`{"a": "x"}}`:           "trailing data",
		`{"a": "x"}]`:           "trailing data",
		`{"b": 1}`:              `unknown field "b"`,
		`{"d": 5}`:              "duration must be a string",
		`{"d": "-5s"}`:          "negative",
		`[1]`:                   "cannot unmarshal",
	} {
		if err := Load(write(body), &c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", body, err, want)
		}
	}
	if err := Load(filepath.Join(dir, "none.json"), &c); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("missing: got %v, want ErrNotConfigured", err)
	}
}
