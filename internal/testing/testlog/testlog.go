// Package testlog sends a test's log output to testing.TB.Log, so it shows
// with the test that produced it (and only with -v or on failure).
package testlog

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Writer returns an io.Writer that logs each write through t.Log.
func Writer(t testing.TB) io.Writer { return writer{t} }

// New returns a text logger writing through t.Log at level and above.
func New(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: level}))
}
