package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EventKind is the type of a network Event.
type EventKind int

const (
	// LinkUp: the interface is administratively up and has a carrier
	// (IFF_UP and IFF_RUNNING).
	LinkUp EventKind = iota + 1
	// LinkDown: the interface lost its carrier, was set down or removed.
	LinkDown
	// AddrAdded: an address became usable (IPv6 addresses are reported
	// once duplicate address detection finished, not while tentative).
	AddrAdded
	// AddrRemoved: an address was removed.
	AddrRemoved
)

func (k EventKind) String() string {
	switch k {
	case LinkUp:
		return "link up"
	case LinkDown:
		return "link down"
	case AddrAdded:
		return "address added"
	case AddrRemoved:
		return "address removed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change of the network's state. Watch reports transitions
// only: repeated kernel notifications that change nothing relevant (link
// statistics, IPv6 lifetime refreshes) produce no Event.
type Event struct {
	Kind      EventKind
	Interface string       // interface name
	Index     int          // interface index
	Addr      netip.Prefix // address and prefix length, for address events
}

func (e Event) String() string {
	if e.Addr.IsValid() {
		return fmt.Sprintf("%s: %s %s", e.Interface, e.Kind, e.Addr)
	}
	return fmt.Sprintf("%s: %s", e.Interface, e.Kind)
}

// SubscriberBuffer is the number of events a subscriber's channel holds.
// When a subscriber falls this far behind, its oldest event is dropped to
// make room for the newest, so a slow subscriber never delays the others
// or the netlink socket. Subscribers that only need "something changed"
// should read through Debounce.
const SubscriberBuffer = 64

// Watcher publishes the Events of one namespace to its subscribers.
type Watcher struct {
	done chan struct{}

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	err    error
}

type subscriber struct {
	ch      chan Event
	dropped int
}

// Watch subscribes to link and address changes in the Manager's namespace
// and publishes them until ctx ends or the subscription fails (for
// example when the kernel dropped messages because the socket buffer
// overflowed). Then all subscriber channels are closed and Err says why;
// a caller that wants to go on calls Watch again and resynchronises.
func (m *Manager) Watch(ctx context.Context) (*Watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{
		done: make(chan struct{}),
		subs: make(map[*subscriber]struct{}),
	}

	var (
		errMu  sync.Mutex
		subErr error
	)
	onErr := func(err error) {
		if ctx.Err() != nil {
			return // the socket was closed on purpose
		}
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return
		}
		m.log.Warn("netconf: watch", "err", err)
		errMu.Lock()
		if subErr == nil {
			subErr = err
		}
		errMu.Unlock()
	}

	linkCh := make(chan netlink.LinkUpdate, 64)
	addrCh := make(chan netlink.AddrUpdate, 64)
	err := netlink.LinkSubscribeWithOptions(linkCh, ctx.Done(), netlink.LinkSubscribeOptions{
		Namespace:         m.ns,
		ErrorCallback:     onErr,
		ReceiveBufferSize: 1 << 20,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("netconf: watch: subscribe to links: %w", err)
	}
	// From here on the library's goroutines own the channels; they close
	// them once ctx.Done closes the sockets. They block on a full channel,
	// so whoever stops reading must drain.
	drain := func() {
		go func() {
			for range linkCh {
			}
		}()
		go func() {
			for range addrCh {
			}
		}()
	}
	err = netlink.AddrSubscribeWithOptions(addrCh, ctx.Done(), netlink.AddrSubscribeOptions{
		Namespace:         m.ns,
		ErrorCallback:     onErr,
		ReceiveBufferSize: 1 << 20,
	})
	if err != nil {
		cancel()
		go func() {
			for range linkCh {
			}
		}()
		return nil, fmt.Errorf("netconf: watch: subscribe to addresses: %w", err)
	}

	// Seed the current state after subscribing, so that no change falls
	// between the listing and the subscription. Updates queued meanwhile
	// are compared against it and only real transitions are published.
	st := &watchState{
		links: make(map[int]linkInfo),
		addrs: make(map[addrKey]string),
	}
	links, err := retryDump(m.h.LinkList)
	if err != nil {
		cancel()
		drain()
		return nil, fmt.Errorf("netconf: watch: list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		st.links[a.Index] = linkInfo{name: a.Name, up: isRunning(a.RawFlags)}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return m.h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		cancel()
		drain()
		return nil, fmt.Errorf("netconf: watch: list addresses: %w", err)
	}
	for _, a := range addrs {
		pfx, ok := prefixOf(a.IPNet)
		if !ok || a.Flags&unix.IFA_F_TENTATIVE != 0 {
			continue
		}
		st.addrs[addrKey{a.LinkIndex, pfx}] = st.links[a.LinkIndex].name
	}

	go func() {
		defer drain()
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				w.close(nil)
				return
			case u, ok := <-linkCh:
				if !ok {
					w.close(subscriptionEnded(ctx, &errMu, &subErr))
					return
				}
				if ev, ok := st.link(u); ok {
					m.log.Debug("netconf: event", "event", ev.String())
					w.publish(ev)
				}
			case u, ok := <-addrCh:
				if !ok {
					w.close(subscriptionEnded(ctx, &errMu, &subErr))
					return
				}
				if ev, ok := st.addr(u, m.h); ok {
					m.log.Debug("netconf: event", "event", ev.String())
					w.publish(ev)
				}
			}
		}
	}()
	return w, nil
}

func subscriptionEnded(ctx context.Context, mu *sync.Mutex, err *error) error {
	if ctx.Err() != nil {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	if *err != nil {
		return fmt.Errorf("netconf: watch: subscription ended: %w", *err)
	}
	return errors.New("netconf: watch: subscription ended")
}

// Subscribe returns a channel of Events and a function that ends the
// subscription and closes the channel. The channel is also closed when
// the Watcher stops. See SubscriberBuffer for what happens to a subscriber
// that does not keep up.
func (w *Watcher) Subscribe() (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, SubscriberBuffer)}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	w.subs[s] = struct{}{}
	return s.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.subs[s]; ok {
			delete(w.subs, s)
			close(s.ch)
		}
	}
}

// Done is closed when the Watcher has stopped.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Err returns why the Watcher stopped: nil while it runs and after its
// context ended, otherwise the subscription's failure.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// publish hands ev to every subscriber without blocking: when a
// subscriber's buffer is full, its oldest event makes room. Only publish
// sends, under w.mu, so the loop below always terminates.
func (w *Watcher) publish(ev Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.subs {
		for {
			select {
			case s.ch <- ev:
			default:
				select {
				case <-s.ch:
					s.dropped++
				default:
				}
				continue
			}
			break
		}
	}
}

func (w *Watcher) close(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	w.err = err
	for s := range w.subs {
		close(s.ch)
	}
	w.subs = nil
	close(w.done)
}

type linkInfo struct {
	name string
	up   bool
}

type addrKey struct {
	index int
	pfx   netip.Prefix
}

// watchState is the last known state, owned by the Watch goroutine.
type watchState struct {
	links map[int]linkInfo
	addrs map[addrKey]string // value: interface name
}

func isRunning(rawFlags uint32) bool {
	return rawFlags&unix.IFF_UP != 0 && rawFlags&unix.IFF_RUNNING != 0
}

func (st *watchState) link(u netlink.LinkUpdate) (Event, bool) {
	a := u.Link.Attrs()
	prev, known := st.links[a.Index]
	if u.Header.Type == unix.RTM_DELLINK {
		delete(st.links, a.Index)
		if known && prev.up {
			return Event{Kind: LinkDown, Interface: a.Name, Index: a.Index}, true
		}
		return Event{}, false
	}
	up := isRunning(u.IfInfomsg.Flags)
	st.links[a.Index] = linkInfo{name: a.Name, up: up}
	if known && prev.up == up || !known && !up {
		return Event{}, false
	}
	kind := LinkDown
	if up {
		kind = LinkUp
	}
	return Event{Kind: kind, Interface: a.Name, Index: a.Index}, true
}

func (st *watchState) addr(u netlink.AddrUpdate, h *netlink.Handle) (Event, bool) {
	pfx, ok := prefixOf(&u.LinkAddress)
	if !ok {
		return Event{}, false
	}
	k := addrKey{u.LinkIndex, pfx}
	name, known := st.addrs[k]
	if !known {
		if l, ok := st.links[u.LinkIndex]; ok {
			name = l.name
		} else {
			name = linkName(h, u.LinkIndex)
		}
	}
	usable := u.NewAddr && u.Flags&unix.IFA_F_TENTATIVE == 0
	switch {
	case usable && !known:
		st.addrs[k] = name
		return Event{Kind: AddrAdded, Interface: name, Index: u.LinkIndex, Addr: pfx}, true
	case !usable && known:
		delete(st.addrs, k)
		return Event{Kind: AddrRemoved, Interface: name, Index: u.LinkIndex, Addr: pfx}, true
	}
	return Event{}, false
}

// Debounce turns events into a "network changed" signal for clients such
// as the tunnel client: after an event it waits until no further event
// arrived for quiet (but at most 4*quiet after the first, so a flapping
// link still signals), then sends one value. Signals coalesce: while the
// receiver has not taken a signal, no second one is queued. The returned
// channel is closed when events is closed or ctx ends.
func Debounce(ctx context.Context, events <-chan Event, quiet time.Duration) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		var (
			timer    *time.Timer
			timerC   <-chan time.Time
			deadline time.Time
		)
		for {
			select {
			case <-ctx.Done():
				if timer != nil {
					timer.Stop()
				}
				return
			case _, ok := <-events:
				if !ok {
					if timer != nil {
						timer.Stop()
					}
					return
				}
				now := time.Now()
				if timer == nil {
					deadline = now.Add(4 * quiet)
					timer = time.NewTimer(quiet)
					timerC = timer.C
					continue
				}
				timer.Reset(min(quiet, deadline.Sub(now)))
			case <-timerC:
				timer, timerC = nil, nil
				select {
				case out <- struct{}{}:
				default: // a signal is pending already
				}
			}
		}
	}()
	return out
}

// OnChange calls changed after each settled burst of link and address
// changes other than link-local addresses (Debounce with quiet) in the calling process's namespace, until
// ctx ends. Without netlink it logs why and returns. The tunnel client
// uses it to reattach at once instead of waiting for keep-alives to fail.
func OnChange(ctx context.Context, log *slog.Logger, quiet time.Duration, changed func()) {
	m, err := New(Options{Logger: log})
	if err != nil {
		log.Warn("not watching the network", "err", err)
		return
	}
	defer m.Close()
	w, err := m.Watch(ctx)
	if err != nil {
		log.Warn("not watching the network", "err", err)
		return
	}
	events, stop := w.Subscribe()
	defer stop()
	// Link-local addresses reach no supernode: their coming and going (an
	// IPv6 link-local address turns usable a second after the link comes
	// up, when duplicate address detection ends) must not tear down
	// working connections.
	relevant := make(chan Event)
	go func() {
		defer close(relevant)
		for ev := range events {
			if (ev.Kind == AddrAdded || ev.Kind == AddrRemoved) && ev.Addr.Addr().IsLinkLocalUnicast() {
				continue
			}
			select {
			case relevant <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range Debounce(ctx, relevant, quiet) {
		changed()
	}
}
