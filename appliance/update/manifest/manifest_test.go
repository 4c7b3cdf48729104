package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
)

const testBoard = "rpi4"

// testKey returns the release key made from a seed of n bytes, and its ID.
func testKey(tb testing.TB, n byte) (ed25519.PrivateKey, identity.ID) {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		tb.Fatal(err)
	}
	return key, id
}

// Artifact contents the test manifests describe.
var (
	rootContent = []byte("the root squashfs\n")
	bootContent = []byte("the boot partition\n")
)

func sha256Of(content []byte) string {
	sum := sha256.Sum256(content)
	return hex.EncodeToString(sum[:])
}

func describe(name string, content []byte) Artifact {
	return Artifact{File: name, Size: int64(len(content)), SHA256: sha256Of(content)}
}

// bootArtifact describes bootContent with the files it holds.
func bootArtifact() Artifact {
	a := describe("boot.img", bootContent)
	a.Files = map[string]string{
		"kernel.img":        sha256Of([]byte("kernel")),
		"overlays/pc2.dtbo": sha256Of([]byte("overlay")),
		"config.txt":        sha256Of([]byte("config")),
	}
	return a
}

// testManifest returns a valid manifest for testBoard; callers may change it.
func testManifest() *Manifest {
	return &Manifest{
		Format:     Format,
		Version:    "1.4.2",
		Board:      testBoard,
		Channel:    Stable,
		MinVersion: "1.2.0",
		Created:    time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Artifacts: map[string]Artifact{
			Root: describe("root.squashfs", rootContent),
			Boot: bootArtifact(),
		},
	}
}

// signRaw signs arbitrary bytes the way Sign does, for manifests Sign
// refuses to make.
func signRaw(key ed25519.PrivateKey, manifest []byte) []byte {
	s := ed25519.Sign(key, append([]byte(signTag), manifest...))
	return []byte(base64.StdEncoding.EncodeToString(s) + "\n")
}

// signed returns a signed testManifest changed by edit.
func signed(tb testing.TB, key ed25519.PrivateKey, edit func(*Manifest)) (manifest, sig []byte) {
	tb.Helper()
	m := testManifest()
	if edit != nil {
		edit(m)
	}
	manifest, sig, err := Sign(m, key)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return manifest, sig
}

func policy(keys ...identity.ID) Policy {
	return Policy{Keys: keys, Board: testBoard}
}

func TestSignVerify(t *testing.T) {
	key, id := testKey(t, 1)
	m := testManifest()
	manifest, sig, err := Sign(m, key)
	if err != nil {
		t.Fatal(err)
	}
	if m.Signer != id.String() {
		t.Errorf("Sign set Signer %q, want %q", m.Signer, id.String())
	}
	got, err := Verify(manifest, sig, policy(id))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Signer != id.String() {
		t.Errorf("verified Signer %q, want %q", got.Signer, id.String())
	}
	if !got.Created.Equal(m.Created) {
		t.Errorf("Created %v, want %v", got.Created, m.Created)
	}
	got.Created = m.Created // the location may differ
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(m)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("Verify returned\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}

func TestSignRefusesMalformed(t *testing.T) {
	key, _ := testKey(t, 1)
	m := testManifest()
	m.Version = "1.2"
	if _, _, err := Sign(m, key); !errors.Is(err, ErrMalformed) {
		t.Errorf("Sign of version 1.2: got %v, want ErrMalformed", err)
	}
}

func TestVerifySignature(t *testing.T) {
	key, id := testKey(t, 1)
	other, _ := testKey(t, 2)
	manifest, sig := signed(t, key, nil)
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 1
		return b
	}
	enc := func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }

	_, otherSig := signed(t, other, nil)
	for _, tc := range []struct {
		name          string
		manifest, sig []byte
		want          error
	}{
		{"empty sig", manifest, nil, ErrUnsigned},
		{"blank sig", manifest, []byte(" \n"), ErrUnsigned},
		{"untrusted key", manifest, signRaw(other, manifest), ErrBadSignature},
		{"untrusted key via Sign", manifest, otherSig, ErrBadSignature},
		{"flipped manifest bit", flip(manifest, 10), sig, ErrBadSignature},
		{"flipped last manifest bit", flip(manifest, len(manifest)-1), sig, ErrBadSignature},
		{"flipped signature bit", manifest, enc(flip(raw, 5)), ErrBadSignature},
		{"flipped signature bit in S", manifest, enc(flip(raw, 40)), ErrBadSignature},
		{"garbage base64", manifest, []byte("not base64!!\n"), ErrBadSignature},
		{"short signature", manifest, enc(raw[:ed25519.SignatureSize-1]), ErrBadSignature},
		{"long signature", manifest, enc(append(bytes.Clone(raw), 0)), ErrBadSignature},
		{"no tag", manifest, enc(ed25519.Sign(key, manifest)), ErrBadSignature},
		{"appended to manifest", append(bytes.Clone(manifest), ' '), sig, ErrBadSignature},
		{"raw signature bytes", manifest, raw, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Verify(tc.manifest, tc.sig, policy(id))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if m != nil {
				t.Errorf("got a manifest with error %v", err)
			}
		})
	}

	t.Run("no trusted keys", func(t *testing.T) {
		if _, err := Verify(manifest, sig, policy()); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("got %v, want ErrBadSignature", err)
		}
	})
	t.Run("signature without newline", func(t *testing.T) {
		if _, err := Verify(manifest, bytes.TrimSpace(sig), policy(id)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestVerifySeveralKeys(t *testing.T) {
	_, id1 := testKey(t, 1)
	key2, id2 := testKey(t, 2)
	_, id3 := testKey(t, 3)
	manifest, sig := signed(t, key2, nil)
	m, err := Verify(manifest, sig, policy(id1, id2, id3))
	if err != nil {
		t.Fatal(err)
	}
	if m.Signer != id2.String() {
		t.Errorf("Signer %q, want %q", m.Signer, id2.String())
	}
	if _, err := Verify(manifest, sig, policy(id1, id3)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("without the signer's key: got %v, want ErrBadSignature", err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	key, id := testKey(t, 1)
	edit := func(name string) func(func(*Artifact)) func(*Manifest) {
		return func(f func(*Artifact)) func(*Manifest) {
			return func(m *Manifest) {
				a := m.Artifacts[name]
				f(&a)
				m.Artifacts[name] = a
			}
		}
	}
	art, boot := edit(Root), edit(Boot)
	for _, tc := range []struct {
		name string
		edit func(*Manifest)
	}{
		{"bad format", func(m *Manifest) { m.Format = "pc2-release/2" }},
		{"no format", func(m *Manifest) { m.Format = "" }},
		{"version 1.2", func(m *Manifest) { m.Version = "1.2" }},
		{"version 01.2.3", func(m *Manifest) { m.Version = "01.2.3" }},
		{"version 1.02.3", func(m *Manifest) { m.Version = "1.02.3" }},
		{"version 1.2.3.4", func(m *Manifest) { m.Version = "1.2.3.4" }},
		{"version -1.0.0", func(m *Manifest) { m.Version = "-1.0.0" }},
		{"version -0.0.0", func(m *Manifest) { m.Version = "-0.0.0"; m.MinVersion = "0.0.0" }},
		{"version +1.4.2", func(m *Manifest) { m.Version = "+1.4.2" }},
		{"version 1.4.+2", func(m *Manifest) { m.Version = "1.4.+2" }},
		{"version 1..2", func(m *Manifest) { m.Version = "1..2" }},
		{"version with space", func(m *Manifest) { m.Version = "1.4.2 " }},
		{"version vv1.4.2", func(m *Manifest) { m.Version = "vv1.4.2" }},
		{"version too big", func(m *Manifest) { m.Version = "99999999999999999999.0.0" }},
		{"empty version", func(m *Manifest) { m.Version = "" }},
		{"bad min_version", func(m *Manifest) { m.MinVersion = "1.2" }},
		{"empty min_version", func(m *Manifest) { m.MinVersion = "" }},
		{"min_version above version", func(m *Manifest) { m.MinVersion = "1.4.3" }},
		{"no board", func(m *Manifest) { m.Board = "" }},
		{"unknown channel", func(m *Manifest) { m.Channel = "nightly" }},
		{"empty channel", func(m *Manifest) { m.Channel = "" }},
		{"no root artifact", func(m *Manifest) { delete(m.Artifacts, Root) }},
		{"no artifacts", func(m *Manifest) { m.Artifacts = nil }},
		{"unknown artifact", func(m *Manifest) { m.Artifacts["kernel"] = describe("kernel", rootContent) }},
		{"file with slash", art(func(a *Artifact) { a.File = "sub/root.squashfs" })},
		{"file with trailing slash", art(func(a *Artifact) { a.File = "root/" })},
		{"absolute file", art(func(a *Artifact) { a.File = "/root.squashfs" })},
		{"file ..", art(func(a *Artifact) { a.File = ".." })},
		{"file ../x", art(func(a *Artifact) { a.File = "../root.squashfs" })},
		{"file .", art(func(a *Artifact) { a.File = "." })},
		{"hidden file", art(func(a *Artifact) { a.File = ".root.squashfs" })},
		{"empty file", art(func(a *Artifact) { a.File = "" })},
		{"size 0", art(func(a *Artifact) { a.Size = 0 })},
		{"negative size", art(func(a *Artifact) { a.Size = -1 })},
		{"sha256 not hex", art(func(a *Artifact) { a.SHA256 = strings.Repeat("zz", sha256.Size) })},
		{"sha256 short", art(func(a *Artifact) { a.SHA256 = a.SHA256[:62] })},
		{"sha256 long", art(func(a *Artifact) { a.SHA256 += "00" })},
		{"sha256 odd", art(func(a *Artifact) { a.SHA256 += "0" })},
		{"sha256 empty", art(func(a *Artifact) { a.SHA256 = "" })},
		// Checker compares the lowercase hex, so an uppercase one could
		// never match: it is refused up front.
		{"sha256 uppercase", art(func(a *Artifact) { a.SHA256 = strings.ToUpper(a.SHA256) })},
		{"bad boot artifact", boot(func(a *Artifact) { a.Size = 0 })},
		{"boot without files", boot(func(a *Artifact) { a.Files = nil })},
		{"root with files", art(func(a *Artifact) { a.Files = map[string]string{"x": sha256Of(nil)} })},
		{"boot file ..", boot(func(a *Artifact) { a.Files[".."] = sha256Of(nil) })},
		{"boot file ../x", boot(func(a *Artifact) { a.Files["../x"] = sha256Of(nil) })},
		{"boot file /x", boot(func(a *Artifact) { a.Files["/x"] = sha256Of(nil) })},
		{"boot file a/../b", boot(func(a *Artifact) { a.Files["a/../b"] = sha256Of(nil) })},
		{"boot file ./x", boot(func(a *Artifact) { a.Files["./x"] = sha256Of(nil) })},
		{"boot file empty", boot(func(a *Artifact) { a.Files[""] = sha256Of(nil) })},
		{"boot file bad sha256", boot(func(a *Artifact) { a.Files["x"] = "00" })},
		{"boot file uppercase sha256", boot(func(a *Artifact) { a.Files["x"] = strings.ToUpper(sha256Of(nil)) })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManifest()
			tc.edit(m)
			m.Signer = id.String()
			if err := m.check(); !errors.Is(err, ErrMalformed) {
				t.Errorf("check: got %v, want ErrMalformed", err)
			}
			if _, _, err := Sign(m, key); !errors.Is(err, ErrMalformed) {
				t.Errorf("Sign: got %v, want ErrMalformed", err)
			}
			manifest, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Verify(manifest, signRaw(key, manifest), policy(id))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Verify: got %v, want ErrMalformed", err)
			}
			if got != nil {
				t.Errorf("Verify returned a manifest with error %v", err)
			}
		})
	}
}

// TestVerifyMalformedJSON checks manifests whose bytes, not fields, are wrong.
func TestVerifyMalformedJSON(t *testing.T) {
	key, id := testKey(t, 1)
	manifest, _ := signed(t, key, nil)
	var fields map[string]any
	if err := json.Unmarshal(manifest, &fields); err != nil {
		t.Fatal(err)
	}
	withField := func(k string, v any) []byte {
		f := make(map[string]any)
		for k, v := range fields {
			f[k] = v
		}
		f[k] = v
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withArtifactField := func(k string, v any) []byte {
		arts := fields["artifacts"].(map[string]any)
		root := make(map[string]any)
		for k, v := range arts[Root].(map[string]any) {
			root[k] = v
		}
		root[k] = v
		return withField("artifacts", map[string]any{Root: root, Boot: arts[Boot]})
	}
	for _, tc := range []struct {
		name     string
		manifest []byte
	}{
		{"unknown field", withField("comment", "hi")},
		{"unknown artifact field", withArtifactField("mode", 0o644)},
		{"size not a number", withArtifactField("size", "18")},
		{"fractional size", withArtifactField("size", 1.5)},
		{"version a number", withField("version", 1)},
		{"bad created", withField("created", "yesterday")},
		{"empty", []byte{}},
		{"null", []byte("null")},
		{"array", []byte("[]")},
		{"truncated", manifest[:len(manifest)/2]},
		{"trailing garbage", append(bytes.Clone(manifest), "garbage"...)},
		{"two objects", append(bytes.Clone(manifest), withField("version", "9.0.0")...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Verify(tc.manifest, signRaw(key, tc.manifest), policy(id))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
			if m != nil {
				t.Errorf("got a manifest with error %v", err)
			}
		})
	}

	// The field check must not refuse what Sign writes, nor compact JSON.
	compact := withField("format", Format)
	if _, err := Verify(compact, signRaw(key, compact), policy(id)); err != nil {
		t.Errorf("compact manifest: %v", err)
	}
}

func TestVerifyBoard(t *testing.T) {
	key, id := testKey(t, 1)
	manifest, sig := signed(t, key, nil)
	for _, board := range []string{"rpi5", "", strings.ToUpper(testBoard), testBoard + " "} {
		p := policy(id)
		p.Board = board
		if _, err := Verify(manifest, sig, p); !errors.Is(err, ErrBoard) {
			t.Errorf("device board %q: got %v, want ErrBoard", board, err)
		}
	}
}

func TestVerifyFloor(t *testing.T) {
	key, id := testKey(t, 1)
	manifest, sig := signed(t, key, func(m *Manifest) { m.Version = "1.4.2" })
	for _, tc := range []struct {
		floor string
		want  error
	}{
		{"", nil},
		{"0.0.0", nil},
		{"1.4.1", nil},
		{"1.4.2", nil},
		{"v1.4.2", nil},
		{"1.4.3", ErrDowngrade},
		{"1.5.0", ErrDowngrade},
		{"2.0.0", ErrDowngrade},
		{"1.4", ErrMalformed}, // the device's own floor is broken
	} {
		p := policy(id)
		p.Floor = tc.floor
		m, err := Verify(manifest, sig, p)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("floor %q: got %v, want %v", tc.floor, err, tc.want)
		}
		if (err == nil) != (m != nil) {
			t.Errorf("floor %q: got manifest %v with error %v", tc.floor, m, err)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"0.0.0", "0.0.0", 0},
		{"1.2.3", "1.2.3", 0},
		{"v1.2.3", "1.2.3", 0},
		{"1.2.3", "v1.2.3", 0},
		{"1.2.3", "1.2.4", -1},
		{"1.2.4", "1.2.3", 1},
		{"1.2.9", "1.3.0", -1},
		{"1.9.9", "2.0.0", -1},
		{"2.0.0", "1.99.99", 1},
		{"1.10.0", "1.9.0", 1}, // numeric, not lexical
		{"1.2.10", "1.2.2", 1},
		{"10.0.0", "9.0.0", 1},
		{"0.0.1", "0.0.0", 1},
		{"1073741824.0.0", "0.0.0", 1},
	} {
		got, err := CompareVersions(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v, want %d", tc.a, tc.b, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "1.2", "1.2.3.4", "01.2.3", "1.2.03", "-1.0.0", "-0.0.0", "+1.0.0",
		"1.2.x", "V1.2.3", "vv1.2.3", " 1.2.3", "1.2.3-rc1", "1.2.3+build", "1073741825.0.0", "1.2.٣"} {
		if _, err := CompareVersions(bad, "1.0.0"); !errors.Is(err, ErrMalformed) {
			t.Errorf("CompareVersions(%q, 1.0.0): got %v, want ErrMalformed", bad, err)
		}
		if _, err := CompareVersions("1.0.0", bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("CompareVersions(1.0.0, %q): got %v, want ErrMalformed", bad, err)
		}
	}
}

func writeBundle(tb testing.TB, manifest, sig []byte) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), manifest, 0o644); err != nil {
		tb.Fatal(err)
	}
	if sig != nil {
		if err := os.WriteFile(filepath.Join(dir, SignatureFile), sig, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func TestReadBundle(t *testing.T) {
	key, id := testKey(t, 1)
	manifest, sig := signed(t, key, nil)

	t.Run("ok", func(t *testing.T) {
		m, err := ReadBundle(writeBundle(t, manifest, sig), policy(id))
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != "1.4.2" || m.Signer != id.String() {
			t.Errorf("got version %s signer %s", m.Version, m.Signer)
		}
	})
	t.Run("no signature", func(t *testing.T) {
		if _, err := ReadBundle(writeBundle(t, manifest, nil), policy(id)); !errors.Is(err, ErrUnsigned) {
			t.Fatalf("got %v, want ErrUnsigned", err)
		}
	})
	t.Run("empty signature", func(t *testing.T) {
		if _, err := ReadBundle(writeBundle(t, manifest, []byte{}), policy(id)); !errors.Is(err, ErrUnsigned) {
			t.Fatalf("got %v, want ErrUnsigned", err)
		}
	})
	t.Run("no manifest", func(t *testing.T) {
		dir := writeBundle(t, manifest, sig)
		if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadBundle(dir, policy(id)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v, want os.ErrNotExist", err)
		}
	})
	t.Run("manifest over 64 KiB", func(t *testing.T) {
		// Signed and otherwise valid: only its size is wrong.
		big := append(bytes.Clone(manifest), bytes.Repeat([]byte(" "), MaxSize)...)
		if _, err := ReadBundle(writeBundle(t, big, signRaw(key, big)), policy(id)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	})
	t.Run("manifest of exactly 64 KiB", func(t *testing.T) {
		big := append(bytes.Clone(manifest), bytes.Repeat([]byte(" "), MaxSize-len(manifest))...)
		if _, err := ReadBundle(writeBundle(t, big, signRaw(key, big)), policy(id)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("signature over 64 KiB", func(t *testing.T) {
		bigSig := append(bytes.Clone(sig), bytes.Repeat([]byte("\n"), MaxSize)...)
		if _, err := ReadBundle(writeBundle(t, manifest, bigSig), policy(id)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	})
	t.Run("other board", func(t *testing.T) {
		p := policy(id)
		p.Board = "rpi5"
		if _, err := ReadBundle(writeBundle(t, manifest, sig), p); !errors.Is(err, ErrBoard) {
			t.Fatalf("got %v, want ErrBoard", err)
		}
	})
}

// readAll reads c to io.EOF or its first error, and returns what it read.
func readAll(c *Checker) ([]byte, error) {
	var out bytes.Buffer
	_, err := io.Copy(&out, c)
	return out.Bytes(), err
}

func TestChecker(t *testing.T) {
	m := testManifest()
	wrong := bytes.Clone(rootContent)
	wrong[0] ^= 1
	for _, tc := range []struct {
		name    string
		content []byte
		wrap    func(io.Reader) io.Reader
		ok      bool
	}{
		{"exact", rootContent, nil, true},
		{"exact one byte at a time", rootContent, iotest.OneByteReader, true},
		{"exact with EOF on the last data", rootContent, iotest.DataErrReader, true},
		{"exact half at a time", rootContent, iotest.HalfReader, true},
		{"shorter", rootContent[:len(rootContent)-1], nil, false},
		{"shorter one byte at a time", rootContent[:len(rootContent)-1], iotest.OneByteReader, false},
		{"empty", nil, nil, false},
		{"longer", append(bytes.Clone(rootContent), 'x'), nil, false},
		{"longer one byte at a time", append(bytes.Clone(rootContent), 'x'), iotest.OneByteReader, false},
		{"same size, wrong content", wrong, nil, false},
		{"same size, wrong content, one byte at a time", wrong, iotest.OneByteReader, false},
		{"same size, wrong content, EOF on the last data", wrong, iotest.DataErrReader, false},
		{"other artifact", bootContent, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tc.content)
			if tc.wrap != nil {
				r = tc.wrap(r)
			}
			c, err := Check(r, m, Root)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(c)
			if tc.ok {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if !bytes.Equal(got, rootContent) {
					t.Errorf("read %q, want %q", got, rootContent)
				}
				return
			}
			if !errors.Is(err, ErrArtifact) {
				t.Fatalf("got %v, want ErrArtifact", err)
			}
		})
	}

	t.Run("iotest.TestReader", func(t *testing.T) {
		c, err := Check(bytes.NewReader(rootContent), m, Root)
		if err != nil {
			t.Fatal(err)
		}
		if err := iotest.TestReader(c, rootContent); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the error stays", func(t *testing.T) {
		c, err := Check(bytes.NewReader(wrong), m, Root)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readAll(c); !errors.Is(err, ErrArtifact) {
			t.Fatalf("got %v, want ErrArtifact", err)
		}
		if _, err := c.Read(make([]byte, 8)); !errors.Is(err, ErrArtifact) {
			t.Fatalf("read after the error: got %v, want ErrArtifact", err)
		}
	})
}

// endless yields 'x' forever: a stream that is too long never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// TestCheckerLongerEarly checks that an oversized artifact is refused as
// soon as its first extra byte arrives, not at io.EOF.
func TestCheckerLongerEarly(t *testing.T) {
	m := testManifest()
	size := m.Artifacts[Root].Size
	for _, tc := range []struct {
		name string
		wrap func(io.Reader) io.Reader
		buf  int
	}{
		{"big reads", nil, 4096},
		{"exact-size reads", nil, int(size)},
		{"one byte at a time", iotest.OneByteReader, 4096},
		{"one-byte buffer", nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = io.MultiReader(bytes.NewReader(rootContent), endless{})
			if tc.wrap != nil {
				r = tc.wrap(r)
			}
			c, err := Check(r, m, Root)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, tc.buf)
			var total int64
			for total <= size+1 {
				n, err := c.Read(buf)
				total += int64(n)
				if err != nil {
					if !errors.Is(err, ErrArtifact) {
						t.Fatalf("after %d bytes: got %v, want ErrArtifact", total, err)
					}
					if total > size+1 {
						t.Errorf("passed on %d bytes before the error, want at most %d", total, size+1)
					}
					return
				}
			}
			t.Fatalf("read %d bytes of a %d-byte artifact without an error", total, size)
		})
	}
}

func TestCheckerHugeSize(t *testing.T) {
	// A (signed) manifest may claim any positive size; the Checker must
	// not overflow on it.
	m := testManifest()
	a := m.Artifacts[Root]
	a.Size = math.MaxInt64
	m.Artifacts[Root] = a
	if err := m.check(); err != nil {
		t.Fatal(err)
	}
	c, err := Check(bytes.NewReader(rootContent), m, Root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(c); !errors.Is(err, ErrArtifact) {
		t.Fatalf("got %v, want ErrArtifact", err)
	}
}

func TestCheckUnknownArtifact(t *testing.T) {
	m := testManifest()
	delete(m.Artifacts, Boot)
	for _, name := range []string{Boot, "kernel", ""} {
		c, err := Check(bytes.NewReader(bootContent), m, name)
		if !errors.Is(err, ErrArtifact) {
			t.Errorf("Check(%q): got %v, want ErrArtifact", name, err)
		}
		if c != nil {
			t.Errorf("Check(%q) returned a Checker with error %v", name, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "root.squashfs")
	if err := os.WriteFile(path, rootContent, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Describe(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := describe("root.squashfs", rootContent); !reflect.DeepEqual(got, want) {
		t.Errorf("Describe = %+v, want %+v", got, want)
	}

	// What Describe says is what Check accepts.
	m := testManifest()
	m.Artifacts[Root] = got
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := Check(f, m, Root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(c); err != nil {
		t.Errorf("checking the described file: %v", err)
	}

	if _, err := Describe(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want os.ErrNotExist", err)
	}
}

func TestParseKeys(t *testing.T) {
	_, id1 := testKey(t, 1)
	_, id2 := testKey(t, 2)
	_, id3 := testKey(t, 3)
	file := "# PC2 release keys\n" +
		"\n" +
		id1.String() + "\n" +
		"  # the backup key, as a DID\n" +
		"\t" + id2.DID() + "  \r\n" +
		"   \n" +
		id3.String() // no final newline
	got, err := ParseKeys([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []identity.ID{id1, id2, id3}
	if len(got) != len(want) {
		t.Fatalf("got %d keys, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("key %d = %s, want %s", i, got[i], want[i])
		}
	}

	for _, tc := range []struct {
		file, line string
	}{
		{id1.String() + "\nnot-a-key\n", "line 2"},
		{"# c\n\n\n" + id1.DID() + "x\n", "line 4"},
		{"did:key:" + id1.String(), "line 1"},
		{id1.String() + " " + id2.String() + "\n", "line 1"},         // one key per line
		{id1.String()[:5] + "0" + id1.String()[6:] + "\n", "line 1"}, // 0 is not Base58
	} {
		_, err := ParseKeys([]byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.line+":") {
			t.Errorf("ParseKeys(%q): got %v, want an error naming %s", tc.file, err, tc.line)
		}
		if !errors.Is(err, identity.ErrBadDID) {
			t.Errorf("ParseKeys(%q): error %v does not wrap identity.ErrBadDID", tc.file, err)
		}
	}

	for _, empty := range []string{"", "\n", "# only a comment\n"} {
		if got, err := ParseKeys([]byte(empty)); err != nil || len(got) != 0 {
			t.Errorf("ParseKeys(%q) = %v, %v, want no keys", empty, got, err)
		}
	}
}

// FuzzVerify feeds Verify untrusted bytes. The signature gate hides the
// parser from most inputs, so each input is also checked with a valid
// signature over it.
func FuzzVerify(f *testing.F) {
	key, id := testKey(f, 1)
	manifest, sig := signed(f, key, nil)
	f.Add(manifest, sig)
	f.Add(manifest, []byte{})
	f.Add([]byte{}, sig)
	p := policy(id)
	p.Floor = "1.0.0"
	f.Fuzz(func(t *testing.T, manifest, sig []byte) {
		for _, sig := range [][]byte{sig, signRaw(key, manifest)} {
			m, err := Verify(manifest, sig, p)
			if err != nil {
				if m != nil {
					t.Fatalf("Verify returned a manifest with error %v", err)
				}
				for _, want := range []error{ErrUnsigned, ErrBadSignature, ErrMalformed, ErrBoard, ErrDowngrade} {
					if errors.Is(err, want) {
						return
					}
				}
				t.Fatalf("Verify error %v wraps none of the package's errors", err)
			}
			if err := m.check(); err != nil {
				t.Fatalf("Verify accepted a manifest that does not check: %v\n%s", err, manifest)
			}
			if m.Board != p.Board {
				t.Fatalf("Verify accepted board %q, want %q", m.Board, p.Board)
			}
			if c, err := CompareVersions(m.Version, p.Floor); err != nil || c < 0 {
				t.Fatalf("Verify accepted version %s under floor %s (%v)", m.Version, p.Floor, err)
			}
			// What Verify accepts, Sign can write again.
			again, againSig, err := Sign(m, key)
			if err != nil {
				t.Fatalf("Sign of a verified manifest: %v", err)
			}
			if _, err := Verify(again, againSig, p); err != nil {
				t.Fatalf("re-signed manifest: %v\n%s", err, again)
			}
		}
	})
}

// TestUnverifiedVersion reads what a manifest claims without trusting it.
func TestUnverifiedVersion(t *testing.T) {
	key, _ := testKey(t, 1)
	manifest, _ := signed(t, key, nil)
	for in, want := range map[string]string{
		string(manifest):                                "1.4.2",
		`{"version":"not checked"}`:                     "not checked",
		`{"version":"` + strings.Repeat("9", 33) + `"}`: "",
		`{"version":1}`:                                 "",
		"not json":                                      "",
		"":                                              "",
	} {
		if got := UnverifiedVersion([]byte(in)); got != want {
			t.Errorf("UnverifiedVersion(%.40q) = %q, want %q", in, got, want)
		}
	}
}
