package files

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestClean(t *testing.T) {
	ok := map[string]string{
		"":                       "",
		"/":                      "",
		".":                      "",
		"a":                      "a",
		"/a/b/":                  "a/b",
		"a//b":                   "a/b",
		"./a/./b":                "a/b",
		"...":                    "...",
		"..a/b..":                "..a/b..",
		"%2e%2e":                 "%2e%2e", // not decoded here: a literal, harmless name
		"Fotos/Ünï €.jpg":        "Fotos/Ünï €.jpg",
		".pc2-uploadsx":          ".pc2-uploadsx",
		strings.Repeat("n", 255): strings.Repeat("n", 255),
	}
	for in, want := range ok {
		got, err := Clean(in)
		if err != nil || got != want {
			t.Errorf("Clean(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"..", "/..", "../", "../x", "a/..", "a/../../x", "/a/b/../../../etc/passwd",
		`a\b`, `..\..\x`, "a\x00b", "a\nb", "a\x7fb", "\x1b[2J",
		TempDir, "/" + TempDir + "/x", "a/" + TempDir,
		strings.Repeat("n", 256), strings.Repeat("a/", 2049),
	}
	// Callers decode URLs; the decoded forms of encoded traversals must
	// be refused.
	for _, enc := range []string{"%2e%2e", "%2E%2E/x", "a%2f..%2f..%2fx", "..%2f..%2fetc%2fpasswd", "%2e%2e%5cx", "a%00b"} {
		dec, err := url.PathUnescape(enc)
		if err != nil {
			t.Fatal(err)
		}
		bad = append(bad, dec)
	}
	for _, in := range bad {
		if got, err := Clean(in); !errors.Is(err, ErrBadPath) {
			t.Errorf("Clean(%q) = %q, %v; want ErrBadPath", in, got, err)
		}
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "/", "a/b", "../x", "a/./b//c/", `a\b`, "a\x00", TempDir, "%2e%2e", "é/ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Clean(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("Clean(%q): %v, want ErrBadPath", in, err)
			}
			return
		}
		if again, err := Clean(got); err != nil || again != got {
			t.Fatalf("Clean(Clean(%q)) = %q, %v; want %q", in, again, err, got)
		}
		if got == "" {
			return
		}
		for _, elem := range strings.Split(got, "/") {
			if elem == "" || elem == "." || elem == ".." || elem == TempDir || strings.ContainsAny(elem, "\\\x00") || len(elem) > maxName {
				t.Fatalf("Clean(%q) = %q: element %q", in, got, elem)
			}
		}
		if !filepath.IsLocal(got) {
			t.Fatalf("Clean(%q) = %q, not local", in, got)
		}
	})
}

func TestStore(t *testing.T) {
	s := newStore(t, 0)
	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: got %v, want %v", what, err, want)
		}
	}
	check("mkdir", s.Mkdir("Docs"), nil)
	check("mkdir again", s.Mkdir("Docs"), ErrExists)
	check("mkdir root", s.Mkdir("/"), ErrExists)
	check("mkdir no parent", s.Mkdir("x/y"), ErrNotFound)
	check("mkdirall", s.MkdirAll("/Fotos/2026/Mai/"), nil)
	check("mkdirall again", s.MkdirAll("Fotos/2026"), nil)
	put(t, s, "/Docs/b.txt", "bee")
	put(t, s, "Docs/a.txt", "a")
	put(t, s, "Docs/B2.txt", "")
	check("mkdir in file", s.Mkdir("Docs/a.txt/x"), ErrNotDir)
	check("mkdir over file", s.Mkdir("Docs/a.txt"), ErrExists)
	if err := s.Mkdir("Docs/sub"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "Docs/b.txt"); got != "bee" {
		t.Errorf("read back %q, want %q", got, "bee")
	}
	fi, err := s.Stat("Docs/b.txt")
	if err != nil || fi.Size() != 3 || fi.IsDir() {
		t.Errorf("Stat = %v, %v; want a 3-byte file", fi, err)
	}
	_, err = s.Stat("nope")
	check("stat missing", err, ErrNotFound)
	check("stat missing is fs.ErrNotExist", err, fs.ErrNotExist)
	if HTTPStatus(err) != http.StatusNotFound {
		t.Errorf("HTTPStatus(%v) = %d, want 404", err, HTTPStatus(err))
	}
	_, err = s.Open("Docs")
	check("open folder", err, ErrIsDir)

	ents, err := s.List("Docs")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if want := []string{"sub", "a.txt", "b.txt", "B2.txt"}; !slices.Equal(names, want) {
		t.Errorf("List = %q, want %q", names, want)
	}
	root, err := s.List("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range root {
		if e.Name == TempDir {
			t.Errorf("List(/) shows %s", TempDir)
		}
	}
	if len(root) != 2 {
		t.Errorf("List(/) = %v, want Docs and Fotos", root)
	}

	_, err = s.Create("Docs")
	check("create over folder", err, ErrIsDir)
	_, err = s.Create("nope/x")
	check("create without parent", err, ErrNotFound)
	_, err = s.Create("Docs/a.txt/x")
	check("create in file", err, ErrNotDir)

	check("rename onto existing", s.Rename("Docs/a.txt", "Docs/b.txt"), ErrExists)
	check("rename into itself", s.Rename("Fotos", "Fotos/2026/Fotos"), ErrBadPath)
	check("rename root", s.Rename("/", "x"), ErrBadPath)
	check("rename onto root", s.Rename("Docs", "/"), ErrBadPath)
	check("rename missing", s.Rename("nope", "x"), ErrNotFound)
	check("move file", s.Rename("Docs/a.txt", "Fotos/2026/a.txt"), nil)
	check("move folder", s.Rename("Docs", "Fotos/Docs"), nil)
	if got := get(t, s, "Fotos/Docs/b.txt"); got != "bee" {
		t.Errorf("after move: %q, want %q", got, "bee")
	}
	check("remove root", s.Remove(""), ErrBadPath)
	check("remove missing", s.Remove("nope"), ErrNotFound)
	check("remove file", s.Remove("Fotos/2026/a.txt"), nil)
	check("remove folder", s.Remove("Fotos"), nil)
	if ents, _ := s.List(""); len(ents) != 0 {
		t.Errorf("after removing all: %v", ents)
	}

	r, err := s.OpenRoot("/")
	check("open root as root", err, ErrBadPath)
	if r != nil {
		r.Close()
	}
	s.MkdirAll("share/in")
	put(t, s, "share/in/f", "shared")
	r, err = s.OpenRoot("share")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := r.ReadFile("in/f"); err != nil || string(b) != "shared" {
		t.Errorf("shared root: %q, %v", b, err)
	}
	if _, err := r.Stat("../" + TempDir); err == nil {
		t.Error("shared root reaches out of its folder")
	}

	for err, want := range map[error]int{
		nil: 200, ErrNotFound: 404, ErrBadPath: 400, ErrExists: 409, ErrIsDir: 409, ErrNotDir: 409,
		ErrQuota: 507, ErrDiskFull: 507, errors.New("x"): 500, fs.ErrPermission: 403,
	} {
		if got := HTTPStatus(err); got != want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", err, got, want)
		}
	}
}

// TestSpecialFiles: a FIFO somebody put in the tree neither blocks Open
// nor shows in List.
func TestSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open("fifo"); !errors.Is(err, ErrBadPath) {
		t.Errorf("Open(fifo): %v, want ErrBadPath", err)
	}
	if ents, _ := s.List(""); len(ents) != 0 {
		t.Errorf("List shows %v", ents)
	}
}

// escapeFixture is a store at base/root with symlinks out of it: evil-dir
// to base/outside (which holds secret), evil-etc to /etc, evil-file to
// the secret itself. in-dir and in-file are links that stay inside.
// Tests only read through evil-etc and write only towards outside, so a
// broken store would not damage the machine running them.
type escapeFixture struct {
	s       *Store
	root    string
	outside string
}

const secret = "the owner's neighbour must never read this"

func newEscapeFixture(t *testing.T) escapeFixture {
	base := t.TempDir()
	f := escapeFixture{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	if err := os.Mkdir(f.outside, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.outside, "secret"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	f.s = openStore(t, f.root, 0)
	if err := f.s.Mkdir("sub"); err != nil {
		t.Fatal(err)
	}
	put(t, f.s, "sub/file", "inside")
	put(t, f.s, "f", "mine")
	for name, target := range map[string]string{
		"evil-dir":  f.outside,
		"evil-rel":  "../outside",
		"evil-etc":  "/etc",
		"evil-file": filepath.Join(f.outside, "secret"),
		"in-dir":    "sub",
		"in-file":   "sub/file",
	} {
		if err := os.Symlink(target, filepath.Join(f.root, name)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// intact checks that nothing outside the root changed.
func (f escapeFixture) intact(t *testing.T) {
	t.Helper()
	mustContain(t, filepath.Join(f.outside, "secret"), secret)
	ents, err := os.ReadDir(f.outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("outside holds %v, want only secret", ents)
	}
}

func TestSymlinkEscape(t *testing.T) {
	f := newEscapeFixture(t)
	s := f.s
	refused := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: succeeded, want refusal", what)
		} else if code := HTTPStatus(err); code != 400 && code != 404 {
			t.Errorf("%s: %v (HTTP %d), want 400 or 404", what, err, code)
		}
	}
	for _, p := range []string{"evil-dir/secret", "evil-rel/secret", "evil-file", "evil-etc/passwd", "evil-etc/hostname",
		"../outside/secret", "sub/../../outside/secret", f.outside + "/secret", "/etc/passwd"} {
		fh, err := s.Open(p)
		if err == nil {
			b, _ := io.ReadAll(fh)
			fh.Close()
			t.Errorf("Open(%q) read %d bytes, want refusal", p, len(b))
			continue
		}
		refused("Open "+p, err)
		_, err = s.Stat(p)
		refused("Stat "+p, err)
	}
	for _, p := range []string{"evil-dir", "evil-rel", "evil-etc", "evil-file", "../outside"} {
		_, err := s.List(p)
		refused("List "+p, err)
		r, err := s.OpenRoot(p)
		refused("OpenRoot "+p, err)
		if r != nil {
			r.Close()
		}
	}
	ents, err := s.List("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if want := []string{"in-dir", "sub", "f", "in-file"}; !slices.Equal(names, want) {
		t.Errorf("List(/) = %q, want %q (no escaping links)", names, want)
	}
	if got := get(t, s, "in-dir/file"); got != "inside" {
		t.Errorf("link inside the root: %q", got)
	}
	if got := get(t, s, "in-file"); got != "inside" {
		t.Errorf("link inside the root: %q", got)
	}

	// Writing through links.
	for _, p := range []string{"evil-dir/new", "evil-rel/new", "evil-file", "evil-dir/secret", "../outside/new"} {
		u, err := s.Create(p)
		if err == nil {
			io.WriteString(u, "pwned")
			err = u.Commit()
		}
		refused("Create "+p, err)
	}
	refused("Mkdir", s.Mkdir("evil-dir/new"))
	refused("MkdirAll", s.MkdirAll("evil-rel/new/deeper"))

	// Renames through and onto links.
	if err := s.Rename("f", "evil-file"); !errors.Is(err, ErrExists) {
		t.Errorf("Rename onto a link: %v, want ErrExists", err)
	}
	refused("Rename into link", s.Rename("f", "evil-dir/f"))
	refused("Rename out of link", s.Rename("evil-dir/secret", "stolen"))
	refused("Rename ..", s.Rename("f", "../outside/f"))
	mustNotExist(t, filepath.Join(f.root, "stolen"))

	// Removing through links; removing a link removes only the link.
	refused("Remove through link", s.Remove("evil-dir/secret"))
	refused("Remove through link", s.Remove("evil-rel/secret"))
	refused("Remove ..", s.Remove("../outside/secret"))
	for _, p := range []string{"evil-dir", "evil-file", "evil-rel"} {
		if err := s.Remove(p); err != nil {
			t.Errorf("Remove(%s): %v", p, err)
		}
	}
	f.intact(t)
	if got := get(t, s, "f"); got != "mine" {
		t.Errorf("f = %q after refused renames", got)
	}
}

// TestAbsoluteStaysInside: an absolute path names a path in the root.
func TestAbsoluteStaysInside(t *testing.T) {
	f := newEscapeFixture(t)
	if err := f.s.MkdirAll(f.outside); err != nil {
		t.Fatal(err)
	}
	put(t, f.s, f.outside+"/secret", "inside")
	mustContain(t, filepath.Join(f.root, f.outside, "secret"), "inside")
	f.intact(t)
}

func TestCrashLeavesNoPartialFile(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	put(t, s, "old", "old content")
	for _, p := range []string{"new", "old"} {
		u, err := s.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(u, "half of the new"); err != nil {
			t.Fatal(err)
		}
		// No Commit, no Abort: the process dies here.
	}
	if n := len(temps(t, dir)); n != 2 {
		t.Fatalf("%d temp files, want 2", n)
	}
	s.Close()

	s = openStore(t, dir, 0)
	mustNotExist(t, filepath.Join(dir, "new"))
	if got := get(t, s, "old"); got != "old content" {
		t.Errorf("old = %q after a crash during its overwrite", got)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Errorf("left over after reopening: %v", left)
	}
	if u, _ := s.Usage(); u.Used != int64(len("old content")) {
		t.Errorf("Used = %d, want %d", u.Used, len("old content"))
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	put(t, s, "f", "old")
	u, err := s.Create("f")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(u, "new and longer")
	u.Abort()
	u.Abort()
	if got := get(t, s, "f"); got != "old" {
		t.Errorf("f = %q after Abort, want old", got)
	}
	if err := u.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	if _, err := u.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Errorf("left over after Abort: %v", left)
	}

	u, err = s.Create("f")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(u, "new")
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	u.Abort() // deferred Abort after Commit: a no-op
	if got := get(t, s, "f"); got != "new" {
		t.Errorf("f = %q, want new", got)
	}

	// The parent went away while uploading.
	s.Mkdir("d")
	u, _ = s.Create("d/f")
	io.WriteString(u, "x")
	s.Remove("d")
	if err := u.Commit(); !errors.Is(err, ErrNotFound) {
		t.Errorf("Commit into a removed folder: %v, want ErrNotFound", err)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Errorf("left over: %v", left)
	}
}

func TestQuota(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 1000)
	used := func(want int64) {
		t.Helper()
		u, err := s.Usage()
		if err != nil {
			t.Fatal(err)
		}
		if u.Used != want || u.Quota != 1000 || u.DiskTotal <= 0 || u.DiskFree <= 0 || u.DiskFree > u.DiskTotal {
			t.Errorf("Usage = %+v, want Used %d of 1000 and a disk", u, want)
		}
	}
	put(t, s, "a", strings.Repeat("a", 600))
	used(600)

	u, err := s.Create("b")
	if err != nil {
		t.Fatal(err)
	}
	n, err := u.ReadFrom(strings.NewReader(strings.Repeat("b", 500)))
	if !errors.Is(err, ErrQuota) || HTTPStatus(err) != http.StatusInsufficientStorage {
		t.Errorf("over quota: %d, %v; want ErrQuota", n, err)
	}
	if err := u.Commit(); !errors.Is(err, ErrQuota) {
		t.Errorf("Commit after ErrQuota: %v", err)
	}
	mustNotExist(t, filepath.Join(dir, "b"))
	if left := temps(t, dir); len(left) != 0 {
		t.Errorf("left over: %v", left)
	}
	used(600)

	// Two uploads in flight cannot both take the last 400 bytes.
	u1, _ := s.Create("c1")
	u2, _ := s.Create("c2")
	if _, err := u1.Write(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if _, err := u2.Write(make([]byte, 300)); !errors.Is(err, ErrQuota) {
		t.Errorf("second upload: %v, want ErrQuota", err)
	}
	u1.Abort()
	used(600)

	// An overwrite needs room for both copies until it commits.
	put(t, s, "a", strings.Repeat("a", 100))
	used(100)
	if err := s.Rename("a", "c"); err != nil {
		t.Fatal(err)
	}
	used(100)
	s.MkdirAll("d/e")
	put(t, s, "d/e/f", strings.Repeat("f", 200))
	put(t, s, "d/g", strings.Repeat("g", 50))
	used(350)
	if err := s.Rename("d", "c-dir"); err != nil {
		t.Fatal(err)
	}
	used(350)
	if err := s.Remove("c-dir"); err != nil {
		t.Fatal(err)
	}
	used(100)
	if err := s.Remove("c"); err != nil {
		t.Fatal(err)
	}
	used(0)

	// The count survives a reopen (it is a walk of the tree).
	put(t, s, "z", strings.Repeat("z", 999))
	s.Close()
	s = openStore(t, dir, 1000)
	used(999)
	u, err = s.Create("y")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("yy")); !errors.Is(err, ErrQuota) {
		t.Errorf("after reopen: %v, want ErrQuota", err)
	}
}

func TestConcurrentUploads(t *testing.T) {
	s := newStore(t, 0)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p := "f" + string(rune('a'+i))
			for range 20 {
				put(t, s, p, strings.Repeat(p, 1000))
			}
		})
	}
	wg.Wait()
	if u, _ := s.Usage(); u.Used != 8*2000 {
		t.Errorf("Used = %d, want %d", u.Used, 8*2000)
	}
}

type zeros struct{ n int64 }

func (z *zeros) Read(b []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), z.n))
	clear(b[:n])
	z.n -= int64(n)
	return n, nil
}

// BenchmarkUpload measures Create, io.Copy (ReadFrom) and Commit of
// 64 MiB, fsyncs included.
func BenchmarkUpload(b *testing.B) {
	const size = 64 << 20
	s := newStore(b, 0)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		u, err := s.Create("big")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(u, &zeros{size}); err != nil {
			b.Fatal(err)
		}
		if err := u.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
