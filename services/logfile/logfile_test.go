package logfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The log rotates within its cap, keeps the newest lines, reads back
// oldest first, and a reopened log (a restart) appends to the last run's.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, "device.log", 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		fmt.Fprintf(w, "line %03d %s\n", i, strings.Repeat("x", 40))
	}
	w.Close()
	total := int64(0)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		fi, _ := e.Info()
		total += fi.Size()
	}
	if len(entries) != 3 || total > 3*1000 {
		t.Fatalf("%d files, %d bytes: want the current and 2 rotated within 3,000 bytes", len(entries), total)
	}
	w, err = Open(dir, "device.log", 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fmt.Fprintf(w, "after the restart\n")
	var all bytes.Buffer
	if err := w.Copy(&all); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(all.String()), "\n")
	if lines[len(lines)-1] != "after the restart" || !strings.HasPrefix(lines[len(lines)-2], "line 099") {
		t.Fatalf("the newest lines: %q", lines[len(lines)-2:])
	}
	for i := 1; i < len(lines)-1; i++ {
		if lines[i-1] >= lines[i] {
			t.Fatalf("not oldest first: %q before %q", lines[i-1], lines[i])
		}
	}
	if strings.HasPrefix(lines[0], "line 000") {
		t.Error("the oldest lines were kept past the cap")
	}
	if _, err := os.Stat(filepath.Join(dir, "device.log.3")); !os.IsNotExist(err) {
		t.Errorf("a third rotated file: %v", err)
	}
}
