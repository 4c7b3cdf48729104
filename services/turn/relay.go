package turn

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

var (
	errCapacity   = errors.New("turn: server allocation limit reached")
	errClosed     = errors.New("turn: server closed")
	errTCPRelay   = errors.New("turn: TCP relays (RFC 6062) are not supported")
	errPortRange  = errors.New("turn: requested relay port outside the configured range")
	errPortsInUse = errors.New("turn: no free relay port in range")
)

// maxPortAttempt bounds the binds tried for one allocation in a port range.
const maxPortAttempt = 64

// relayAllocator is pion's RelayAddressGenerator: it opens the relay
// sockets, in the port range, and bounds how many are open at once (the
// server-wide allocation limit; pion answers its error with 508
// Insufficient Capacity).
type relayAllocator struct {
	listen           func(network, address string) (net.PacketConn, error)
	addr             string // bind address
	public           net.IP // address put into relayed addresses
	minPort, maxPort uint16
	limit            int
	log              *slog.Logger

	mu     sync.Mutex
	conns  map[*relayConn]struct{}
	closed bool
}

func (r *relayAllocator) Validate() error { return nil }

func (r *relayAllocator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, errClosed
	}
	if len(r.conns) >= r.limit {
		r.mu.Unlock()
		r.log.Warn("turn: allocation refused", "reason", "server limit reached", "limit", r.limit)
		return nil, nil, errCapacity
	}
	// Hold the slot while binding (not the lock).
	rc := &relayConn{owner: r}
	r.conns[rc] = struct{}{}
	r.mu.Unlock()

	conn, err := r.bind(network, requestedPort)
	if err != nil {
		r.release(rc)
		r.log.Warn("turn: allocation refused", "reason", "no relay socket", "err", err)
		return nil, nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		conn.Close()
		r.release(rc)
		return nil, nil, errClosed
	}
	rc.PacketConn = conn
	r.mu.Unlock()
	port := 0
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		port = ua.Port
	}
	return rc, &net.UDPAddr{IP: r.public, Port: port}, nil
}

func (r *relayAllocator) bind(network string, requestedPort int) (net.PacketConn, error) {
	open := func(port int) (net.PacketConn, error) {
		c, err := r.listen(network, net.JoinHostPort(r.addr, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("turn: bind relay %s:%d: %w", r.addr, port, err)
		}
		return c, nil
	}
	ranged := r.maxPort != 0
	if requestedPort != 0 {
		if ranged && (requestedPort < int(r.minPort) || requestedPort > int(r.maxPort)) {
			return nil, errPortRange
		}
		return open(requestedPort)
	}
	if !ranged {
		return open(0)
	}
	// Random start, then consecutive ports, so a nearly full range is
	// still found within maxPortAttempt binds.
	size := int(r.maxPort) - int(r.minPort) + 1
	start := rand.IntN(size)
	for i := range min(size, maxPortAttempt) {
		port := int(r.minPort) + (start+i)%size
		if c, err := open(port); err == nil {
			return c, nil
		}
	}
	return nil, errPortsInUse
}

func (r *relayAllocator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelay
}

func (r *relayAllocator) release(rc *relayConn) {
	r.mu.Lock()
	delete(r.conns, rc)
	r.mu.Unlock()
}

func (r *relayAllocator) live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// close closes every relay socket and refuses new ones.
func (r *relayAllocator) close() {
	r.mu.Lock()
	r.closed = true
	var open []*relayConn
	for rc := range r.conns {
		if rc.PacketConn != nil {
			open = append(open, rc)
		}
	}
	r.mu.Unlock()
	for _, rc := range open {
		rc.Close()
	}
}

// relayConn frees its slot when pion closes it.
type relayConn struct {
	net.PacketConn
	owner *relayAllocator
	once  sync.Once
}

// Close is idempotent: Server.Close and pion may both close a relay.
func (c *relayConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.PacketConn.Close()
		c.owner.release(c)
	})
	return err
}
