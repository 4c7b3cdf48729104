package hardware

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// event is one LED write, at a time relative to the bubble's start.
type event struct {
	At time.Duration
	On bool
}

// recLED records every Set with the (fake) time it happened.
type recLED struct {
	start time.Time
	mu    sync.Mutex
	evs   []event
	err   error
}

func newRecLED() *recLED { return &recLED{start: time.Now()} }

func (l *recLED) Set(on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	l.evs = append(l.evs, event{time.Since(l.start), on})
	return nil
}

func (l *recLED) events() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// startLight runs a Light on a recording LED inside the current bubble and
// returns a stop function that waits for Run to return.
func startLight(t *testing.T, led LED) (*Light, func()) {
	t.Helper()
	l := NewLight(led, LightConfig{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		l.Run(ctx)
		close(done)
	}()
	return l, func() {
		cancel()
		<-done
	}
}

func checkEvents(t *testing.T, got, want []event) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("LED timeline:\n got %v\nwant %v", got, want)
	}
}

func TestLightPatterns(t *testing.T) {
	tests := []struct {
		state State
		run   time.Duration // a few periods, ending between two phases
		want  []event
	}{
		{StateBooting, ms(3250), []event{
			{0, true}, {ms(500), false},
			{ms(1000), true}, {ms(1500), false},
			{ms(2000), true}, {ms(2500), false},
			{ms(3000), true},
		}},
		{StateOnlineDirect, ms(10000), []event{{0, true}}},
		{StateOnlineRelayed, ms(6100), []event{
			{0, true}, {ms(1800), false},
			{ms(2000), true}, {ms(3800), false},
			{ms(4000), true}, {ms(5800), false},
			{ms(6000), true},
		}},
		{StateError, ms(4100), []event{
			{0, true}, {ms(150), false}, {ms(300), true}, {ms(450), false}, {ms(600), true}, {ms(750), false},
			{ms(2000), true}, {ms(2150), false}, {ms(2300), true}, {ms(2450), false}, {ms(2600), true}, {ms(2750), false},
			{ms(4000), true},
		}},
		{State(42), ms(900), []event{ // unknown states show as errors
			{0, true}, {ms(150), false}, {ms(300), true}, {ms(450), false}, {ms(600), true}, {ms(750), false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.state.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				led := newRecLED()
				l := NewLight(led, LightConfig{})
				l.SetState(tt.state)
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() {
					l.Run(ctx)
					close(done)
				}()
				time.Sleep(tt.run)
				checkEvents(t, led.events(), tt.want)
				cancel()
				<-done
				evs := led.events()
				if last := evs[len(evs)-1]; last.On {
					t.Errorf("after Run: LED on, want off")
				}
			})
		})
	}
}

func TestLightResetPatterns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		led := newRecLED()
		l, stop := startLight(t, led)
		defer stop()
		time.Sleep(ms(200)) // booting: on since 0
		l.Override(PatternResetHeld)
		time.Sleep(ms(450))
		l.Override(PatternResetTriggered)
		time.Sleep(ms(1000))
		checkEvents(t, led.events(), []event{
			{0, true},
			// fast blink from 200 ms: already on, so the first write is the off.
			{ms(300), false}, {ms(400), true}, {ms(500), false}, {ms(600), true},
			// dark from 650 ms.
			{ms(650), false},
		})
	})
}

func TestLightStateChangeIsImmediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		led := newRecLED()
		l, stop := startLight(t, led)
		defer stop()

		time.Sleep(ms(750)) // booting: off since 500 ms
		l.SetState(StateOnlineDirect)
		synctest.Wait()
		checkEvents(t, led.events(), []event{{0, true}, {ms(500), false}, {ms(750), true}})

		time.Sleep(ms(1250)) // 2000 ms: steady on, nothing written
		l.SetState(StateOnlineRelayed)
		time.Sleep(ms(2100))
		// 4100 ms: relayed started at 2000 ms, LED already on.
		l.SetState(StateError)
		synctest.Wait()
		time.Sleep(ms(400))
		l.SetState(StateBooting)
		time.Sleep(ms(600))
		checkEvents(t, led.events(), []event{
			{0, true}, {ms(500), false}, {ms(750), true},
			{ms(3800), false}, {ms(4000), true},
			{ms(4250), false}, {ms(4400), true}, // error from 4100 ms: on, off at +150, on at +300
			// booting from 4500 ms: on (already), off at +500.
			{ms(5000), false},
		})
		if got, want := l.State(), StateBooting; got != want {
			t.Errorf("State() = %v, want %v", got, want)
		}
	})
}

func TestLightSameStateDoesNotRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		led := newRecLED()
		l, stop := startLight(t, led)
		defer stop()
		time.Sleep(ms(400))
		l.SetState(StateBooting)
		l.Override(PatternResetHeld)
		l.Override(PatternResetHeld)
		time.Sleep(ms(150))    // 550 ms
		l.SetState(StateError) // hidden by the override
		time.Sleep(ms(100))    // 650 ms
		l.ClearOverride()      // error pattern from its start
		l.ClearOverride()
		time.Sleep(ms(200))
		checkEvents(t, led.events(), []event{
			{0, true},
			{ms(500), false}, // 400 ms + 100 ms: the override's first off
			{ms(600), true},
			// 650 ms: error starts on (already on), off at +150 ms.
			{ms(800), false},
		})
	})
}

func TestLightLogsWriteFailureOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		led := newRecLED()
		led.err = errors.New("EIO")
		l := NewLight(led, LightConfig{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		time.Sleep(ms(3200))
		led.mu.Lock()
		led.err = nil
		led.mu.Unlock()
		time.Sleep(ms(1000))
		cancel()
		<-done
		out := buf.String()
		if n := strings.Count(out, "LED write failed"); n != 1 {
			t.Errorf("logged %d write failures, want 1:\n%s", n, out)
		}
		if !strings.Contains(out, "work again") {
			t.Errorf("recovery not logged:\n%s", out)
		}
		// A failed write is retried even if the level is the same.
		if evs := led.events(); len(evs) == 0 || evs[0] != (event{ms(3500), false}) {
			t.Errorf("first successful write = %v, want off at 3.5 s", evs)
		}
	})
}

func TestLightNopLED(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLight(nil, LightConfig{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		l.SetState(StateError)
		time.Sleep(time.Minute)
		cancel()
		<-done
	})
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{
		StateBooting: "booting", StateOnlineDirect: "online-direct",
		StateOnlineRelayed: "online-relayed", StateError: "error", State(9): "State(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

// The package doc's table is what docs/user-guide.md copies: keep it in
// step with the patterns.
func TestPatternPeriods(t *testing.T) {
	period := func(p Pattern) (d time.Duration) {
		for _, ph := range p {
			d += ph.Duration
		}
		return d
	}
	for _, tt := range []struct {
		name string
		p    Pattern
		want time.Duration
	}{
		{"booting", PatternBooting, time.Second},
		{"online-relayed", PatternOnlineRelayed, 2 * time.Second},
		{"error", PatternError, 2 * time.Second},
		{"reset held", PatternResetHeld, 200 * time.Millisecond},
	} {
		if got := period(tt.p); got != tt.want {
			t.Errorf("%s: period %v, want %v", tt.name, got, tt.want)
		}
	}
}
