package turn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	pionturn "github.com/pion/turn/v4"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// testTimeout bounds every network wait in these tests. It is generous:
// loopback answers in microseconds, but CI machines are shared.
const testTimeout = 20 * time.Second

func testContext(t testing.TB) context.Context { return testenv.Context(t, testTimeout) }

// fakeClock is an injectable Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// logRecorder is a slog.Handler that sends records to t.Log and keeps them
// for assertions. It stops forwarding when the test ends, since pion's
// goroutines may still log while they wind down.
type logRecorder struct {
	mu    sync.Mutex
	t     testing.TB
	done  bool
	lines []string
}

func newLogRecorder(t testing.TB) *logRecorder {
	r := &logRecorder{t: t}
	t.Cleanup(func() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
	})
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrHandler{r: r, attrs: attrs}
}
func (r *logRecorder) WithGroup(string) slog.Handler { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	return r.record(rec, nil)
}

func (r *logRecorder) record(rec slog.Record, extra []slog.Attr) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	for _, a := range extra {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		return true
	})
	line := b.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	if !r.done && rec.Level > slog.LevelDebug {
		r.t.Log(line)
	}
	return nil
}

// find returns the recorded lines that contain every one of parts.
func (r *logRecorder) find(parts ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
next:
	for _, l := range r.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

func (r *logRecorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

type attrHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (h *attrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *attrHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}
func (h *attrHandler) WithGroup(string) slog.Handler { return h }
func (h *attrHandler) Handle(_ context.Context, rec slog.Record) error {
	return h.r.record(rec, h.attrs)
}

// testServer is a Server on loopback, UDP and TCP, port 0.
type testServer struct {
	*Server
	udpAddr *net.UDPAddr
	tcpAddr *net.TCPAddr
	clock   *fakeClock
	logs    *logRecorder
}

// newTestServer starts a server on 127.0.0.1 that allows loopback peers;
// edit may change the Config before New.
func newTestServer(t testing.TB, edit func(*Config)) *testServer {
	t.Helper()
	logs := newLogRecorder(t)
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		udp.Close()
		t.Fatal(err)
	}
	clock := newFakeClock()
	cfg := Config{
		Realm:       "pc2.test",
		Secret:      []byte("test secret"),
		UDP:         udp,
		TCP:         tcp,
		RelayListen: "127.0.0.1",
		AllowPeer:   func(netip.Addr) bool { return true },
		Logger:      slog.New(logs),
		Now:         clock.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		udp.Close()
		tcp.Close()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testServer{
		Server:  s,
		udpAddr: udp.LocalAddr().(*net.UDPAddr),
		tcpAddr: tcp.Addr().(*net.TCPAddr),
		clock:   clock,
		logs:    logs,
	}
}

// listenUDP opens a loopback UDP socket closed at the end of the test.
func listenUDP(t testing.TB) net.PacketConn { t.Helper(); return testenv.ListenUDP(t) }

// dialTCP connects to the server's TCP listener and returns a PacketConn
// that frames STUN over it, as TURN-over-TCP clients do.
func dialTCP(t testing.TB, addr *net.TCPAddr) net.PacketConn {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return pionturn.NewSTUNConn(c)
}

// turnClient is a pion TURN client over conn.
func turnClient(t testing.TB, conn net.PacketConn, server net.Addr, cred Credentials) *pionturn.Client {
	t.Helper()
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Conn:           conn,
		Username:       cred.Username,
		Password:       cred.Password,
		LoggerFactory:  pionLoggerFactory{slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if err := c.Listen(); err != nil {
		t.Fatalf("client Listen: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// turnCode is the STUN error code in err, or 0.
func turnCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tv stun.TurnError
	if errors.As(err, &tv) {
		return int(tv.ErrorCodeAttr.Code)
	}
	return 0
}

// rawAllocate sends an Allocate request by hand, so that a test controls
// every attribute (the realm in particular, which pion's client takes
// from the server). An empty realm uses the one the server announces. It
// returns 0 for a success response, else the error code.
func rawAllocate(t testing.TB, conn net.PacketConn, server net.Addr, username, realm, password string) int {
	t.Helper()
	code, err := tryRawAllocate(conn, server, username, realm, password)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// tryRawAllocate is rawAllocate for any goroutine.
func tryRawAllocate(conn net.PacketConn, server net.Addr, username, realm, password string) (int, error) {
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	first := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport, stun.Fingerprint)
	res, err := roundTrip(conn, server, first)
	if err != nil {
		return 0, err
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(res); err != nil || code.Code != stun.CodeUnauthorized {
		return 0, fmt.Errorf("unauthenticated Allocate: got %v, want 401", res)
	}
	var nonce stun.Nonce
	var srvRealm stun.Realm
	if err := nonce.GetFrom(res); err != nil {
		return 0, fmt.Errorf("401 without NONCE: %w", err)
	}
	if err := srvRealm.GetFrom(res); err != nil {
		return 0, fmt.Errorf("401 without REALM: %w", err)
	}
	if realm == "" {
		realm = srvRealm.String()
	}
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport,
		stun.NewUsername(username), stun.NewRealm(realm), nonce,
		stun.NewLongTermIntegrity(username, realm, password), stun.Fingerprint)
	if res, err = roundTrip(conn, server, req); err != nil {
		return 0, err
	}
	if res.Type.Class == stun.ClassSuccessResponse {
		return 0, nil
	}
	if err := code.GetFrom(res); err != nil {
		return 0, fmt.Errorf("allocate error response without code: %v", res)
	}
	return int(code.Code), nil
}

// roundTrip sends req until the response with its transaction ID arrives.
func roundTrip(conn net.PacketConn, server net.Addr, req *stun.Message) (*stun.Message, error) {
	defer conn.SetReadDeadline(time.Time{})
	deadline := time.Now().Add(testTimeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := conn.WriteTo(req.Raw, server); err != nil {
			return nil, fmt.Errorf("send %v: %w", req.Type, err)
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return nil, fmt.Errorf("read %v response: %w", req.Type, err)
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == req.TransactionID {
				return res, nil
			}
		}
	}
	return nil, fmt.Errorf("no response to %v within %v", req.Type, testTimeout)
}
