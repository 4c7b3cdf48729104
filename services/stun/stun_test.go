package stun

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pionstun "github.com/pion/stun/v3"

	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/services/turn"
)

// testTimeout bounds every network wait in these tests. It is generous:
// loopback answers in microseconds, but CI machines are shared.
const testTimeout = 20 * time.Second

func testContext(t testing.TB) context.Context { return testenv.Context(t, testTimeout) }

// listenUDP opens a loopback UDP socket closed at the end of the test.
func listenUDP(t testing.TB) net.PacketConn { t.Helper(); return testenv.ListenUDP(t) }

// newTURNServer starts the supernode's STUN/TURN server (services/turn)
// on loopback and returns its UDP address.
func newTURNServer(t testing.TB) net.Addr {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := turn.New(turn.Config{UDP: udp})
	if err != nil {
		udp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return udp.LocalAddr()
}

// Against our server on loopback, the reflexive address is the client's
// own address (there is no NAT in between).
func TestReflexive(t *testing.T) {
	server := newTURNServer(t)
	conn := listenUDP(t)
	got, err := Reflexive(testContext(t), conn, server)
	if err != nil {
		t.Fatalf("Reflexive: %v", err)
	}
	if want := conn.LocalAddr().(*net.UDPAddr).AddrPort(); got != want {
		t.Errorf("Reflexive: got %v, want %v", got, want)
	}
	// The read deadline is cleared again.
	conn.WriteTo([]byte("x"), conn.LocalAddr())
	buf := make([]byte, 10)
	if _, _, err := conn.ReadFrom(buf); err != nil {
		t.Errorf("read after Reflexive: %v", err)
	}
}

// Over a dual-stack socket the answer is unmapped to plain IPv4.
func TestReflexiveDualStack(t *testing.T) {
	server := newTURNServer(t)
	conn, err := net.ListenPacket("udp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack UDP socket: %v", err)
	}
	defer conn.Close()
	got, err := Reflexive(testContext(t), conn, server)
	if err != nil {
		t.Fatalf("Reflexive: %v", err)
	}
	if !got.Addr().Is4() || got.Addr() != netip.MustParseAddr("127.0.0.1") || got.Port() != uint16(conn.LocalAddr().(*net.UDPAddr).Port) {
		t.Errorf("Reflexive: got %v, want 127.0.0.1:%d", got, conn.LocalAddr().(*net.UDPAddr).Port)
	}
}

// fakeSTUN answers Binding requests through respond, which sees the
// request number (1-based) and returns the packets to send back.
func fakeSTUN(t *testing.T, respond func(n int, req *pionstun.Message, from net.Addr) [][]byte) (net.Addr, *atomic.Int32) {
	t.Helper()
	conn := listenUDP(t)
	var count atomic.Int32
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &pionstun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			for _, p := range respond(int(count.Add(1)), req, from) {
				conn.WriteTo(p, from)
			}
		}
	}()
	return conn.LocalAddr(), &count
}

func bindingSuccess(tid [pionstun.TransactionIDSize]byte, addr netip.AddrPort) []byte {
	m := pionstun.MustBuild(pionstun.NewTransactionIDSetter(tid), pionstun.BindingSuccess,
		&pionstun.XORMappedAddress{IP: addr.Addr().AsSlice(), Port: int(addr.Port())}, pionstun.Fingerprint)
	return m.Raw
}

// Lost requests are retransmitted; packets that are not the answer are
// ignored.
func TestReflexiveRetransmitsAndIgnoresNoise(t *testing.T) {
	want := netip.MustParseAddrPort("203.0.113.9:4242")
	server, count := fakeSTUN(t, func(n int, req *pionstun.Message, _ net.Addr) [][]byte {
		if n == 1 {
			return nil // lost
		}
		other := req.TransactionID
		other[0] ^= 0xff
		return [][]byte{
			[]byte("not stun at all"),
			bindingSuccess(other, netip.MustParseAddrPort("198.51.100.1:1")), // another transaction
			pionstun.MustBuild(pionstun.NewTransactionIDSetter(req.TransactionID), pionstun.NewType(pionstun.MethodAllocate, pionstun.ClassSuccessResponse)).Raw,
			req.Raw, // the request echoed: not a response
			bindingSuccess(req.TransactionID, want),
		}
	})
	got, err := Reflexive(testContext(t), listenUDP(t), server)
	if err != nil {
		t.Fatalf("Reflexive: %v", err)
	}
	if got != want {
		t.Errorf("Reflexive: got %v, want %v", got, want)
	}
	if n := count.Load(); n != 2 {
		t.Errorf("server saw %d requests, want 2", n)
	}
}

func TestReflexiveErrorResponse(t *testing.T) {
	server, _ := fakeSTUN(t, func(_ int, req *pionstun.Message, _ net.Addr) [][]byte {
		m := pionstun.MustBuild(pionstun.NewTransactionIDSetter(req.TransactionID), pionstun.BindingError,
			pionstun.CodeServerError)
		return [][]byte{m.Raw}
	})
	_, err := Reflexive(testContext(t), listenUDP(t), server)
	if err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Reflexive: got %v, want an error with code 500", err)
	}
}

// A silent server: Reflexive gives up when ctx ends, promptly, and says
// so.
func TestReflexiveContext(t *testing.T) {
	server, count := fakeSTUN(t, func(int, *pionstun.Message, net.Addr) [][]byte { return nil })
	conn := listenUDP(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Reflexive(ctx, conn, server)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reflexive: got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > testTimeout/2 {
		t.Errorf("Reflexive took %v with a 2 s deadline", d)
	}
	// Sent at 0, 0.5 s and 1.5 s: at least the retransmission arrived.
	testenv.WaitFor(t, testTimeout, "the retransmission", func() bool { return count.Load() >= 2 })

	// Already canceled.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := Reflexive(ctx, conn, server); !errors.Is(err, context.Canceled) {
		t.Errorf("Reflexive with a canceled context: got %v, want context.Canceled", err)
	}

	// Cancellation while blocked in a read.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := Reflexive(ctx, conn, server); !errors.Is(err, context.Canceled) {
		t.Errorf("Reflexive after cancel: got %v, want context.Canceled", err)
	}
	// The cancellation left no deadline behind.
	conn.WriteTo([]byte("x"), conn.LocalAddr())
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read after a canceled Reflexive: %v", err)
		}
		if string(buf[:n]) == "x" {
			break
		}
	}
}

func TestParseBindingResponse(t *testing.T) {
	tid := pionstun.NewTransactionID()
	for _, tc := range []struct {
		name    string
		msg     []byte
		wantOK  bool
		wantErr bool
		want    netip.AddrPort
	}{
		{"xor-mapped", bindingSuccess(tid, netip.MustParseAddrPort("192.0.2.1:3478")), true, false, netip.MustParseAddrPort("192.0.2.1:3478")},
		{"IPv6", bindingSuccess(tid, netip.MustParseAddrPort("[2001:db8::1]:9")), true, false, netip.MustParseAddrPort("[2001:db8::1]:9")},
		{"mapped only (RFC 3489)", pionstun.MustBuild(pionstun.NewTransactionIDSetter(tid), pionstun.BindingSuccess,
			&pionstun.MappedAddress{IP: net.IPv4(192, 0, 2, 2), Port: 7}).Raw, true, false, netip.MustParseAddrPort("192.0.2.2:7")},
		{"no address", pionstun.MustBuild(pionstun.NewTransactionIDSetter(tid), pionstun.BindingSuccess).Raw, true, true, netip.AddrPort{}},
		{"port zero", bindingSuccess(tid, netip.MustParseAddrPort("192.0.2.1:0")), true, true, netip.AddrPort{}},
		{"error without code", pionstun.MustBuild(pionstun.NewTransactionIDSetter(tid), pionstun.BindingError).Raw, true, true, netip.AddrPort{}},
		{"other transaction", bindingSuccess(pionstun.NewTransactionID(), netip.MustParseAddrPort("192.0.2.1:1")), false, false, netip.AddrPort{}},
		{"garbage", []byte("hello"), false, false, netip.AddrPort{}},
		{"truncated", bindingSuccess(tid, netip.MustParseAddrPort("192.0.2.1:1"))[:30], false, false, netip.AddrPort{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := parseBindingResponse(tc.msg, tid)
			if ok != tc.wantOK || (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %v, %v, %v; want %v, %v, error %v", got, ok, err, tc.want, tc.wantOK, tc.wantErr)
			}
		})
	}
}
