package nattest

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The user-space path of Impair, for kernels without netem.

const (
	// vnetHdrLen is struct virtio_net_hdr, which PACKET_VNET_HDR puts
	// before every frame read or written.
	vnetHdrLen = 10
	// readBuf holds the largest frame veth passes on (a 64 KB
	// segmentation-offload frame) and its header; a read that fills it
	// was truncated.
	readBuf = 128 << 10
)

// emulator switches frames between ports that are out of the bridge,
// delaying and dropping each copy on the way out as a netem qdisc on the
// port would.
type emulator struct {
	im    Impairment
	ports []*emuPort
	stop  chan struct{}
	wg    sync.WaitGroup

	mu  sync.Mutex
	fdb map[[6]byte]*emuPort // the port each source address was seen on

	frames, large, sent, lost, overflow, truncated, errs atomic.Uint64
}

// emuPort is a packet socket on one port and the frames due to leave by
// it.
type emuPort struct {
	name string
	f    *os.File
	rc   syscall.RawConn
	wake chan struct{} // a frame went to the head of q

	mu  sync.Mutex
	q   frameQueue
	seq uint64
}

// startEmulator opens a packet socket on each of the switch's ports and
// starts switching.
func startEmulator(sw *Host, im Impairment, names []string) (*emulator, error) {
	e := &emulator{im: im, stop: make(chan struct{}), fdb: map[[6]byte]*emuPort{}}
	for _, name := range names {
		p, err := openPort(sw, name)
		if err != nil {
			for _, p := range e.ports {
				p.f.Close()
			}
			return nil, err
		}
		e.ports = append(e.ports, p)
	}
	for _, p := range e.ports {
		e.wg.Add(2)
		go e.read(p)
		go e.write(p)
	}
	return e, nil
}

// openPort opens a packet socket in the switch's namespace, bound to
// port name, that reads what the host at the far end sends (in
// promiscuous mode, not what the socket itself writes) and writes frames
// out to it, each with its virtio-net header.
func openPort(sw *Host, name string) (*emuPort, error) {
	l, err := sw.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	idx := l.Attrs().Index
	var fd int
	if nsErr := sw.do(func() {
		// Protocol 0: no frames until bind names the port.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	}); nsErr != nil {
		return nil, nsErr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: packet socket: %w", name, err)
	}
	fail := func(what string, err error) (*emuPort, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %s: %w", name, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(idx), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fail("promiscuous mode", err)
	}
	// Room for a burst of super-frames; the defaults hold a few.
	for _, opt := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 8<<20); err != nil {
			return fail("socket buffers", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+name) // non-blocking: in the runtime's poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &emuPort{name: name, f: f, rc: rc, wake: make(chan struct{}, 1)}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// close stops switching; frames still held are dropped.
func (e *emulator) close() {
	close(e.stop)
	for _, p := range e.ports {
		p.f.Close() // ends reads and writes in progress
	}
	e.wg.Wait()
}

func (e *emulator) stats() ImpairStats {
	return ImpairStats{Frames: e.frames.Load(), Large: e.large.Load(), Sent: e.sent.Load(), Lost: e.lost.Load(),
		Overflow: e.overflow.Load(), Truncated: e.truncated.Load(), Errors: e.errs.Load()}
}

// read switches the frames that arrive on p until the socket is closed.
func (e *emulator) read(p *emuPort) {
	defer e.wg.Done()
	buf := make([]byte, readBuf)
	for {
		var n int
		var rerr error
		if err := p.rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return !errors.Is(rerr, unix.EAGAIN)
		}); err != nil {
			return // closed
		}
		switch {
		case errors.Is(rerr, unix.EINTR):
		case rerr != nil:
			e.errs.Add(1) // ENETDOWN once when the port goes down (SetLink); reads resume when it is up
		case n == len(buf):
			e.truncated.Add(1)
		default:
			e.forward(p, buf[:n])
		}
	}
}

// forward sends a copy of pkt (header and frame) out of the port its
// destination was seen on, or out of every other port for broadcasts,
// multicasts and unknown destinations, as the bridge does.
func (e *emulator) forward(in *emuPort, pkt []byte) {
	e.frames.Add(1)
	if len(pkt) < vnetHdrLen+14 {
		return
	}
	if len(pkt) > vnetHdrLen+14+1500 {
		e.large.Add(1)
	}
	var dst, src [6]byte
	copy(dst[:], pkt[vnetHdrLen:])
	copy(src[:], pkt[vnetHdrLen+6:])
	e.mu.Lock()
	if src[0]&1 == 0 {
		e.fdb[src] = in
	}
	out, known := e.fdb[dst]
	e.mu.Unlock()
	if dst[0]&1 == 0 && known {
		if out != in {
			e.hold(out, pkt)
		}
		return
	}
	for _, p := range e.ports {
		if p != in {
			e.hold(p, pkt)
		}
	}
}

// hold drops a copy of pkt with probability Loss, or queues it to leave
// by p at now + Delay ± Jitter.
func (e *emulator) hold(p *emuPort, pkt []byte) {
	if e.im.Loss > 0 && rand.Float64() < e.im.Loss {
		e.lost.Add(1)
		return
	}
	d := e.im.Delay
	if j := e.im.Jitter; j > 0 {
		d += time.Duration(rand.Int64N(2*int64(j)+1)) - j
	}
	due := time.Now().Add(max(d, 0))
	p.mu.Lock()
	if len(p.q) >= queueLimit {
		p.mu.Unlock()
		e.overflow.Add(1)
		return
	}
	p.seq++
	heap.Push(&p.q, heldFrame{due: due, seq: p.seq, b: bytes.Clone(pkt)})
	first := p.q[0].seq == p.seq
	p.mu.Unlock()
	if first {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// write sends p's frames as they fall due, until the emulator stops.
func (e *emulator) write(p *emuPort) {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var next []byte
		wait := time.Duration(-1)
		p.mu.Lock()
		if len(p.q) > 0 {
			if w := time.Until(p.q[0].due); w > 0 {
				wait = w
			} else {
				next = heap.Pop(&p.q).(heldFrame).b
			}
		}
		p.mu.Unlock()
		if next != nil {
			var werr error
			if err := p.rc.Write(func(fd uintptr) bool {
				_, werr = unix.Write(int(fd), next)
				return !errors.Is(werr, unix.EAGAIN)
			}); err != nil {
				return // closed
			}
			if werr != nil {
				e.errs.Add(1) // the port is down, or its peer's queue full: lost, as on a wire
			} else {
				e.sent.Add(1)
			}
			continue
		}
		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-e.stop:
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// heldFrame is a frame waiting for its time.
type heldFrame struct {
	due time.Time
	seq uint64 // frames due at the same time leave in order
	b   []byte // virtio-net header and frame
}

// frameQueue is a min-heap of frames by due time (container/heap).
type frameQueue []heldFrame

func (q frameQueue) Len() int { return len(q) }
func (q frameQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q frameQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *frameQueue) Push(x any)   { *q = append(*q, x.(heldFrame)) }
func (q *frameQueue) Pop() any {
	old := *q
	f := old[len(old)-1]
	old[len(old)-1] = heldFrame{}
	*q = old[:len(old)-1]
	return f
}
