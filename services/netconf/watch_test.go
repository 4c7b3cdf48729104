package netconf

import (
	"context"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func newTestWatcher() *Watcher {
	return &Watcher{done: make(chan struct{}), subs: make(map[*subscriber]struct{})}
}

func TestPublishDropsOldestForSlowSubscriber(t *testing.T) {
	w := newTestWatcher()
	slow, cancelSlow := w.Subscribe()
	defer cancelSlow()
	fast, cancelFast := w.Subscribe()
	defer cancelFast()

	const n = SubscriberBuffer + 10
	for i := range n {
		w.publish(Event{Kind: LinkUp, Index: i})
		// The fast subscriber keeps up; the slow one never reads.
		if got := <-fast; got.Index != i {
			t.Fatalf("fast subscriber: got event %d, want %d", got.Index, i)
		}
	}
	if got := len(slow); got != SubscriberBuffer {
		t.Fatalf("slow subscriber holds %d events, want %d", got, SubscriberBuffer)
	}
	// The oldest events were dropped; the newest are kept, in order.
	for i := n - SubscriberBuffer; i < n; i++ {
		if got := <-slow; got.Index != i {
			t.Fatalf("slow subscriber: got event %d, want %d", got.Index, i)
		}
	}
}

func TestSubscribeCancelAndClose(t *testing.T) {
	w := newTestWatcher()
	ch1, cancel1 := w.Subscribe()
	ch2, cancel2 := w.Subscribe()
	cancel1()
	cancel1() // idempotent
	if _, ok := <-ch1; ok {
		t.Fatal("cancelled subscription: channel still open")
	}
	w.publish(Event{Kind: LinkDown}) // must not panic on the closed channel
	w.close(nil)
	if ev := <-ch2; ev.Kind != LinkDown {
		t.Fatalf("got %v, want the event published before close", ev)
	}
	if _, ok := <-ch2; ok {
		t.Fatal("after close: channel still open")
	}
	cancel2() // after close: no-op
	ch3, cancel3 := w.Subscribe()
	defer cancel3()
	if _, ok := <-ch3; ok {
		t.Fatal("subscription after close: channel open, want closed")
	}
	select {
	case <-w.Done():
	default:
		t.Fatal("Done not closed after close")
	}
}

func linkUpdate(typ uint16, index int, name string, flags uint32) netlink.LinkUpdate {
	var u netlink.LinkUpdate
	u.Header.Type = typ
	u.IfInfomsg = nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Index: int32(index), Flags: flags}}
	u.Link = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index, Name: name, RawFlags: flags}}
	return u
}

func TestWatchStateTransitions(t *testing.T) {
	st := &watchState{links: map[int]linkInfo{2: {name: "eth0", up: true}}, addrs: map[addrKey]string{}}
	const running = unix.IFF_UP | unix.IFF_RUNNING | unix.IFF_LOWER_UP
	type step struct {
		u    netlink.LinkUpdate
		want EventKind // 0: no event
	}
	for i, s := range []step{
		{linkUpdate(unix.RTM_NEWLINK, 2, "eth0", running), 0},            // no change
		{linkUpdate(unix.RTM_NEWLINK, 2, "eth0", unix.IFF_UP), LinkDown}, // carrier lost
		{linkUpdate(unix.RTM_NEWLINK, 2, "eth0", unix.IFF_UP), 0},
		{linkUpdate(unix.RTM_NEWLINK, 2, "eth0", running), LinkUp},
		{linkUpdate(unix.RTM_NEWLINK, 3, "eth1", 0), 0}, // new, down
		{linkUpdate(unix.RTM_DELLINK, 3, "eth1", 0), 0},
		{linkUpdate(unix.RTM_DELLINK, 2, "eth0", running), LinkDown},
	} {
		ev, ok := st.link(s.u)
		if s.want == 0 {
			if ok {
				t.Errorf("step %d: got %v, want no event", i, ev)
			}
			continue
		}
		if !ok || ev.Kind != s.want || ev.Interface != s.u.Link.Attrs().Name {
			t.Errorf("step %d: got %v (%v), want %v on %s", i, ev, ok, s.want, s.u.Link.Attrs().Name)
		}
	}

	st.links[2] = linkInfo{name: "eth0", up: true}
	addr := func(s string, add bool, flags int) netlink.AddrUpdate {
		p := netip.MustParsePrefix(s)
		return netlink.AddrUpdate{LinkAddress: *ipNet(p), LinkIndex: 2, NewAddr: add, Flags: flags}
	}
	for i, s := range []struct {
		u    netlink.AddrUpdate
		want EventKind
	}{
		{addr("fd00::2/64", true, unix.IFA_F_TENTATIVE), 0}, // DAD running
		{addr("fd00::2/64", true, 0), AddrAdded},            // DAD done
		{addr("fd00::2/64", true, 0), 0},                    // lifetime refresh
		{addr("10.0.0.2/24", true, 0), AddrAdded},
		{addr("10.0.0.2/24", false, 0), AddrRemoved},
		{addr("fd00::2/64", false, 0), AddrRemoved},
	} {
		ev, ok := st.addr(s.u, nil)
		if s.want == 0 {
			if ok {
				t.Errorf("addr step %d: got %v, want no event", i, ev)
			}
			continue
		}
		want, _ := prefixOf(&s.u.LinkAddress)
		if !ok || ev.Kind != s.want || ev.Interface != "eth0" || ev.Addr != want {
			t.Errorf("addr step %d: got %v (%v), want %v %s on eth0", i, ev, ok, s.want, want)
		}
	}
}

func TestDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		events := make(chan Event)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		changed := Debounce(ctx, events, time.Second)

		pending := func() bool {
			synctest.Wait()
			select {
			case _, ok := <-changed:
				return ok
			default:
				return false
			}
		}

		// A burst signals once, a quiet period after its last event.
		for range 3 {
			events <- Event{Kind: LinkDown}
			time.Sleep(500 * time.Millisecond)
		}
		if pending() {
			t.Fatal("signalled during the burst")
		}
		time.Sleep(500 * time.Millisecond)
		if !pending() {
			t.Fatal("no signal one quiet period after the burst")
		}
		if pending() {
			t.Fatal("second signal for one burst")
		}

		// A link that keeps flapping still signals after 4 quiet periods.
		start := time.Now()
		for !pending() {
			events <- Event{Kind: LinkUp}
			time.Sleep(200 * time.Millisecond)
		}
		if d := time.Since(start); d > 4*time.Second+200*time.Millisecond {
			t.Fatalf("flapping link: signal after %v, want at most 4s", d)
		}

		// Unread signals coalesce into one.
		events <- Event{Kind: LinkDown}
		time.Sleep(2 * time.Second)
		events <- Event{Kind: LinkUp}
		time.Sleep(2 * time.Second)
		if !pending() || pending() {
			t.Fatal("want exactly one pending signal for two unread bursts")
		}

		close(events)
		synctest.Wait()
		if _, ok := <-changed; ok {
			t.Fatal("channel open after events closed")
		}
	})
}
