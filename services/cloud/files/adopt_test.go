package files

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAdopt(t *testing.T) {
	parent := t.TempDir()
	s := openStore(t, filepath.Join(parent, "files"), 0)
	put(t, s, "notes.txt", "mine")
	s.Mkdir("photos")
	put(t, s, "photos/a.jpg", "kept")
	// A restore beside the store, on the same file system.
	restored := filepath.Join(parent, "restore")
	os.MkdirAll(filepath.Join(restored, "photos"), 0o700)
	os.WriteFile(filepath.Join(restored, "notes.txt"), []byte("from the backup"), 0o600)
	os.WriteFile(filepath.Join(restored, "photos", "b.jpg"), []byte("bb"), 0o600)
	os.WriteFile(filepath.Join(restored, "new.txt"), []byte("new"), 0o600)

	n, err := s.Adopt(restored, "")
	if err != nil || n != 3 {
		t.Fatalf("Adopt = %d, %v; want 3 entries", n, err)
	}
	for p, want := range map[string]string{
		"notes.txt": "mine", "notes (restored).txt": "from the backup",
		"photos/a.jpg": "kept", "photos/b.jpg": "bb", "new.txt": "new", // folders merge
	} {
		if got := get(t, s, p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	u, _ := s.Usage()
	if want := int64(len("mine") + len("kept") + len("from the backup") + len("bb") + len("new")); u.Used != want {
		t.Errorf("used = %d after adopting, want %d", u.Used, want)
	}

	// Into a folder of its own; a second name clash gets a number.
	os.MkdirAll(restored, 0o700)
	os.WriteFile(filepath.Join(restored, "notes.txt"), []byte("again"), 0o600)
	if _, err := s.Adopt(restored, "Restored/x"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(restored, "notes.txt"), []byte("third"), 0o600)
	s.Adopt(restored, "")
	if got := get(t, s, "notes (restored 2).txt"); got != "third" {
		t.Errorf("second clash: %q", got)
	}
	if got := get(t, s, "Restored/x/notes.txt"); got != "again" {
		t.Errorf("adopted into a folder: %q", got)
	}
	if _, err := s.Adopt(restored, "../escape"); err == nil {
		t.Error("Adopt into ../escape: no error")
	}
}
