// Package proc holds the process helpers that tests and benchmarks share
// when they run other programs (Pebble, frp, Caddy, Chromium, wrk, the
// product's own binaries): a port to give a program that takes it from its
// config, the tail of a chatty program's output for a failure message, and
// a child that dies with the test binary.
package proc

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// programs that take their port from a config file or flag rather than
// from a listener the test hands them. It never returns a port it
// returned before in this process: the kernel may hand a just-closed port
// out again, and two programs of one test (Pebble's and its challenge
// server's management ports) then collided.
func FreePort(tb testing.TB) int {
	tb.Helper()
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("proc: free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handed[port] {
			handed[port] = true
			return port
		}
	}
	tb.Fatal("proc: no port free that was not handed out before")
	return 0
}

var (
	handedMu sync.Mutex
	handed   = map[int]bool{}
)

// FreeAddr is FreePort as a host:port address.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
}

// TailBuffer keeps the last Max bytes written to it (all of them when Max
// is 0) and counts the lines it saw: a program's output, shown only when a
// test fails. It is safe for concurrent writers.
type TailBuffer struct {
	Max int

	mu    sync.Mutex
	buf   bytes.Buffer
	lines int
}

// Write implements io.Writer.
func (w *TailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines += bytes.Count(p, []byte{'\n'})
	w.buf.Write(p)
	if over := w.buf.Len() - w.Max; w.Max > 0 && over > 0 {
		w.buf.Next(over)
	}
	return len(p), nil
}

// String returns what the buffer holds.
func (w *TailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// Len is the number of bytes the buffer holds.
func (w *TailBuffer) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

// Lines is the number of lines written so far, including those no longer
// held.
func (w *TailBuffer) Lines() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
