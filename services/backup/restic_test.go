package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testlog"
)

// fakeRestic is a restic that says on stderr what script prints, then
// waits (as restic does between retries) until it is interrupted.
func fakeRestic(t *testing.T, script string) *Restic {
	dir := t.TempDir()
	bin := filepath.Join(dir, "restic")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Restic{Bin: bin, PasswordFile: pw, Repo: "rest:http://127.0.0.1:1/", TempDir: dir, Log: testlog.New(t, 0)}
}

// TestRetriedFullStops: restic retries a request the location refused
// as full (an S3 store's quota, or rest-server's 507 where restic does
// not take it as final) for up to 15 minutes; the run stops at the
// first such retry and says ErrFull. Another retry is waited out, and
// the caller's end of waiting names what restic was retrying.
func TestRetriedFullStops(t *testing.T) {
	r := fakeRestic(t, `echo 'Save(<data/0123>) returned error, retrying after 552ms: server response unexpected: 507 Insufficient Storage (507)' >&2`)
	start := time.Now()
	err := r.run(context.Background(), nil, "backup", "/x")
	if !errors.Is(err, ErrFull) {
		t.Fatalf("a retried full location: %v, want ErrFull", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("stopping took %v", took)
	}
	t.Log(err)

	r = fakeRestic(t, `echo 'Save(<data/0123>) returned error, retrying after 552ms: Post "http://x/": connection reset by peer' >&2`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = r.run(ctx, nil, "backup", "/x")
	if errors.Is(err, ErrFull) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection reset by peer") {
		t.Fatalf("a retried broken connection, waited out: %v", err)
	}
	t.Log(err)
}
