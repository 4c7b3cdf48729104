// Package device is the appliance's main service, `pc2 device`, which the
// init starts from the service table on every image. It reads the device
// settings (package settings: the boot partition, else the copy on perm),
// configures the network (package netconf; package wifi when the settings
// name a Wi-Fi network), drives the status light and
// the factory-reset button (package hardware), and runs the services of
// the settings' profile in this one process: the personal node, or the
// supernode.
//
// One process instead of one per service: the services share a Go runtime
// (one heap and one set of runtime threads, which matters on a 512 MB Pi
// Zero 2 W), the status light follows the node's state without IPC, and
// the settings are read once. gokrazy restarts the process when it exits;
// exit 125 (no settings at all) stops the restarts.
//
// The admin API on port 4200 (the personal node's; on a supernode the
// device serves it with a small /api/status of its own), guarded by the admin
// password of the settings (HTTP basic auth, user "admin", argon2id):
//
//	GET  /api/device         settings (secrets redacted), where they came
//	                         from, board, network and Wi-Fi state, every
//	                         process's resident memory
//	POST /api/device/reboot  reboots the device
//	GET  /api/device/logs    the log kept on perm (text, oldest first)
//	GET  /api/update, POST /api/update/check, POST /api/update
//	                         over-the-air updates (package updateapi)
//
// The personal cloud's dashboard has a settings page (settingspage.go):
// the owner's changes are checked, written to the boot partition and
// applied by a restart, a network change on trial until the owner keeps
// it.
//
// Over-the-air updates (updates.go): at start the device finishes the
// bookkeeping of an update that was being tested (update.Updater.Resume);
// during the test boot of a new version it runs the health gate and
// commits the version or returns to the old one; otherwise it pulls
// releases when the settings name an update server.
package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/appliance/growperm"
	"github.com/pc2/pc2/appliance/hardware"
	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/rootdisk"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/appliance/update/pull"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/services/announce"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/logfile"
	"github.com/pc2/pc2/services/netconf"
	"github.com/pc2/pc2/services/wifi"
)

// Options are what the caller injects.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Paths are where the settings are read (zero: the real device).
	Paths settings.Paths
	// Listener for the personal node's port; nil: its config's.
	Listener net.Listener
	// TURNPacketConn and TURNListener are the supernode profile's STUN/TURN
	// listeners; nil: UDP and TCP 3478.
	TURNPacketConn net.PacketConn
	TURNListener   net.Listener
	// Board; nil: hardware.Detect().
	Board *hardware.Board
	// Network configures and watches the network; nil: NetconfNetwork on
	// this host's network namespace.
	Network Network
	// WiFiRadio opens the Wi-Fi hardware; nil: the kernel's nl80211.
	WiFiRadio func() (wifi.Radio, error)
	// Console shows the owner the personal cloud's setup code (the
	// appliance's /dev/console); nil: only the log.
	Console io.Writer
	// PermDir is wiped by a factory reset (default "/perm").
	PermDir string
	// Reboot restarts the machine (default: sync and reboot(2)).
	Reboot func() error
	// ReleaseFile and KeysFile describe the running release and the
	// release keys it trusts (default manifest.ReleasePath,
	// manifest.KeysPath); without a release file, over-the-air updates
	// are off.
	ReleaseFile, KeysFile string
	// UpdateDisk is the disk updates are written to; nil:
	// update.FindDisk().
	UpdateDisk *update.Disk
	// Announce makes the device findable on the local network (mDNS and
	// DNS-SD); nil: announce.Run on the device itself (Paths.Disk
	// empty), elsewhere nothing.
	Announce func(context.Context, announce.Config) error
	// ClockSet says whether the wall clock can be trusted yet (nil: it is
	// after ClockFloor). Until then the node, the supernode and the
	// update checks wait: see personal.Options.ClockSet.
	ClockSet func() bool
	// GrowPerm grows the perm partition and its file system to the end of
	// the disk; nil: on the device itself (Paths.Disk empty) growperm on
	// the root file system's disk, elsewhere nothing.
	GrowPerm func(log *slog.Logger) (growperm.Result, error)
}

// ClockFloor is the earliest plausible wall clock: a clock before it was
// never set. Boards without a real-time clock (every Raspberry Pi) start
// at 1970 and keep it until gokrazy's NTP client sets it, or restores the
// time saved at the last clean shutdown (perm).
var ClockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// clockSet is the default Options.ClockSet.
func clockSet() bool { return time.Now().After(ClockFloor) }

// waitForClock returns when the clock is set (true) or ctx ends (false).
func (d *Device) waitForClock(ctx context.Context, what string) bool {
	if d.opts.ClockSet() {
		return true
	}
	d.log.Warn("waiting for the clock (NTP) before "+what, "now", time.Now())
	if !personal.WaitForClock(ctx, d.opts.ClockSet, 0) {
		return false
	}
	d.log.Info("clock set", "now", time.Now())
	return true
}

// PermStatus is what growing perm found at this boot (GET /api/device).
type PermStatus struct {
	DiskBytes int64 `json:"disk_bytes"`
	FSBytes   int64 `json:"fs_bytes,omitempty"`
	// Grown says this boot grew perm (or finished an earlier growth).
	Grown bool   `json:"grown"`
	Error string `json:"error,omitempty"`
}

// Network applies the network settings and keeps them applied.
type Network interface {
	// Run applies cfg (nil: DHCP on the first Ethernet interface), then
	// re-applies it after link changes until ctx ends, calling changed
	// after each (the tunnel reattaches at once).
	Run(ctx context.Context, cfg *netconf.Config, changed func()) error
	// Status describes the current state for the admin API.
	Status() NetworkStatus
}

// NetworkStatus is the network part of GET /api/device.
type NetworkStatus struct {
	Applied   time.Time `json:"applied,omitzero"`
	Changes   []string  `json:"changes,omitempty"` // of the last apply that changed something
	LastError string    `json:"last_error,omitempty"`
	// Leases are the DHCP leases held, by interface.
	Leases map[string]Lease `json:"leases,omitempty"`
}

// Lease is a DHCP lease in GET /api/device.
type Lease struct {
	Address string    `json:"address"`
	Router  string    `json:"router,omitempty"`
	DNS     []string  `json:"dns,omitempty"`
	Server  string    `json:"server,omitempty"`
	Expires time.Time `json:"expires"`
}

// Device is a running device service.
type Device struct {
	opts   Options
	log    *slog.Logger
	loaded *settings.Loaded
	board  hardware.Board
	light  *hardware.Light
	net    Network
	perm   *PermStatus     // growing perm at this boot (nil: not tried)
	logs   *logfile.Writer // the log on perm (nil: not writable)
	// engine asks the backup engine its version, once, when the admin
	// API is first asked (not at start: nothing waits for it there).
	engine     sync.Once
	engineName string
	wifi       wifi.State
	// node is the personal node once it runs.
	node atomic.Pointer[personal.Node]
	// snAddrs are the supernode's addresses once it listens.
	snAddrs atomic.Pointer[[]string]

	// updates is the updater; nil when updates are off (updatesOff
	// says why).
	updates    *update.Updater
	updatesOff string
	// puller is the link to the update server, when the settings name
	// one.
	puller atomic.Pointer[pull.Puller]

	resetOnce sync.Once
	// verify serialises admin password checks: each costs argon2id's
	// memory, and a flood must not take the device's RAM.
	verify sync.Mutex
	// guard limits admin password attempts per client address and
	// overall, as the owner's login is limited.
	guard *password.Guard
}

// Run runs the device until ctx ends.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.PermDir == "" {
		opts.PermDir = profile.PermDir
	}
	// The log is kept on perm too (rotated, 5 MiB at most), so that it
	// survives restarts and power cuts; the owner downloads it from the
	// dashboard, the operator from the admin API.
	logs, err := logfile.Open(filepath.Join(opts.PermDir, "pc2", "logs"), "device.log", 0, 0)
	if err != nil {
		log.Warn("logs kept in memory only", "err", err)
	} else {
		defer logs.Close()
		log = slog.New(slog.NewMultiHandler(log.Handler(), slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	}
	loaded, err := settings.Load(opts.Paths)
	if err != nil {
		return err
	}
	if loaded.Problem != nil {
		log.Warn("settings: using the copy on perm", "problem", loaded.Problem, "source", loaded.Source)
	}
	if err := loaded.KeepCopy(); err != nil {
		log.Warn("settings read, but no copy kept for when the boot partition has none", "err", err)
	}
	s := loaded.Settings
	if err := profile.Check(s); err != nil {
		return fmt.Errorf("settings from %s: %w", loaded.Source, err)
	}
	log.Info("device starting", "profile", s.Profile, "settings", loaded.Source, "version", opts.Version)
	grow := opts.GrowPerm
	if grow == nil && opts.Paths.Disk == "" {
		grow = growRootPerm
	}
	var perm *PermStatus
	if grow != nil {
		r, err := grow(log.With("service", "growperm"))
		perm = &PermStatus{DiskBytes: r.DiskBytes, FSBytes: r.FSBytes, Grown: r.Table || r.Kernel || r.FS}
		if err != nil {
			// The device works on the perm it has; the next boot tries again.
			log.Error("perm partition not grown to the end of the disk", "err", err)
			perm.Error = err.Error()
		}
	}

	d := &Device{opts: opts, log: log, loaded: loaded, net: opts.Network, perm: perm, logs: logs}
	if d.guard, err = password.NewGuard(nil, nil); err != nil {
		return err
	}
	if opts.Board != nil {
		d.board = *opts.Board
	} else {
		d.board = hardware.Detect()
	}
	if d.opts.PermDir == "" {
		d.opts.PermDir = profile.PermDir
	}
	if d.opts.Reboot == nil {
		d.opts.Reboot = reboot
	}
	if d.opts.ClockSet == nil {
		d.opts.ClockSet = clockSet
	}
	if d.opts.ReleaseFile == "" {
		d.opts.ReleaseFile = manifest.ReleasePath
	}
	if d.opts.KeysFile == "" {
		d.opts.KeysFile = manifest.KeysPath
	}
	if d.net == nil {
		host, _ := os.Hostname()
		d.net = &NetconfNetwork{Logger: log.With("service", "netconf"), StatePath: filepath.Join(d.opts.PermDir, "pc2", "netconf-state.json"),
			DHCPAlso: dhcpAlso(s), Hostname: host}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}

	hwLog := log.With("service", "hardware")
	d.light = hardware.NewLight(hardware.OpenLED(d.board, hardware.LEDConfig{Logger: hwLog}), hardware.LightConfig{Logger: hwLog})
	goRun(func() { d.light.Run(ctx) })
	button := hardware.OpenButton(d.board, hardware.ButtonConfig{Pin: s.ResetButton, Light: d.light, Logger: hwLog, OnReset: d.factoryReset})
	goRun(func() { button.Run(ctx) })

	d.startUpdates(ctx, s, goRun)
	keeper := d.newTrialKeeper()
	if count := keeper.start(); count != nil {
		goRun(func() { count(ctx) })
	}

	localURL := d.startAnnounce(ctx, goRun)

	goRun(func() {
		if err := d.net.Run(ctx, s.Network.Config(), d.networkChanged); err != nil && ctx.Err() == nil {
			log.Error("network configuration stopped", "err", err)
		}
	})
	if s.WiFi != nil {
		goRun(func() {
			err := wifi.Run(ctx, s.WiFi.Config(), wifi.Options{Logger: log.With("service", "wifi"), State: &d.wifi, Open: opts.WiFiRadio,
				Others: s.OtherWiFi()})
			if err != nil && ctx.Err() == nil {
				log.Error("wifi stopped", "err", err)
			}
		})
	}

	switch s.Profile {
	case profile.Personal:
		err = personal.Run(ctx, profile.NodeConfig(s, d.opts.PermDir), personal.Options{
			Logger:         log.With("service", "node"),
			Listener:       opts.Listener,
			Version:        opts.Version,
			AdminRoutes:    d.routes,
			Console:        d.opts.Console,
			Updates:        d.dashboardUpdates,
			UpdateActions:  dashboardActions{d},
			DeviceSettings: keeper,
			ClockSet:       d.opts.ClockSet,
			LocalURL:       localURL,
			LogFile:        d.logFile(),
			Started: func(n *personal.Node) {
				d.node.Store(n)
				goRun(func() { d.follow(ctx, n) })
			},
		})
	case profile.Supernode:
		stop, serr := d.serveSupernodeStatus(opts.Listener)
		if serr != nil {
			return serr
		}
		defer stop()
		if !d.waitForClock(ctx, "starting the supernode") {
			return nil
		}
		err = supernode.Run(ctx, profile.SupernodeConfig(s, d.opts.PermDir), supernode.Options{
			Logger:         log.With("service", "supernode"),
			TURNPacketConn: opts.TURNPacketConn,
			TURNListener:   opts.TURNListener,
			Ready: func(addrs []string) {
				d.snAddrs.Store(&addrs)
				d.light.SetState(hardware.StateOnlineDirect)
			},
		})
	}
	if err != nil {
		d.light.SetState(hardware.StateError)
	}
	return err
}

// dhcpAlso are the interfaces that get an address by DHCP when present,
// besides the network settings' DHCP interfaces: eth0 and USB Ethernet
// (usb0, where the kernel's CDC Ethernet driver puts an adapter of that
// class: the only wired network of a Pi Zero 2 W, and QEMU's raspi3b
// network) unless the settings make them static (settings that list only
// other interfaces leave eth0 on DHCP), and wlan0 on a Wi-Fi network.
func dhcpAlso(s *settings.Settings) []string {
	var out []string
	for _, name := range []string{"eth0", "usb0"} {
		if s.DHCPOn(name) {
			out = append(out, name)
		}
	}
	if s.WiFi != nil {
		out = append(out, "wlan0")
	}
	return out
}

// localPort is the port of the personal cloud and the supernode's
// status page, which the device announces.
const localPort = 4200

// startAnnounce announces the device as <hostname>.local with its web
// page as an _http._tcp service, and returns that page's local URL ("" when
// the device does not announce itself).
func (d *Device) startAnnounce(ctx context.Context, goRun func(func())) string {
	run := d.opts.Announce
	if run == nil {
		if d.opts.Paths.Disk != "" {
			return ""
		}
		run = announce.Run
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		d.log.Warn("mDNS: no host name to announce", "err", err)
		return ""
	}
	cfg := announce.Config{HostName: host, Instance: "PC2 " + host, Port: localPort, Text: []string{"path=/"},
		Logger: d.log.With("service", "announce")}
	goRun(func() {
		if err := run(ctx, cfg); err != nil && ctx.Err() == nil {
			d.log.Error("mDNS announcements stopped", "err", err)
		}
	})
	return fmt.Sprintf("http://%s.local:%d", host, localPort)
}

// networkChanged makes the tunnel reattach at once.
func (d *Device) networkChanged() {
	if n := d.node.Load(); n != nil {
		d.log.Info("network changed: reattaching the tunnel")
		n.Reconnect()
	}
}

// follow shows the personal node's state on the status light.
func (d *Device) follow(ctx context.Context, n *personal.Node) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st := n.Status()
		switch {
		case st.State == "online" && st.Mode == "relayed":
			d.light.SetState(hardware.StateOnlineRelayed)
		case st.State == "online" && st.Mode == "direct":
			d.light.SetState(hardware.StateOnlineDirect)
		case st.State == "error":
			d.light.SetState(hardware.StateError)
		default: // starting, or published but not yet reachable
			d.light.SetState(hardware.StateBooting)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// factoryReset wipes the perm partition (identity, settings copy, data)
// and reboots: the device comes back as flashed, with the settings of its
// boot partition and a new identity unless the owner restores one.
func (d *Device) factoryReset() {
	d.resetOnce.Do(func() {
		d.log.Warn("factory reset: wiping the perm partition and rebooting", "perm", d.opts.PermDir)
		if err := wipe(d.opts.PermDir); err != nil {
			d.log.Error("factory reset: wipe incomplete", "err", err)
			d.light.SetState(hardware.StateError)
			return
		}
		if err := d.opts.Reboot(); err != nil {
			d.log.Error("factory reset: reboot failed", "err", err)
		}
	})
}

// wipe removes everything in dir but dir itself and ext4's lost+found.
func wipe(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == "lost+found" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	unix.Sync()
	return errors.Join(errs...)
}

func reboot() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// growRootPerm grows perm (partition 4 of the root file system's disk,
// mounted on profile.PermDir) to the end of the disk. A panic in the
// partition code is an error here: the device must start anyway.
func growRootPerm(log *slog.Logger) (r growperm.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("growperm panicked: %v", p)
		}
	}()
	disk, err := rootdisk.Find()
	if err != nil {
		return r, err
	}
	r, err = growperm.Grow(growperm.Options{Disk: disk.Path, Partition: growperm.PermPartition,
		PartitionDevice: disk.Partition(growperm.PermPartition), Mount: profile.PermDir, Logger: log})
	if err == nil && (r.Table || r.Kernel || r.FS) {
		log.Info("perm uses the whole disk", "disk", disk.Path, "disk_bytes", r.DiskBytes, "fs_bytes", r.FSBytes)
	}
	return r, err
}

// backupEngine is what the image's backup engine says it is, or why it
// did not say ("" off the device).
func (d *Device) backupEngine() string {
	d.engine.Do(func() {
		if d.opts.Paths.Disk == "" {
			d.engineName = engineVersion(profile.ResticBinary)
		}
	})
	return d.engineName
}

// engineVersion is what the backup engine at path says it is, or why it
// did not say.
func engineVersion(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := backup.Version(ctx, path)
	if err != nil {
		return "not runnable: " + err.Error()
	}
	return v
}
