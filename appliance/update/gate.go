package update

import (
	"fmt"
	"log/slog"
	"time"
)

// GateOptions configure BeginTestBoot.
type GateOptions struct {
	Dir    string // default DefaultDir
	Disk   *Disk  // nil: FindDisk()
	Logger *slog.Logger
	// Sleep waits (default time.Sleep); Reboot restarts the machine.
	Sleep  func(time.Duration)
	Reboot func() error
}

// BeginTestBoot is the init's half of the health gate, called before any
// service starts. At the start of the test boot of an update (its
// partition runs, not yet committed) it selects the old version's boot
// slot again: any start after this one (a crash, a hang's reset, a power
// cut, the failure's reboot) returns to the old kernel and root, and only
// the device service's commit selects the new ones. It returns the
// deadline's watcher, to run meanwhile: it waits out the update's health
// timeout and, when the device service has not committed the update by
// then (it crashed, exits at start, hangs, or its checks never passed),
// records why and reboots. Outside a test boot the watcher returns at
// once.
func BeginTestBoot(opts GateOptions) (watch func() error, err error) {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sleep == nil {
		opts.Sleep = time.Sleep
	}
	none := func() error { return nil }
	disk := opts.Disk
	if disk == nil {
		d, err := FindDisk()
		if err != nil {
			return none, err
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
		return st, true, nil
	}
	selectOld := func() error {
		return u.withBoot(true, func(v bootVolume) error { return selectRoot(v, disk.Inactive()) })
	}
	// What the console shows at every start (the QEMU tests look for it).
	var cfg bootConfig
	if err := u.withBoot(false, func(v bootVolume) (err error) { cfg, err = readBootConfig(v); return err }); err != nil {
		opts.Logger.Error("boot slots", "running", disk.Running, "err", err)
	} else {
		opts.Logger.Info("boot slots", "running", disk.Running, "selected", cfg.slot)
	}
	st, ok, err := testing()
	if err != nil || !ok {
		return none, err
	}
	if err := selectOld(); err != nil {
		// The test goes on: the device service's Fail selects the old
		// slot again before its reboot.
		opts.Logger.Error("test boot: the old version could not be selected for the next start", "err", err)
	} else {
		opts.Logger.Info("test boot: the next start returns to the old version unless this one commits", "partition", disk.Inactive())
	}
	return func() error {
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
		if err := selectOld(); err != nil {
			opts.Logger.Error("test boot: the old version could not be selected", "err", err)
		}
		opts.Logger.Warn("test boot failed; rebooting into the old version", "reason", st.Pending.Failure)
		return opts.Reboot()
	}, nil
}
