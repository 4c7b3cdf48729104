package hardware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// Pin is the part of periph's gpio.PinIn that the button needs; every pin
// gpioreg returns satisfies it, and tests pass a fake.
type Pin interface {
	In(pull gpio.Pull, edge gpio.Edge) error
	Read() gpio.Level
	WaitForEdge(timeout time.Duration) bool
}

// Indicator shows the button's feedback; *Light is one.
type Indicator interface {
	Override(Pattern)
	ClearOverride()
}

// ErrNoPin is wrapped when the configured pin does not exist on the board.
var ErrNoPin = errors.New("hardware: no such GPIO pin")

// ButtonConfig configures the factory reset button. The zero value means
// "no button".
type ButtonConfig struct {
	// Pin is the periph name of the GPIO pin, e.g. "GPIO17"; "" means the
	// appliance has no reset button. The button connects the pin to ground;
	// the pin's internal pull-up keeps it high otherwise.
	Pin string
	// OnReset is called, from Run's goroutine, once the button has been held
	// for Hold. The caller wipes the perm partition and reboots. Holding on
	// does not call it again; a new press after release can.
	OnReset func()
	// Light gets the feedback: PatternResetHeld from Feedback on,
	// PatternResetTriggered from Hold until release. nil gives none.
	Light Indicator
	// Hold is how long the button must be held; 0 means 10 s.
	Hold time.Duration
	// Feedback is when the light starts its fast blink; 0 means 3 s.
	Feedback time.Duration
	// Debounce is how long a level must last to count; 0 means 50 ms.
	Debounce time.Duration
	// Poll is the sampling interval when the pin has no edge detection;
	// 0 means 50 ms.
	Poll time.Duration
	// Logger gets presses, releases, the reset and why the button is
	// disabled; nil discards.
	Logger *slog.Logger
	// Clock times holds and debouncing; nil is the real clock. The pin's
	// WaitForEdge timeout is always in real time, so tests that use edges
	// run inside a testing/synctest bubble.
	Clock Clock
}

// Button watches the factory reset button. A Button whose pin is missing is
// disabled: Run just waits for its context.
type Button struct {
	pin   Pin
	name  string
	edges bool // WaitForEdge works; otherwise poll
	cfg   ButtonConfig
	log   *slog.Logger
	clock Clock
}

// edgeWait bounds one WaitForEdge call, which cannot watch a context: Run
// returns at most this long after its context is done.
const edgeWait = time.Second

// lookupPin finds a pin through periph; tests replace it.
var lookupPin = func(name string) (Pin, error) {
	if err := periphInit(); err != nil {
		return nil, fmt.Errorf("init periph for pin %s: %w", name, err)
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("pin %s: %w", name, ErrNoPin)
	}
	return p, nil
}

// periphInit loads periph's host drivers once per process. Only boards
// with GPIO call it: on a PC it would probe for hardware that is not there.
var periphInit = sync.OnceValue(func() error {
	_, err := host.Init()
	return err
})

// OpenButton returns the reset button configured for board b. Without a
// configured pin, on boards without GPIO (x86, QEMU, unsupported boards) or
// when the pin does not exist or cannot be set up, it logs why and returns
// a disabled Button.
func OpenButton(b Board, cfg ButtonConfig) *Button {
	log := loggerOrDiscard(cfg.Logger)
	if cfg.Pin == "" {
		log.Info("reset button: no pin configured, factory reset button disabled")
		return disabledButton(cfg)
	}
	if !b.IsRaspberryPi() {
		log.Info("reset button: board has no GPIO, factory reset button disabled", "pin", cfg.Pin, "board", b.Kind)
		return disabledButton(cfg)
	}
	pin, err := lookupPin(cfg.Pin)
	if err != nil {
		log.Warn("reset button: pin not available, factory reset button disabled", "pin", cfg.Pin, "err", err)
		return disabledButton(cfg)
	}
	return NewButton(pin, cfg)
}

// NewButton returns a Button on pin, set up as an input with pull-up and
// edge detection (or polling, if the pin has no edge detection). If the pin
// cannot be set up as an input, it logs why and returns a disabled Button.
func NewButton(pin Pin, cfg ButtonConfig) *Button {
	b := disabledButton(cfg)
	if b.name == "" {
		b.name = "button"
	}
	if err := pin.In(gpio.PullUp, gpio.BothEdges); err == nil {
		b.edges = true
	} else if err2 := pin.In(gpio.PullUp, gpio.NoEdge); err2 == nil {
		b.log.Info("reset button: no edge detection, polling", "pin", b.name, "poll", b.cfg.Poll, "err", err)
	} else {
		b.log.Warn("reset button: cannot set up pin as input, factory reset button disabled",
			"pin", b.name, "err", fmt.Errorf("set %s as input with pull-up: %w", b.name, err2))
		return b
	}
	b.pin = pin
	b.log.Info("reset button: watching", "pin", b.name, "hold", b.cfg.Hold)
	return b
}

func disabledButton(cfg ButtonConfig) *Button {
	if cfg.Hold <= 0 {
		cfg.Hold = 10 * time.Second
	}
	if cfg.Feedback <= 0 {
		cfg.Feedback = 3 * time.Second
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 50 * time.Millisecond
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 50 * time.Millisecond
	}
	return &Button{
		name:  cfg.Pin,
		cfg:   cfg,
		log:   loggerOrDiscard(cfg.Logger),
		clock: clockOrReal(cfg.Clock),
	}
}

// Enabled reports whether the button is watched at all.
func (b *Button) Enabled() bool { return b.pin != nil }

// Run watches the button until ctx is done. With edge detection it notices
// the end of ctx within a second (a WaitForEdge cannot be cancelled).
func (b *Button) Run(ctx context.Context) {
	if !b.Enabled() {
		<-ctx.Done()
		return
	}
	// A pin that is low from the start may be stuck or miswired rather than
	// held: arm only once it has been seen released.
	if b.pressed() {
		b.log.Warn("reset button: reads pressed at start, ignored until released", "pin", b.name)
		if _, ok := b.waitLevel(ctx, false); !ok {
			return
		}
	}
	for {
		start, ok := b.waitLevel(ctx, true)
		if !ok {
			return
		}
		if !b.hold(ctx, start) {
			return
		}
	}
}

// hold follows one press that began at start until the button is released;
// false means ctx is done.
func (b *Button) hold(ctx context.Context, start time.Time) bool {
	b.log.Info("reset button: pressed", "pin", b.name)
	fed := false
	defer func() {
		if fed {
			b.feedback(nil)
		}
	}()
	for {
		held := b.clock.Now().Sub(start)
		if held >= b.cfg.Hold {
			b.log.Warn("reset button: held, factory reset", "pin", b.name, "held", held)
			fed = true
			b.feedback(PatternResetTriggered)
			if b.cfg.OnReset != nil {
				b.cfg.OnReset()
			}
			_, ok := b.waitLevel(ctx, false)
			return ok
		}
		next := b.cfg.Feedback
		if held >= b.cfg.Feedback {
			if !fed {
				fed = true
				b.feedback(PatternResetHeld)
				b.log.Info("reset button: keep holding for a factory reset", "pin", b.name, "left", b.cfg.Hold-held)
			}
			next = b.cfg.Hold
		}
		if !b.waitChange(ctx, next-held) {
			return false
		}
		if b.pressed() {
			continue
		}
		// Released, or a bounce: released only if it stays so.
		if !b.sleep(ctx, b.cfg.Debounce) {
			return false
		}
		if !b.pressed() {
			b.log.Info("reset button: released before factory reset", "pin", b.name, "held", b.clock.Now().Sub(start))
			return true
		}
	}
}

func (b *Button) feedback(p Pattern) {
	if b.cfg.Light == nil {
		return
	}
	if p == nil {
		b.cfg.Light.ClearOverride()
		return
	}
	b.cfg.Light.Override(p)
}

// pressed reads the pin: the button is active low.
func (b *Button) pressed() bool { return b.pin.Read() == gpio.Low }

// waitLevel waits until the button is pressed (or released, per want) for
// at least the debounce time, and returns when that level was first read;
// false means ctx is done.
func (b *Button) waitLevel(ctx context.Context, want bool) (time.Time, bool) {
	for {
		if b.pressed() == want {
			since := b.clock.Now()
			if !b.sleep(ctx, b.cfg.Debounce) {
				return time.Time{}, false
			}
			if b.pressed() == want {
				return since, true
			}
			continue
		}
		if !b.waitChange(ctx, edgeWait) {
			return time.Time{}, false
		}
	}
}

// waitChange waits at most d for the pin to change (with edge detection) or
// for one polling interval; false means ctx is done.
func (b *Button) waitChange(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		// WaitForEdge would read a negative timeout as "forever".
		return ctx.Err() == nil
	}
	if b.edges {
		b.pin.WaitForEdge(min(d, edgeWait))
		return ctx.Err() == nil
	}
	return b.sleep(ctx, min(d, b.cfg.Poll))
}

// sleep waits d on the clock; false means ctx is done.
func (b *Button) sleep(ctx context.Context, d time.Duration) bool {
	t := b.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
