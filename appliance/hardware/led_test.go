package hardware

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeLEDClass makes dir/<name>/{trigger,brightness,max_brightness} as the
// kernel's LED class has them.
func fakeLEDClass(t testing.TB, dir, name, maxBrightness string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{
		"trigger":    "none [mmc0] timer heartbeat\n",
		"brightness": "0\n",
	} {
		if err := os.WriteFile(filepath.Join(p, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if maxBrightness != "" {
		if err := os.WriteFile(filepath.Join(p, "max_brightness"), []byte(maxBrightness+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func readAttr(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func logTo(buf *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(buf, nil)) }

func TestOpenLEDSysfs(t *testing.T) {
	for _, tt := range []struct {
		name, ledName, max, wantOn string
	}{
		{"ACT", "ACT", "1", "1"},
		{"led0 on older kernels", "led0", "255", "255"},
		{"no max_brightness", "ACT", "", "1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := fakeLEDClass(t, dir, tt.ledName, tt.max)
			fakeLEDClass(t, dir, "PWR", "1") // must be left alone
			var buf bytes.Buffer
			led := OpenLED(Board{Kind: KindRPi4}, LEDConfig{Dir: dir, Logger: logTo(&buf)})
			if _, ok := led.(*SysfsLED); !ok {
				t.Fatalf("OpenLED = %T, want *SysfsLED; log:\n%s", led, buf.String())
			}
			if got := readAttr(t, filepath.Join(p, "trigger")); got != "none" {
				t.Errorf("trigger = %q, want %q", got, "none")
			}
			if err := led.Set(true); err != nil {
				t.Fatal(err)
			}
			if got := readAttr(t, filepath.Join(p, "brightness")); got != tt.wantOn {
				t.Errorf("brightness after Set(true) = %q, want %q", got, tt.wantOn)
			}
			if err := led.Set(false); err != nil {
				t.Fatal(err)
			}
			if got := readAttr(t, filepath.Join(p, "brightness")); got != "0" {
				t.Errorf("brightness after Set(false) = %q, want %q", got, "0")
			}
			if got := readAttr(t, filepath.Join(dir, "PWR", "trigger")); !strings.Contains(got, "[mmc0]") {
				t.Errorf("PWR trigger changed to %q", got)
			}
			if !strings.Contains(buf.String(), p) {
				t.Errorf("log does not name %s:\n%s", p, buf.String())
			}
		})
	}
}

func TestOpenLEDPrefersACT(t *testing.T) {
	dir := t.TempDir()
	act := fakeLEDClass(t, dir, "ACT", "1")
	fakeLEDClass(t, dir, "led0", "1")
	led := OpenLED(Board{Kind: KindRPi5}, LEDConfig{Dir: dir})
	if s, ok := led.(*SysfsLED); !ok || s.String() != act {
		t.Errorf("OpenLED = %v, want %s", led, act)
	}
}

func TestOpenLEDAbsent(t *testing.T) {
	dir := t.TempDir()
	// Present but a board without a status LED: not even looked at.
	fakeLEDClass(t, dir, "ACT", "1")
	tests := []struct {
		name    string
		board   Board
		dir     string
		wantLog string
	}{
		{"x86", Board{Kind: KindX86}, dir, "none on this board"},
		{"qemu", Board{Kind: KindQEMU}, dir, "none on this board"},
		{"pi without LED class", Board{Kind: KindRPi4}, t.TempDir(), "not found"},
		{"missing dir", Board{Kind: KindRPiZero2}, filepath.Join(dir, "nope"), "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			led := OpenLED(tt.board, LEDConfig{Dir: tt.dir, Logger: logTo(&buf)})
			if _, ok := led.(NopLED); !ok {
				t.Fatalf("OpenLED = %T, want NopLED", led)
			}
			if err := led.Set(true); err != nil {
				t.Errorf("NopLED.Set = %v, want nil", err)
			}
			if got := buf.String(); !strings.Contains(got, tt.wantLog) || !strings.Contains(got, "status light disabled") {
				t.Errorf("log = %q, want a line with %q", got, tt.wantLog)
			}
		})
	}
	if got := readAttr(t, filepath.Join(dir, "ACT", "trigger")); !strings.Contains(got, "[mmc0]") {
		t.Errorf("x86 touched the LED: trigger = %q", got)
	}
}

func TestOpenLEDCannotTakeOver(t *testing.T) {
	dir := t.TempDir()
	p := fakeLEDClass(t, dir, "ACT", "1")
	if err := os.Remove(filepath.Join(p, "trigger")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	led := OpenLED(Board{Kind: KindRPi3}, LEDConfig{Dir: dir, Logger: logTo(&buf)})
	if _, ok := led.(NopLED); !ok {
		t.Fatalf("OpenLED = %T, want NopLED", led)
	}
	if !strings.Contains(buf.String(), "set trigger of "+p) {
		t.Errorf("log lacks the failing path:\n%s", buf.String())
	}
	if _, err := os.Stat(filepath.Join(p, "trigger")); err == nil {
		t.Errorf("OpenLED created a trigger file")
	}
}

func TestSysfsLEDSetError(t *testing.T) {
	dir := t.TempDir()
	p := fakeLEDClass(t, dir, "ACT", "1")
	led := OpenLED(Board{Kind: KindRPi4}, LEDConfig{Dir: dir})
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	err := led.Set(true)
	if err == nil || !strings.Contains(err.Error(), "set LED "+p) {
		t.Errorf("Set on a removed LED = %v, want an error naming %s", err, p)
	}
}
