package nattest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Impairment is what Impair does to each frame that crosses the public
// segment, on the way out of each switch port (netem's model): a frame
// from one public host to another is delayed once and may be lost once,
// so a round trip between two of them takes 2x Delay and is lost with
// probability 1-(1-Loss)^2.
type Impairment struct {
	// Delay is added to every frame.
	Delay time.Duration
	// Jitter varies Delay uniformly within ±Jitter, frame by frame and
	// without correlation (netem's default distribution): frames may
	// overtake each other, as under netem.
	Jitter time.Duration
	// Loss is the probability, from 0 to 1, that a frame is dropped.
	Loss float64
	// Userspace uses the user-space emulator even where the kernel has
	// netem (to compare the two, or to test the emulator).
	Userspace bool
}

func (im Impairment) String() string {
	return fmt.Sprintf("delay %v jitter %v loss %s%%", im.Delay, im.Jitter, strconv.FormatFloat(im.Loss*100, 'f', -1, 64))
}

// queueLimit is the frames a port holds at once, netem's default limit;
// more are dropped.
const queueLimit = 1000

// Impaired is an impairment in force on the public segment.
type Impaired struct {
	path, reason string
	emu          *emulator // nil under netem
	undo         func() error
	once         sync.Once
	err          error
}

// Path says how the impairment is applied: "netem" (the kernel's qdisc
// on each switch port) or "userspace" (the ports out of the bridge,
// frames switched by nattest).
func (d *Impaired) Path() string { return d.path }

// Reason says why Path was taken.
func (d *Impaired) Reason() string { return d.reason }

// Restore ends the impairment: the qdiscs go, or the emulator stops and
// the ports go back into the bridge. Frames still held are dropped, as
// deleting a netem qdisc drops its queue. Later calls return the first
// call's result.
func (d *Impaired) Restore() error {
	d.once.Do(func() { d.err = d.undo() })
	return d.err
}

// ImpairStats are the user-space emulator's counters (all zero under
// netem, whose own are `tc -s qdisc show` in the switch namespace).
type ImpairStats struct {
	Frames    uint64 // frames read from the ports
	Large     uint64 // of which over the MTU (segmentation-offload super-frames)
	Sent      uint64 // copies sent on, after their delay
	Lost      uint64 // copies dropped for Loss
	Overflow  uint64 // copies dropped because their port held queueLimit frames
	Truncated uint64 // frames longer than the emulator's buffer, dropped
	Errors    uint64 // failed reads and writes (a port that is down)
}

// Stats returns the emulator's counters so far.
func (d *Impaired) Stats() ImpairStats {
	if d.emu == nil {
		return ImpairStats{}
	}
	return d.emu.stats()
}

// Impair delays and drops the frames that cross the public segment, on
// every port of its switch at the time of the call (hosts added later
// are not impaired), until Restore or the topology's teardown.
//
// Where the kernel has netem (CONFIG_NET_SCH_NETEM), it is a netem qdisc
// on the egress of each switch port (`tc qdisc replace dev PORT root
// netem delay D J loss L% limit 1000`). Kernels built without it (the
// Firecracker VMs of the development machines and CI: tc says
// "Specified qdisc kind is unknown") get the same from user space: the
// ports leave the bridge and nattest switches frames between them with a
// packet socket per port (learning MAC addresses, flooding broadcasts and
// unknown destinations), sending each copy out of its port at now +
// Delay ± Jitter unless it is lost, through a queue per port ordered by
// due time. Path and Reason tell which path was taken and why.
//
// Either way a frame is what the kernel hands a port: veth passes TCP's
// segmentation-offload super-frames (up to 64 KB) whole, and netem, like
// the emulator, delays and drops one as one frame, so a loss can take up
// to 45 segments at once. The emulator reads and writes them with their
// virtio-net headers (PACKET_VNET_HDR), so they keep their offload state
// and checksums on the way.
func (tp *Topology) Impair(im Impairment) (*Impaired, error) {
	if im.Delay < 0 || im.Jitter < 0 || im.Loss < 0 || im.Loss > 1 {
		return nil, fmt.Errorf("nattest: impair: %v out of range", im)
	}
	ports, err := tp.publicPorts()
	if err != nil {
		return nil, fmt.Errorf("nattest: impair: %w", err)
	}
	var d *Impaired
	if im.Userspace {
		d, err = tp.impairUserspace(im, ports, "asked for (Impairment.Userspace)")
	} else {
		d, err = tp.impairNetem(im, ports)
		var nn noNetemError
		if errors.As(err, &nn) {
			d, err = tp.impairUserspace(im, ports, string(nn))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("nattest: impair %v: %w", im, err)
	}
	tp.addCloser(func() { d.Restore() })
	return d, nil
}

// noNetemError says why the kernel cannot do it.
type noNetemError string

func (e noNetemError) Error() string { return string(e) }

// impairNetem puts a netem qdisc on every port.
func (tp *Topology) impairNetem(im Impairment, ports []string) (*Impaired, error) {
	if _, err := exec.LookPath("tc"); err != nil {
		return nil, noNetemError("tc is not installed (iproute2)")
	}
	args := []string{"netem", "limit", strconv.Itoa(queueLimit)}
	if im.Delay > 0 || im.Jitter > 0 {
		args = append(args, "delay", fmt.Sprintf("%dus", im.Delay.Microseconds()))
		if im.Jitter > 0 {
			args = append(args, fmt.Sprintf("%dus", im.Jitter.Microseconds()))
		}
	}
	if im.Loss > 0 {
		args = append(args, "loss", strconv.FormatFloat(im.Loss*100, 'f', -1, 64)+"%")
	}
	tc := func(args ...string) error {
		out, err := tp.public.Command(context.Background(), "tc", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("tc %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	undo := func(ports []string) error {
		var errs []error
		for _, p := range ports {
			errs = append(errs, tc("qdisc", "del", "dev", p, "root"))
		}
		return errors.Join(errs...)
	}
	for i, p := range ports {
		err := tc(append([]string{"qdisc", "replace", "dev", p, "root"}, args...)...)
		if err != nil && i == 0 && strings.Contains(err.Error(), "kind is unknown") {
			return nil, noNetemError("the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): " + err.Error())
		}
		if err != nil {
			return nil, errors.Join(err, undo(ports[:i]))
		}
	}
	return &Impaired{path: "netem", reason: "the kernel has netem", undo: func() error {
		tp.nsMu.RLock()
		defer tp.nsMu.RUnlock()
		if tp.closed {
			return nil // the ports went with the namespaces
		}
		return undo(ports)
	}}, nil
}

// impairUserspace takes the ports out of the bridge and starts the
// emulator on them. It holds the namespace lock only around its own uses
// of the handles: the emulator's start takes it itself (Host.do), and a
// read lock taken twice by one caller deadlocks once Close waits for it.
func (tp *Topology) impairUserspace(im Impairment, ports []string, reason string) (*Impaired, error) {
	if err := tp.bridgePorts(ports, false); err != nil {
		return nil, err
	}
	// Only now: a packet socket on a bridge port would see the frames
	// the bridge forwards too.
	emu, err := startEmulator(tp.public, im, ports)
	if err != nil {
		return nil, errors.Join(err, tp.bridgePorts(ports, true))
	}
	return &Impaired{path: "userspace", reason: reason, emu: emu, undo: func() error {
		emu.close()
		return tp.bridgePorts(ports, true)
	}}, nil
}

// bridgePorts puts ports back into br0 (in), or takes them out of it;
// ports taken out before a failure go back in. Once the topology is torn
// down there is nothing to put back.
func (tp *Topology) bridgePorts(ports []string, in bool) error {
	tp.nsMu.RLock()
	defer tp.nsMu.RUnlock()
	if tp.closed {
		if in {
			return nil // the ports went with the namespaces
		}
		return ErrClosed
	}
	nl := tp.public.nl
	br, err := nl.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	rejoin := func(ports []string) error {
		var errs []error
		for _, p := range ports {
			errs = append(errs, tp.public.enslave(p, br))
		}
		return errors.Join(errs...)
	}
	if in {
		return rejoin(ports)
	}
	for i, p := range ports {
		l, err := nl.LinkByName(p)
		if err == nil {
			err = nl.LinkSetNoMaster(l)
		}
		if err != nil {
			return errors.Join(fmt.Errorf("take %s out of the bridge: %w", p, err), rejoin(ports[:i]))
		}
	}
	return nil
}

// publicPorts lists the switch's ports: the interfaces in br0.
func (tp *Topology) publicPorts() ([]string, error) {
	tp.nsMu.RLock()
	defer tp.nsMu.RUnlock()
	if tp.closed {
		return nil, ErrClosed
	}
	br, err := tp.public.nl.LinkByName("br0")
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	links, err := tp.public.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list the switch's links: %w", err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	if len(ports) == 0 {
		return nil, fmt.Errorf("no ports in br0 (impaired already?)")
	}
	return ports, nil
}

// bridged reports whether port is in br0 (for tests).
func (tp *Topology) bridged(port string) (bool, error) {
	br, err := tp.public.nl.LinkByName("br0")
	if err != nil {
		return false, err
	}
	l, err := tp.public.nl.LinkByName(port)
	if err != nil {
		return false, err
	}
	return l.Attrs().MasterIndex == br.Attrs().Index, nil
}
