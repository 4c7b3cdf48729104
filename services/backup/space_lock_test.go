package backup

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
)

// TestUploadWaitLeaves: an upload waiting for its friend's upload lock
// (one upload at a time per friend) leaves the wait when its client gives
// up, instead of waiting for the lock and then reading a dead request.
func TestUploadWaitLeaves(t *testing.T) {
	space, err := OpenSpace(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	id, err := identity.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := space.SetFriend(id.DID(), "", MinFriendQuota); err != nil {
		t.Fatal(err)
	}
	l := space.uploadLock(id)
	l <- struct{}{} // another upload of the friend's is running
	ctx, cancel := context.WithCancel(WithPeer(context.Background(), id))
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/data/"+strings.Repeat("ab", 32), strings.NewReader("x"))
	done := make(chan struct{})
	go func() {
		space.ServeHTTP(httptest.NewRecorder(), req)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("an upload went ahead while another held the lock")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("an upload whose client gave up still waits for the lock")
	}
	if len(l) != 1 {
		t.Fatal("the upload that left took the lock")
	}
}
