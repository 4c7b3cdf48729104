package tunnel

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzReadLine: a /pc2/tcp/1 stream starts with the service's name and a
// newline, written by whoever opened the stream. readLine returns a line
// without its newline, at most max bytes, having read exactly the line
// and its newline; or an error.
func FuzzReadLine(f *testing.F) {
	for _, s := range []string{"ssh\n", "echo\nand the payload", "", "no newline", "\n", strings.Repeat("x", 64) + "\n", strings.Repeat("y", 65) + "\n", strings.Repeat("z", 70)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 65
		r := bytes.NewReader(in)
		line, err := readLine(r, max)
		if err != nil {
			return
		}
		if len(line) > max || strings.Contains(line, "\n") {
			t.Fatalf("line %q: too long or with a newline", line)
		}
		if used := len(in) - r.Len(); used != len(line)+1 || in[len(line)] != '\n' || string(in[:len(line)]) != line {
			t.Fatalf("line %q: read %d bytes of %q", line, used, in)
		}
	})
}
