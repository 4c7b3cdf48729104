package hardware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// fakePin is a GPIO input with a button on it. Create it inside the
// synctest bubble: WaitForEdge blocks on its channel.
type fakePin struct {
	mu      sync.Mutex
	level   gpio.Level
	pull    gpio.Pull
	edge    gpio.Edge
	noEdges bool  // In with an edge fails, as on a pin without interrupts
	inErr   error // In fails
	edges   chan struct{}
}

func newFakePin(level gpio.Level) *fakePin {
	return &fakePin{level: level, edges: make(chan struct{}, 1)}
}

func (p *fakePin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inErr != nil {
		return p.inErr
	}
	if p.noEdges && edge != gpio.NoEdge {
		return errors.New("edge detection not supported")
	}
	p.pull, p.edge = pull, edge
	return nil
}

func (p *fakePin) Read() gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level
}

func (p *fakePin) WaitForEdge(timeout time.Duration) bool {
	var after <-chan time.Time
	if timeout >= 0 {
		after = time.After(timeout)
	}
	select {
	case <-p.edges:
		return true
	case <-after:
		return false
	}
}

func (p *fakePin) set(l gpio.Level) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.level == l {
		return
	}
	p.level = l
	if p.edge == gpio.BothEdges {
		select {
		case p.edges <- struct{}{}:
		default:
		}
	}
}

func (p *fakePin) press()   { p.set(gpio.Low) }
func (p *fakePin) release() { p.set(gpio.High) }

// bounce toggles the pin every 10 ms, n times, starting with level first.
func (p *fakePin) bounce(first gpio.Level, n int) {
	l := first
	for range n {
		p.set(l)
		time.Sleep(10 * time.Millisecond)
		l = !l
	}
}

// recIndicator records the button's feedback with times since the bubble's start.
type recIndicator struct {
	start time.Time
	mu    sync.Mutex
	evs   []string
}

func (r *recIndicator) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, fmt.Sprintf("%v %s", time.Since(r.start), s))
}

func (r *recIndicator) Override(p Pattern) {
	switch {
	case slices.Equal(p, PatternResetHeld):
		r.add("held")
	case slices.Equal(p, PatternResetTriggered):
		r.add("triggered")
	default:
		r.add(fmt.Sprint(p))
	}
}

func (r *recIndicator) ClearOverride() { r.add("clear") }

func (r *recIndicator) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// buttonRig is a Button on a fakePin with its resets counted, running until
// the test ends.
type buttonRig struct {
	pin    *fakePin
	light  *recIndicator
	mu     sync.Mutex
	resets []time.Duration
	log    bytes.Buffer
}

func (r *buttonRig) resetTimes() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resets)
}

// startButton must run inside synctest.Test.
func startButton(t *testing.T, pin *fakePin) *buttonRig {
	t.Helper()
	start := time.Now()
	r := &buttonRig{pin: pin, light: &recIndicator{start: start}}
	var logMu sync.Mutex
	b := NewButton(pin, ButtonConfig{
		Pin:   "GPIO17",
		Light: r.light,
		OnReset: func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resets = append(r.resets, time.Since(start))
		},
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, w: &r.log}, nil)),
	})
	if !b.Enabled() {
		t.Fatalf("NewButton: disabled; log:\n%s", r.log.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		b.Run(ctx)
		close(done)
	}()
	synctest.Wait() // Run has read the pin
	t.Cleanup(func() {
		cancel()
		<-done
		logMu.Lock()
		t.Logf("button log:\n%s", r.log.String())
		logMu.Unlock()
	})
	return r
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func checkResets(t *testing.T, r *buttonRig, want ...time.Duration) {
	t.Helper()
	synctest.Wait()
	if got := r.resetTimes(); !slices.Equal(got, want) {
		t.Errorf("resets at %v, want %v", got, want)
	}
}

func checkFeedback(t *testing.T, r *buttonRig, want ...string) {
	t.Helper()
	synctest.Wait()
	if got := r.light.events(); !slices.Equal(got, want) {
		t.Errorf("feedback:\n got %q\nwant %q", got, want)
	}
}

func TestButtonHeld10sResetsOnce(t *testing.T) {
	for _, tt := range []struct {
		mode    string
		latency time.Duration // from a change to the button seeing it
	}{
		{"edges", 0},
		{"polling", 25 * time.Millisecond}, // pressed at 1.025 s, sampled at 1.05 s
	} {
		t.Run(tt.mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pin := newFakePin(gpio.High)
				pin.noEdges = tt.mode == "polling"
				r := startButton(t, pin)
				if pin.pull != gpio.PullUp {
					t.Errorf("pull = %v, want %v", pin.pull, gpio.PullUp)
				}

				// Times are off the button's 1 s and 50 ms grids so that no
				// step of the test coincides with one of the button's.
				time.Sleep(ms(1025))
				pin.press()
				pressedAt := ms(1025) + tt.latency
				time.Sleep(ms(9990)) // 11.015 s
				checkResets(t, r)
				time.Sleep(ms(60)) // 11.075 s
				checkResets(t, r, pressedAt+10*time.Second)

				time.Sleep(30 * time.Second) // still held: no second reset
				pin.release()                // 41.075 s
				time.Sleep(time.Second)
				checkResets(t, r, pressedAt+10*time.Second)
				releasedAt := ms(41075) + tt.latency // polling: seen at 41.1 s
				checkFeedback(t, r,
					fmt.Sprintf("%v held", pressedAt+3*time.Second),       // fast blink after 3 s
					fmt.Sprintf("%v triggered", pressedAt+10*time.Second), // dark at 10 s
					fmt.Sprintf("%v clear", releasedAt+ms(50)))            // released, after the debounce
			})
		})
	}
}

func TestButtonReleasedAt9sDoesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := newFakePin(gpio.High)
		r := startButton(t, pin)
		pin.press()
		time.Sleep(ms(9025))
		pin.release()
		time.Sleep(time.Minute)
		checkResets(t, r)
		checkFeedback(t, r, "3s held", "9.075s clear")
		if !strings.Contains(r.log.String(), "released before factory reset") {
			t.Errorf("release not logged")
		}

		// A new press starts from zero: two presses of 6.5 s never add up.
		pin.press()
		time.Sleep(ms(6500))
		pin.release()
		time.Sleep(ms(100))
		pin.press()
		time.Sleep(ms(6500))
		pin.release()
		time.Sleep(time.Second)
		checkResets(t, r)
	})
}

func TestButtonShortPressNoFeedback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := newFakePin(gpio.High)
		r := startButton(t, pin)
		pin.press()
		time.Sleep(2 * time.Second)
		pin.release()
		time.Sleep(20 * time.Second)
		checkResets(t, r)
		checkFeedback(t, r)
	})
}

func TestButtonBouncing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := newFakePin(gpio.High)
		r := startButton(t, pin)

		// Noise: 10 ms glitches every second for a minute never count as a press.
		for range 60 {
			pin.bounce(gpio.Low, 2)
			time.Sleep(time.Second - 20*time.Millisecond)
		}
		checkResets(t, r)
		checkFeedback(t, r)

		// A bouncy press at 60 s, with a bouncy contact mid-hold and a
		// bouncy release after the reset: one reset, timed from the first
		// contact.
		pin.bounce(gpio.Low, 5) // low, high, low, high, low: held from here
		time.Sleep(5*time.Second - 50*time.Millisecond)
		pin.bounce(gpio.High, 3) // 65 s: high, low, high...
		pin.press()              // ...and held again within the debounce time
		time.Sleep(5 * time.Second)
		checkResets(t, r, 70*time.Second)
		pin.bounce(gpio.High, 4) // release with bounce: high, low, high, low
		pin.release()
		time.Sleep(time.Second)
		checkResets(t, r, 70*time.Second)
		checkFeedback(t, r, "1m3s held", "1m10s triggered", "1m10.08s clear")
	})
}

func TestButtonPressedAtStartIsNotArmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := newFakePin(gpio.Low) // stuck low, or held while booting
		r := startButton(t, pin)
		time.Sleep(time.Minute)
		checkResets(t, r)
		checkFeedback(t, r)
		if !strings.Contains(r.log.String(), "reads pressed at start") {
			t.Errorf("stuck pin not logged")
		}
		pin.release()
		time.Sleep(time.Second)
		pin.press()
		time.Sleep(11 * time.Second)
		checkResets(t, r, 71*time.Second)
	})
}

func TestButtonStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := newFakePin(gpio.High)
		light := &recIndicator{start: time.Now()}
		b := NewButton(pin, ButtonConfig{Pin: "GPIO17", Light: light})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { b.Run(ctx); close(done) }()
		synctest.Wait()
		pin.press()
		time.Sleep(ms(5500))
		cancel()
		<-done
		// The fast blink must not outlive the watcher, which notices the
		// end of its context within edgeWait.
		if got, want := light.events(), []string{"3s held", "6s clear"}; !slices.Equal(got, want) {
			t.Errorf("feedback = %q, want %q", got, want)
		}
	})
}

// The button's feedback as the LED shows it.
func TestButtonLightFeedback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		led := newRecLED()
		l, stop := startLight(t, led)
		defer stop()
		l.SetState(StateOnlineDirect) // steady on
		pin := newFakePin(gpio.High)
		b := NewButton(pin, ButtonConfig{Pin: "GPIO17", Light: l})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { b.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		synctest.Wait()

		pin.press()
		time.Sleep(ms(3525))
		pin.release()
		time.Sleep(time.Second)
		checkEvents(t, led.events(), []event{
			{0, true},
			{ms(3100), false}, {ms(3200), true}, {ms(3300), false}, {ms(3400), true}, {ms(3500), false},
			{ms(3575), true}, // released: back to steady on
		})
	})
}

func TestOpenButtonDisabled(t *testing.T) {
	defer func(f func(string) (Pin, error)) { lookupPin = f }(lookupPin)
	lookupPin = func(name string) (Pin, error) {
		if name == "GPIO17" {
			return newFakePin(gpio.High), nil
		}
		return nil, fmt.Errorf("pin %s: %w", name, ErrNoPin)
	}
	rpi := Board{Model: "Raspberry Pi 4 Model B Rev 1.5", Kind: KindRPi4}
	tests := []struct {
		name    string
		board   Board
		cfg     ButtonConfig
		wantLog string
	}{
		{"no pin configured", rpi, ButtonConfig{}, "no pin configured"},
		{"x86", Board{Kind: KindX86}, ButtonConfig{Pin: "GPIO17"}, "board has no GPIO"},
		{"qemu", Board{Kind: KindQEMU}, ButtonConfig{Pin: "GPIO17"}, "board has no GPIO"},
		{"unknown board", Board{Kind: KindUnknown}, ButtonConfig{Pin: "GPIO17"}, "board has no GPIO"},
		{"missing pin", rpi, ButtonConfig{Pin: "GPIO99"}, "pin GPIO99: " + ErrNoPin.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.cfg.Logger = logTo(&buf)
			tt.cfg.OnReset = func() { t.Error("OnReset called") }
			b := OpenButton(tt.board, tt.cfg)
			if b.Enabled() {
				t.Fatalf("Enabled() = true, want false")
			}
			if got := buf.String(); !strings.Contains(got, tt.wantLog) || !strings.Contains(got, "factory reset button disabled") {
				t.Errorf("log = %q, want a line with %q", got, tt.wantLog)
			}
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
				defer cancel()
				b.Run(ctx) // returns when ctx ends
			})
		})
	}

	t.Run("pi with pin", func(t *testing.T) {
		if b := OpenButton(rpi, ButtonConfig{Pin: "GPIO17"}); !b.Enabled() {
			t.Errorf("Enabled() = false, want true")
		}
	})
}

func TestNewButtonPinFails(t *testing.T) {
	pin := newFakePin(gpio.High)
	pin.inErr = errors.New("permission denied")
	var buf bytes.Buffer
	b := NewButton(pin, ButtonConfig{Pin: "GPIO17", Logger: logTo(&buf)})
	if b.Enabled() {
		t.Errorf("Enabled() = true, want false")
	}
	if got := buf.String(); !strings.Contains(got, "set GPIO17 as input with pull-up: permission denied") {
		t.Errorf("log = %q, want the cause", got)
	}
}
