package update

import (
	"fmt"
	"log/slog"
	"time"
)

// GateOptions configure WatchTestBoot.
type GateOptions struct {
	Dir    string // default DefaultDir
	Disk   *Disk  // nil: FindDisk()
	Logger *slog.Logger
	// Sleep waits (default time.Sleep); Reboot restarts the machine.
	Sleep  func(time.Duration)
	Reboot func() error
}

// WatchTestBoot is the init's half of the health gate. During the test
// boot of an update it waits out the update's health timeout and, when
// the device service has not committed the update by then (it crashed,
// exits at start, hangs, or its checks never passed), records why and
// reboots: the boot configuration still names the old root, so the
// device comes back on the old version by itself. Outside a test boot
// it returns at once. It returns only when there is nothing to watch.
func WatchTestBoot(opts GateOptions) error {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sleep == nil {
		opts.Sleep = time.Sleep
	}
	disk := opts.Disk
	if disk == nil {
		d, err := FindDisk()
		if err != nil {
			return err
		}
		disk = d
	}
	s := &store{dir: opts.Dir}
	u := &Updater{disk: disk, store: s}
	testing := func() (*State, bool, error) {
		st, err := s.load()
		if err != nil || st.Pending == nil || st.Pending.Partition != disk.Running {
			return st, false, err
		}
		var cfg bootConfig
		if err := u.withBoot(false, func(v bootVolume) (err error) { cfg, err = readBootConfig(v); return err }); err != nil {
			return st, false, err
		}
		return st, cfg.partition != disk.Running, nil
	}
	st, ok, err := testing()
	if err != nil || !ok {
		return err
	}
	timeout := time.Duration(st.Pending.HealthTimeout).Round(time.Second)
	opts.Logger.Info("test boot of an update: the device service must pass its health check in time", "version", st.Pending.Version, "timeout", timeout)
	if st.Pending.Failure == "" {
		opts.Sleep(timeout)
		if st, ok, err = testing(); err != nil || !ok {
			return err
		}
	}
	if st.Pending.Failure == "" {
		reason := fmt.Sprintf("no health check passed within %s of the test boot", timeout)
		if line, n := s.lastExit(); n > 0 {
			reason += fmt.Sprintf("; the device service exited %d times, last: %s", n, line)
		}
		st.Pending.Failure = reason
		s.logf(time.Now(), "test boot of %s failed: %s; returning to partition %d", st.Pending.Version, reason, disk.Inactive())
		if err := s.save(st); err != nil {
			opts.Logger.Error("update: state not saved", "err", err)
		}
	}
	opts.Logger.Warn("test boot failed; rebooting into the old version", "reason", st.Pending.Failure)
	return opts.Reboot()
}
