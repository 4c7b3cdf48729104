//go:build linux

package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/image/flash"
)

func init() {
	register("flash", "write an appliance image to an SD card or disk", runFlash)
}

const flashUsage = `usage: pc2 flash --image pc2.img --device /dev/sdX [--yes] [--force]`

// errNotConfirmed is returned when the user does not type yes.
var errNotConfirmed = errors.New("flash: not confirmed; nothing was written")

func runFlash(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("flash", env)
	image := fs.String("image", "", "appliance image `file` (from pc2 image build)")
	device := fs.String("device", "", "target disk (/dev/sdX, /dev/mmcblkN) or `file`")
	yes := fs.Bool("yes", false, "do not ask before overwriting")
	force := fs.Bool("force", false, "write even to a partition, a mounted or system disk, or one smaller than the image")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *image == "" || *device == "" {
		return usageErr("%s", flashUsage)
	}
	opts := flash.Options{Image: *image, Device: *device, Force: *force, Logger: env.logger()}

	t, err := flash.Preflight(opts)
	if t != nil {
		fmt.Fprintln(env.Stderr, t)
	}
	if err != nil {
		return forceHint(err)
	}
	if !*yes {
		fmt.Fprintf(env.Stderr, "type yes to overwrite %s: ", *device)
		if !confirmed(env.Stdin) {
			return errNotConfirmed
		}
	}

	tty := writesToTerminal(env.Stderr)
	opts.Progress = newProgressBar(env.Stderr, "writing", tty, time.Now).update
	opts.VerifyProgress = newProgressBar(env.Stderr, "verifying", tty, time.Now).update
	start := time.Now()
	res, err := flash.Flash(ctx, opts)
	if err != nil {
		return forceHint(err)
	}
	msg := fmt.Sprintf("wrote %s to %s in %s", mibs(res.Written), *device, roundDuration(res.WriteTime))
	if res.Zeroed > 0 {
		msg += fmt.Sprintf(" (and zeroed %s, by %s)", mibs(res.Zeroed), res.ZeroMethod)
	}
	fmt.Fprintln(env.Stderr, msg)
	if res.Clipped > 0 {
		fmt.Fprintf(env.Stderr, "warning: the last %s of the image did not fit on %s\n", mibs(res.Clipped), *device)
	}
	fmt.Fprintf(env.Stderr, "verified %s in %s\n", mibs(res.Verified), roundDuration(time.Since(start)))
	return nil
}

// forceHint points at --force for the refusals it overrides.
func forceHint(err error) error {
	for _, e := range []error{flash.ErrInUse, flash.ErrRootDisk, flash.ErrTooSmall, flash.ErrPartition} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w; --force writes anyway", err)
		}
	}
	return err
}

func confirmed(r io.Reader) bool {
	if r == nil {
		return false
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	return strings.TrimSpace(line) == "yes"
}

// writesToTerminal is true for a terminal (TCGETS works), not merely a
// character device such as /dev/null.
func writesToTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func mibs(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// progressBar draws done/total on a terminal line, redrawn at most five
// times a second, or prints a plain line every few seconds to a log.
type progressBar struct {
	w     io.Writer
	label string
	tty   bool
	now   func() time.Time
	every time.Duration

	start, last time.Time
	base        int64 // done at start
	finished    bool
}

func newProgressBar(w io.Writer, label string, tty bool, now func() time.Time) *progressBar {
	every := 2 * time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	return &progressBar{w: w, label: label, tty: tty, now: now, every: every}
}

func (p *progressBar) update(done, total int64) {
	t := p.now()
	if p.start.IsZero() {
		p.start, p.base = t, done
	}
	final := done >= total
	if p.finished || (!final && t.Sub(p.last) < p.every) {
		return
	}
	p.last = t
	p.finished = final
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	rate := 0.0
	if el := t.Sub(p.start).Seconds(); el > 0 {
		rate = float64(done-p.base) / (1 << 20) / el
	}
	stats := fmt.Sprintf("%3.0f%% %6.1f/%.1f MiB %6.1f MiB/s", pct, float64(done)/(1<<20), float64(total)/(1<<20), rate)
	if !p.tty {
		fmt.Fprintf(p.w, "%s: %s\n", p.label, stats)
		return
	}
	const width = 30
	n := int(pct / 100 * width)
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	fmt.Fprintf(p.w, "\r%-9s [%s] %s", p.label, bar, stats)
	if final {
		fmt.Fprintln(p.w)
	}
}
