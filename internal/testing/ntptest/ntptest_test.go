package ntptest

import (
	"net"
	"testing"
	"time"

	"github.com/beevik/ntp"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// TestQuery asks the server with the NTP client gokrazy's NTP service
// uses, which checks the answer (origin, stratum, root distance).
func TestQuery(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2030, 5, 6, 7, 8, 9, 500_000_000, time.UTC)
	s := Start(conn, func() time.Time { return want })
	defer s.Close()
	r, err := ntp.QueryWithOptions("127.0.0.1", ntp.QueryOptions{Port: s.Addr().(*net.UDPAddr).Port, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("answer not valid: %v", err)
	}
	if d := r.Time.Sub(want); d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("server time %v, want %v", r.Time, want)
	}
	if r.Stratum != 1 {
		t.Fatalf("stratum %d", r.Stratum)
	}
	// The server counts an answer once its write returned, which may be
	// after the client has read it.
	testenv.WaitFor(t, 5*time.Second, "one answer counted", func() bool { return s.Answered.Load() == 1 })
	// A server's own answer (mode 4) and a short packet get nothing.
	for _, req := range [][]byte{make([]byte, 10), append([]byte{4<<3 | 4}, make([]byte, 47)...)} {
		if _, ok := answer(req, want, time.Now); ok {
			t.Errorf("answered %x", req[:1])
		}
	}
}
