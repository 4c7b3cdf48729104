package hardware

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"
)

// State is the node state the status light shows. The zero value is
// StateBooting, so a new Light shows "booting" until told otherwise.
type State int

// The node states, in the order a node usually goes through them.
const (
	StateBooting State = iota
	StateOnlineDirect
	StateOnlineRelayed
	StateError
)

var stateNames = [...]string{"booting", "online-direct", "online-relayed", "error"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Phase is one step of a Pattern: the LED on or off for Duration.
type Phase struct {
	On       bool
	Duration time.Duration
}

// Pattern is a repeating sequence of phases. A pattern of one phase holds
// that level until the pattern changes.
type Pattern []Phase

// The patterns of the package documentation's table.
var (
	PatternBooting       = Pattern{{true, 500 * time.Millisecond}, {false, 500 * time.Millisecond}}
	PatternOnlineDirect  = Pattern{{true, 0}}
	PatternOnlineRelayed = Pattern{{true, 1800 * time.Millisecond}, {false, 200 * time.Millisecond}}
	PatternError         = Pattern{
		{true, 150 * time.Millisecond}, {false, 150 * time.Millisecond},
		{true, 150 * time.Millisecond}, {false, 150 * time.Millisecond},
		{true, 150 * time.Millisecond}, {false, 1250 * time.Millisecond},
	}
	// PatternResetHeld is the reset button's feedback once held 3 s.
	PatternResetHeld = Pattern{{true, 100 * time.Millisecond}, {false, 100 * time.Millisecond}}
	// PatternResetTriggered shows that the reset was triggered: dark.
	PatternResetTriggered = Pattern{{false, 0}}
)

// PatternFor returns the pattern that shows s. Unknown states show as
// errors: a bug must not look like a healthy node.
func PatternFor(s State) Pattern {
	switch s {
	case StateBooting:
		return PatternBooting
	case StateOnlineDirect:
		return PatternOnlineDirect
	case StateOnlineRelayed:
		return PatternOnlineRelayed
	default:
		return PatternError
	}
}

// LightConfig configures NewLight. The zero value is usable.
type LightConfig struct {
	// Logger gets LED write failures; nil discards.
	Logger *slog.Logger
	// Clock times the patterns; nil is the real clock.
	Clock Clock
}

// Light shows the node's State on an LED. Create it with NewLight, change
// what it shows with SetState (and Override), and call Run once.
type Light struct {
	led   LED
	log   *slog.Logger
	clock Clock
	wake  chan struct{} // buffered 1: "the pattern changed"

	mu       sync.Mutex
	state    State
	override Pattern // non-nil while set
}

// NewLight returns a Light that drives led, showing StateBooting.
func NewLight(led LED, cfg LightConfig) *Light {
	if led == nil {
		led = NopLED{}
	}
	return &Light{
		led:   led,
		log:   loggerOrDiscard(cfg.Logger),
		clock: clockOrReal(cfg.Clock),
		wake:  make(chan struct{}, 1),
	}
}

// SetState makes the light show s, at once. Setting the state already shown
// does not restart its pattern.
func (l *Light) SetState(s State) {
	l.mu.Lock()
	changed := l.state != s
	l.state = s
	visible := changed && l.override == nil
	l.mu.Unlock()
	if visible {
		l.poke()
	}
}

// State returns the state last set.
func (l *Light) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Override shows p instead of the state's pattern until ClearOverride; the
// reset button uses it for its feedback. An empty p is PatternResetTriggered
// (dark).
func (l *Light) Override(p Pattern) {
	if len(p) == 0 {
		p = PatternResetTriggered
	}
	l.mu.Lock()
	changed := l.override == nil || !slices.Equal(l.override, p)
	l.override = p
	l.mu.Unlock()
	if changed {
		l.poke()
	}
}

// ClearOverride returns to showing the state's pattern.
func (l *Light) ClearOverride() {
	l.mu.Lock()
	changed := l.override != nil
	l.override = nil
	l.mu.Unlock()
	if changed {
		l.poke()
	}
}

func (l *Light) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Light) pattern() Pattern {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.override != nil {
		return l.override
	}
	return PatternFor(l.state)
}

// Run drives the LED until ctx is done, then switches it off. Write errors
// are logged (once, and again when writes work again), never fatal.
func (l *Light) Run(ctx context.Context) {
	if _, ok := l.led.(NopLED); ok {
		<-ctx.Done()
		return
	}
	var (
		level   bool
		written bool // level is what the LED shows
		failing bool
	)
	set := func(on bool) {
		if written && level == on {
			return
		}
		err := l.led.Set(on)
		switch {
		case err != nil && !failing:
			l.log.Warn("status light: LED write failed", "err", err)
		case err == nil && failing:
			l.log.Info("status light: LED writes work again")
		}
		failing = err != nil
		level, written = on, err == nil
	}
	defer set(false)

	for {
		p := l.pattern()
		for i := 0; ; i = (i + 1) % len(p) {
			set(p[i].On)
			var tick <-chan time.Time
			var timer Timer
			if len(p) > 1 {
				timer = l.clock.NewTimer(p[i].Duration)
				tick = timer.C()
			}
			select {
			case <-ctx.Done():
				stopTimer(timer)
				return
			case <-l.wake:
				stopTimer(timer)
			case <-tick:
				continue
			}
			break // the pattern changed: start the new one
		}
	}
}

func stopTimer(t Timer) {
	if t != nil {
		t.Stop()
	}
}
