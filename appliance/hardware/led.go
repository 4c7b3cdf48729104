package hardware

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
)

// LED is a light that can be switched on and off.
type LED interface {
	Set(on bool) error
}

// NopLED is the LED of a board without one: Set does nothing.
type NopLED struct{}

// Set implements LED.
func (NopLED) Set(bool) error { return nil }

// LEDConfig configures OpenLED. The zero value opens the Pi's activity LED.
type LEDConfig struct {
	// Dir is the kernel's LED class directory; "" means /sys/class/leds.
	Dir string
	// Names are the LEDs tried in order; nil means "ACT" (current kernels,
	// Pi 3 to 5 and Zero 2 W), then "led0" (older kernels).
	Names []string
	// Logger gets one line about which LED is used or why none is; nil
	// discards.
	Logger *slog.Logger
}

var defaultLEDNames = []string{"ACT", "led0"}

// OpenLED returns the status LED of board b: the first of cfg.Names found
// in the LED class, with its trigger set to "none" so that only we drive it.
// On x86 and QEMU, or when no such LED exists or it cannot be taken over, it
// logs why and returns NopLED{}.
func OpenLED(b Board, cfg LEDConfig) LED {
	log := loggerOrDiscard(cfg.Logger)
	if b.virtual() {
		log.Info("status LED: none on this board, status light disabled", "board", b.Kind)
		return NopLED{}
	}
	dir := cfg.Dir
	if dir == "" {
		dir = "/sys/class/leds"
	}
	names := cfg.Names
	if names == nil {
		names = defaultLEDNames
	}
	for _, name := range names {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(filepath.Join(p, "brightness")); err != nil {
			continue
		}
		led, err := openSysfsLED(p)
		if err != nil {
			log.Warn("status LED: cannot take over, status light disabled", "err", err)
			return NopLED{}
		}
		log.Info("status LED: using LED class", "led", p, "board", b.Kind)
		return led
	}
	log.Info("status LED: not found, status light disabled", "dir", dir, "names", names, "board", b.Kind)
	return NopLED{}
}

// SysfsLED is an LED of the kernel's LED class (/sys/class/leds/NAME).
type SysfsLED struct {
	dir string
	on  []byte // max_brightness, or "1" if unreadable
}

func openSysfsLED(dir string) (*SysfsLED, error) {
	// Without this the kernel's default trigger (mmc0 on the Pi: SD card
	// activity) keeps switching the LED behind our back.
	if err := writeFile(filepath.Join(dir, "trigger"), []byte("none")); err != nil {
		return nil, fmt.Errorf("set trigger of %s: %w", dir, err)
	}
	on := []byte("1")
	if b, err := os.ReadFile(filepath.Join(dir, "max_brightness")); err == nil {
		if v, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && v > 0 {
			on = []byte(strconv.Itoa(v))
		}
	}
	return &SysfsLED{dir: dir, on: on}, nil
}

// Set implements LED.
func (l *SysfsLED) Set(on bool) error {
	v := []byte("0")
	if on {
		v = l.on
	}
	if err := writeFile(filepath.Join(l.dir, "brightness"), v); err != nil {
		return fmt.Errorf("set LED %s: %w", l.dir, err)
	}
	return nil
}

// String returns the LED's directory.
func (l *SysfsLED) String() string { return l.dir }

// writeFile writes a sysfs attribute. It never creates the file: a missing
// attribute is an error, not a stray file. O_TRUNC is a no-op on sysfs and
// keeps a test's plain file holding just the last value.
func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err1 := f.Close(); err == nil {
		err = err1
	}
	return err
}

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
