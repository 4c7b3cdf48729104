package backup

import (
	"encoding/hex"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestLocationCheck(t *testing.T) {
	for _, tc := range []struct {
		loc  Location
		want string // "" = valid
	}{
		{Location{Kind: KindREST, URL: "http://127.0.0.1:8000/"}, ""},
		{Location{Kind: KindREST, URL: "https://u:p@backup.example/alice/"}, ""},
		{Location{Kind: KindS3, URL: "https://s3.example/bucket/prefix", AccessKey: "a", SecretKey: "s"}, ""},
		{Location{Kind: KindNode, Node: "did:boson:x"}, ""},
		{Location{}, "kind is required"},
		{Location{Kind: "ftp", URL: "ftp://x/"}, `kind "ftp"`},
		{Location{Kind: KindREST, URL: "ftp://x/"}, "want http"},
		{Location{Kind: KindREST, URL: "http:///x"}, "no host"},
		{Location{Kind: KindREST, URL: "http://h/?a=b"}, "no query"},
		{Location{Kind: KindS3, URL: "https://s3.example/", AccessKey: "a", SecretKey: "s"}, "names no bucket"},
		{Location{Kind: KindS3, URL: "https://s3.example/b"}, "needs access_key"},
		{Location{Kind: KindS3, URL: "https://a:b@s3.example/b", AccessKey: "a", SecretKey: "s"}, "not the url"},
		{Location{Kind: KindNode}, "needs its DID"},
		{Location{Kind: KindREST, URL: "http://h/" + strings.Repeat("a", MaxLocationSize)}, "at most"},
	} {
		err := tc.loc.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%+v) = %v, want %q", tc.loc, err, tc.want)
		}
	}
}

func TestLocationStringHidesSecrets(t *testing.T) {
	l := Location{Kind: KindREST, URL: "https://alice:hunter2@backup.example/alice/"}
	if s := l.String(); strings.Contains(s, "hunter2") {
		t.Errorf("String() = %q shows the password", s)
	}
	l = Location{Kind: KindS3, URL: "https://s3.example/b", AccessKey: "AK", SecretKey: "SK-secret"}
	if s := l.String(); strings.Contains(s, "SK-secret") || strings.Contains(s, "AK") {
		t.Errorf("String() = %q shows a key", s)
	}
}

func TestSealOpen(t *testing.T) {
	l := Location{Kind: KindS3, URL: "https://s3.example/bucket", AccessKey: "AK", SecretKey: "SK"}
	sealed, err := Seal(l, "password-a")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "SK") || strings.Contains(string(sealed), "s3.example") {
		t.Fatal("the sealed location shows its contents")
	}
	got, err := Open(sealed, "password-a")
	if err != nil || got != l {
		t.Fatalf("Open = %+v, %v; want %+v", got, err, l)
	}
	if _, err := Open(sealed, "password-b"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("Open with another password: %v, want ErrWrongPassword", err)
	}
	bad := append([]byte(nil), sealed...)
	bad[len(bad)-1] ^= 1
	if _, err := Open(bad, "password-a"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("Open of a tampered location: %v, want ErrWrongPassword", err)
	}
	for _, n := range []int{0, 10, MaxLocationSize + 100} {
		if _, err := Open(make([]byte, n), "password-a"); err == nil {
			t.Errorf("Open of %d bytes: no error", n)
		}
	}
	if _, err := Seal(l, ""); err == nil {
		t.Error("Seal without a password: no error")
	}
	// Two seals of one location differ (random nonce).
	again, _ := Seal(l, "password-a")
	if string(again) == string(sealed) {
		t.Error("two seals are equal")
	}
}

func TestResticError(t *testing.T) {
	exit := func(code int) error {
		err := exec.Command("sh", "-c", "exit "+string(rune('0'+code/10))+string(rune('0'+code%10))).Run()
		if err == nil {
			t.Fatal("sh exited 0")
		}
		return err
	}
	for _, tc := range []struct {
		code   int
		stderr string
		is     error
		msg    string
	}{
		{10, `{"message_type":"exit_error","code":10,"message":"Fatal: repository does not exist"}`, ErrNoRepository, ""},
		{12, "", ErrWrongPassword, ""},
		{11, "", ErrLocked, ""},
		{1, "some line\n{\"message_type\":\"exit_error\",\"code\":1,\"message\":\"Fatal: unable to save snapshot: no space left\"}\n", nil, "no space left"},
		{1, "Fatal: first\nFatal: second\n", nil, "Fatal: second"},
	} {
		err := resticError("backup", exit(tc.code), []byte(tc.stderr))
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("exit %d: %v, want %v", tc.code, err, tc.is)
		}
		if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("exit %d: %q, want it to say %q", tc.code, err, tc.msg)
		}
	}
}

func TestFolderPath(t *testing.T) {
	snap := Snapshot{Tags: []string{"other", folderTag("cloud", "/perm/pc2/cloud"), folderTag("cloudy", "/x")}}
	if p, ok := FolderPath(snap, "cloud"); !ok || p != "/perm/pc2/cloud" {
		t.Errorf("FolderPath = %q, %v", p, ok)
	}
	if _, ok := FolderPath(snap, "settings"); ok {
		t.Error("FolderPath found a folder that is not there")
	}
}

// TestSealKeyVector pins the derivation of the sealing key (docs/identity.md),
// cross-checked with Python's hmac: HKDF-SHA256, no salt, info
// "pc2/backup-location/v1", of the backup password of abandon x23 art.
func TestSealKeyVector(t *testing.T) {
	key, err := sealKey("7d4fd76624c9fd3530afeb41eecae6f7e3eff0a5333549caa5f945ba009dbcf4")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(key), "afe4c32813d95f3b3e6c112044ff046c79ad63d9d336347b4f651053a0a340d5"; got != want {
		t.Errorf("seal key = %s, want %s", got, want)
	}
}
