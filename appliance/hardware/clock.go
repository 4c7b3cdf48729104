package hardware

import "time"

// Clock is the time source of the status light and the button. The zero
// Config uses the real clock; tests run the real clock inside a
// testing/synctest bubble, or pass their own.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer that the runners use.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

func clockOrReal(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}
