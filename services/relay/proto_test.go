package relay

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

func TestMessageFraming(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMessage(&b, &Message{Type: TypePing}); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadMessage(&b); err != nil || m.Type != TypePing {
		t.Fatalf("%+v %v", m, err)
	}
	if err := WriteMessage(&b, &Message{Type: TypeAttach, TCP: []string{strings.Repeat("x", MaxMessage)}}); err == nil {
		t.Fatal("oversized message written")
	}
}

// TestVerifyAttach: an attach verifies against the challenge it answers
// and no other: another relay, another nonce, a changed field or another
// key fail.
func TestVerifyAttach(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	ch := &Message{Type: TypeChallenge, Nonce: nonce, Relay: "did:boson:relay"}
	m := SignAttach(key, ch, "did:boson:node", time.Unix(1700000000, 0), []string{"ssh"})
	if !VerifyAttach(pub, "did:boson:relay", nonce, m) {
		t.Fatal("a signed attach does not verify")
	}
	changed := *m
	changed.TCP = []string{"ssh", "smtp"}
	for name, ok := range map[string]bool{
		"another relay": VerifyAttach(pub, "did:boson:other", nonce, m),
		"another nonce": VerifyAttach(pub, "did:boson:relay", []byte("another nonce"), m),
		"changed field": VerifyAttach(pub, "did:boson:relay", nonce, &changed),
		"another key":   VerifyAttach(otherPub, "did:boson:relay", nonce, m),
	} {
		if ok {
			t.Errorf("%s: verifies, want refused", name)
		}
	}
}

// frame is b with its length prefix.
func frame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// FuzzReadMessage: control frames come from any peer that opens a
// stream. Whatever ReadMessage accepts must be one frame of a size it
// allows, holding a typed message that writes and reads back the same.
func FuzzReadMessage(f *testing.F) {
	var b bytes.Buffer
	_, key, _ := ed25519.GenerateKey(nil)
	for _, m := range []*Message{
		{Type: TypePing},
		{Type: TypeChallenge, Nonce: []byte("0123456789abcdef0123456789abcdef"), Relay: "did:boson:relay"},
		SignAttach(key, &Message{Nonce: []byte("nonce"), Relay: "did:boson:relay"}, "did:boson:node", time.Unix(1700000000, 0), []string{"ssh", "echo"}),
		{Type: TypeAttached, Ports: map[string]int{"ssh": 20001}, KeepAlive: 5000, Limits: &DefaultLimits,
			TURN: &TURNInfo{Username: "1700000000:did:boson:node", Password: "p", Expires: 1700000000, URIs: []string{"stun:192.0.2.1:3478"}}},
		{Type: TypeDialBackResult, Addr: "/ip4/192.0.2.1/tcp/8090", OK: true},
		{Type: TypeForward, DID: "did:boson:node"},
		{Type: TypeRefused, Error: "relay: node not attached"},
	} {
		b.Reset()
		if err := WriteMessage(&b, m); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(b.Bytes()))
	}
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff})
	f.Add(frame([]byte(`{}`)))
	f.Add(frame([]byte(`{"type":"ping","tcp":[],"nonce":"","ports":{}}`)))
	f.Add(frame(bytes.Repeat([]byte{' '}, MaxMessage+1)))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		m, err := ReadMessage(r)
		if len(in) >= 2 {
			if n := binary.BigEndian.Uint16(in); (n == 0 || n > MaxMessage) && err == nil {
				t.Fatalf("accepted a frame of %d bytes (max %d)", n, MaxMessage)
			}
		}
		if err != nil {
			return
		}
		if m.Type == "" {
			t.Fatal("accepted a message without type")
		}
		if used := len(in) - r.Len(); used != 2+int(binary.BigEndian.Uint16(in)) {
			t.Fatalf("read %d bytes for a frame of %d", used, binary.BigEndian.Uint16(in))
		}
		// Decoding normalises (key case, empty slices, invalid UTF-8,
		// escapes); the normal form must then be a fixed point. It may
		// outgrow a frame (escaping), which WriteMessage refuses.
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", m, err)
		}
		var out bytes.Buffer
		if err := WriteMessage(&out, m); err != nil {
			if len(enc) > MaxMessage {
				return
			}
			t.Fatalf("accepted %+v is not written: %v", m, err)
		}
		m2, err := ReadMessage(&out)
		if err != nil {
			t.Fatalf("written %q does not read back: %v", enc, err)
		}
		if enc2, _ := json.Marshal(m2); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the message:\n%s\n%s", enc, enc2)
		}
	})
}

// A stream refused for a resource limit, here or at the other end, is a
// busy node, not an offline one.
func TestAsBusy(t *testing.T) {
	for _, c := range []struct {
		err  error
		busy bool
	}{
		{fmt.Errorf("open: %w", network.ErrResourceLimitExceeded), true},
		{&network.StreamError{ErrorCode: network.StreamResourceLimitExceeded, Remote: true}, true},
		{&network.StreamError{ErrorCode: network.StreamProtocolNegotiationFailed, Remote: true}, false},
		{errors.New("connection refused"), false},
	} {
		if got := errors.Is(AsBusy(c.err), ErrBusy); got != c.busy {
			t.Errorf("AsBusy(%v) busy %v, want %v", c.err, got, c.busy)
		}
	}
	if AsBusy(nil) != nil {
		t.Error("AsBusy(nil) is not nil")
	}
}

// spliceCopy copies every byte whatever the reads' sizes: bulk (its
// buffer grows), then small ones (it shrinks), then bulk again.
func TestSpliceCopy(t *testing.T) {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var src bytes.Buffer
	sizes := []int{1 << 20, 100, 3, 64 << 10, 1 << 20}
	var chunks [][]byte
	rest := data
	for i := 0; len(rest) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(rest))
		chunks = append(chunks, rest[:n])
		rest = rest[n:]
	}
	r := &chunkReader{chunks: chunks}
	spliceCopy(&src, r)
	if !bytes.Equal(src.Bytes(), data) {
		t.Fatalf("copied %d bytes, not the %d given", src.Len(), len(data))
	}
}

// chunkReader returns its chunks one per Read (at most len(p) of each).
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}
