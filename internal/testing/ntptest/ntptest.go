// Package ntptest is an SNTP server (RFC 4330) for tests: it answers with
// the host's clock, as a stratum-1 server would, so that a guest without
// a clock of its own (QEMU's Raspberry Pi models) gets the time from a
// time server the test controls instead of the internet's pool.
//
// It is written here because no kept Go library serves NTP (the clients,
// such as github.com/beevik/ntp, which gokrazy's NTP client uses and this
// package's test checks the server with, only ask); it answers client
// requests and nothing else.
package ntptest

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server answers NTP client requests on a UDP socket.
type Server struct {
	conn net.PacketConn
	now  func() time.Time
	// Answered counts the answers sent.
	Answered atomic.Int64
	wg       sync.WaitGroup
}

// ntpEpochOffset is the seconds from 1900-01-01 (NTP's era 0) to 1970.
const ntpEpochOffset = 2208988800

// Start serves on conn with the clock now (nil: time.Now) until Close.
func Start(conn net.PacketConn, now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	s := &Server{conn: conn, now: now}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Addr is the server's address.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Close stops the server.
func (s *Server) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	buf := make([]byte, 512)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		received := s.now()
		resp, ok := answer(buf[:n], received, s.now)
		if !ok {
			continue
		}
		if _, err := s.conn.WriteTo(resp, from); err == nil {
			s.Answered.Add(1)
		}
	}
}

// answer builds the reply to req, a client's request (mode 3); ok is false
// for anything else.
func answer(req []byte, received time.Time, now func() time.Time) ([]byte, bool) {
	if len(req) < 48 {
		return nil, false
	}
	version, mode := req[0]>>3&7, req[0]&7
	if mode != 3 || version < 1 || version > 4 {
		return nil, false
	}
	resp := make([]byte, 48)
	resp[0] = version<<3 | 4 // leap indicator 0, the client's version, server
	resp[1] = 1              // stratum 1: a reference clock (the host's)
	resp[2] = req[2]         // poll interval, as asked
	resp[3] = 0xec           // precision 2^-20 s
	// Root delay 0; root dispersion about 1 ms.
	binary.BigEndian.PutUint32(resp[8:], 0x00000042)
	copy(resp[12:16], "LOCL")
	putTime(resp[16:], received)  // reference time
	copy(resp[24:32], req[40:48]) // origin: the client's transmit time
	putTime(resp[32:], received)  // receive time
	putTime(resp[40:], now())     // transmit time
	return resp, true
}

// putTime writes t in NTP's 64-bit format (seconds since 1900, 32.32).
func putTime(b []byte, t time.Time) {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	binary.BigEndian.PutUint64(b, secs<<32|frac)
}
