// Command pc2-init is the init process (PID 1) of the PC2 appliance image.
//
// It is deliberately thin: gokrazy.Boot mounts the file systems, sets the
// hostname and the web interface password, and gokrazy.SuperviseServices runs
// and restarts every program the image builder (package image) placed under
// /gokrazy (gokrazy's own services: dhcp, ntp, randomd) and the services of
// the table in /etc/pc2/services.json (ours: `pc2 device`). The program set
// is read from the root file system at boot instead of being compiled in, so
// the same init binary serves every profile and board and the image builder
// stays the single place that decides what runs.
//
// Some device settings (package settings, on the boot partition) matter
// before any service starts, so the init reads them: the hostname, set
// before the DHCP client sends it; a static address on a wired
// interface, which leaves gokrazy's DHCP client for it out (it would add
// a leased address next to the static one); a Wi-Fi network, which adds
// a DHCP client on wlan0; and the time servers of gokrazy's NTP client.
// gokrazy's DHCP client serves eth0 by default; on a Raspberry Pi a
// second one serves usb0, where the kernel's CDC Ethernet driver puts a
// USB Ethernet adapter of that class (the only wired network of a
// Zero 2 W, and QEMU's raspi3b network). That one starts only once usb0
// exists (superviseWhenPresent): a waiting DHCP client is a Go process of
// about 13 MB, which most Pis, with their own Ethernet, would carry for
// nothing.
// Unreadable settings are logged and change nothing. During the test boot
// of an over-the-air update the init first selects the old version's
// boot slot for any later start, then keeps the health gate's deadline
// (update.BeginTestBoot): a new version whose device service does not
// commit it in time is left for the old one, by a reboot.
// Before the services
// start, the init also limits transparent huge pages to programs that ask
// for them (limitHugePages).
//
// The image builder sets buildTimestamp with
// -ldflags "-X main.buildTimestamp=..." from SOURCE_DATE_EPOCH so that the
// binary, and with it the image, is reproducible.
package main

import (
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gokrazy/gokrazy"
	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/svctable"
	"github.com/pc2/pc2/appliance/update"
)

// buildTimestamp is shown on gokrazy's status page.
var buildTimestamp = "unknown"

func main() {
	if err := run(); err != nil {
		// PID 1 must not exit: the kernel would panic. Log and keep the
		// process alive so the serial console shows the error.
		log.Printf("pc2-init: %v", err)
	}
	select {}
}

func run() error {
	if err := gokrazy.Boot(buildTimestamp); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	limitHugePages()
	// During the test boot of an update: the old version is selected for
	// any later start before anything else runs, and the health gate's
	// deadline is kept.
	watch, err := update.BeginTestBoot(update.GateOptions{Logger: slog.Default(), Reboot: func() error {
		unix.Sync()
		return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}})
	if err != nil {
		log.Printf("pc2-init: update health gate: %v", err)
	}
	go func() {
		if err := watch(); err != nil {
			log.Printf("pc2-init: update health gate: %v", err)
		}
	}()
	dhcpOn := func(string) bool { return true }
	wlan := false
	var ntp []string
	if l, err := settings.Load(settings.Paths{}); err != nil {
		log.Printf("pc2-init: device settings: %v", err)
	} else {
		if l.Hostname != "" {
			if err := unix.Sethostname([]byte(l.Hostname)); err != nil {
				log.Printf("pc2-init: set hostname %q: %v", l.Hostname, err)
			}
		}
		dhcpOn = l.DHCPOn
		wlan = l.WiFi != nil
		ntp = l.NTP
	}
	var services []*gokrazy.Service
	progs, err := programs("/gokrazy")
	if err != nil {
		return err
	}
	for _, p := range progs {
		if p == "/gokrazy/ntp" {
			// Servers from the settings (checked names or addresses),
			// else gokrazy's pool.
			services = append(services, gokrazy.NewService(exec.Command(p, ntp...)))
			continue
		}
		if p != "/gokrazy/dhcp" {
			services = append(services, gokrazy.NewService(exec.Command(p)))
			continue
		}
		if dhcpOn("eth0") {
			services = append(services, gokrazy.NewService(exec.Command(p, "-interface=eth0")))
		} else {
			log.Printf("pc2-init: eth0 has a static address in the device settings; no %s for it", p)
		}
		if isRaspberryPi() && dhcpOn("usb0") {
			go superviseWhenPresent("usb0", p, "-interface=usb0")
		}
		if wlan {
			// pc2 device joins the Wi-Fi network; this leases its address.
			services = append(services, gokrazy.NewService(exec.Command(p, "-interface=wlan0")))
		}
	}
	// Our services run as the table says. Without one (an image not made
	// by package image) only gokrazy's services run: there is no way to
	// know which arguments our programs need.
	table, err := svctable.Read(svctable.Path)
	if err != nil {
		log.Printf("pc2-init: %v; running gokrazy's services only", err)
	}
	for _, s := range table {
		services = append(services, gokrazy.NewService(exec.Command(s.Path, s.Args...)))
	}
	// gokrazy's own update API would install unsigned images.
	update.RefuseGokrazyUpdates(http.DefaultServeMux)
	return gokrazy.SuperviseServices(services)
}

// superviseWhenPresent waits until the network interface ifname exists,
// then runs prog with args, again 5 s after each exit, for good. It is
// not one of gokrazy's services (those are fixed when supervision
// starts), so its output goes to the init's, the console.
func superviseWhenPresent(ifname, prog string, args ...string) {
	for {
		if _, err := os.Stat(filepath.Join("/sys/class/net", ifname)); err == nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	log.Printf("pc2-init: %s appeared; starting %s for it", ifname, prog)
	for {
		cmd := exec.Command(prog, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		log.Printf("pc2-init: %s %s exited (%v); again in 5 s", prog, strings.Join(args, " "), err)
		time.Sleep(5 * time.Second)
	}
}

// isRaspberryPi reports whether the device tree names a Raspberry Pi
// (package hardware tells the models apart; the init needs only this and
// stays small without it).
func isRaspberryPi() bool {
	b, err := os.ReadFile("/proc/device-tree/model")
	return err == nil && strings.HasPrefix(string(b), "Raspberry Pi ")
}

// thpEnabled selects the kernel's transparent huge page mode.
const thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"

// limitHugePages sets transparent huge pages to "madvise" before any
// service starts. Kernels built with THP "always" (the arm64 defconfig
// gokrazy's arm64 and Pi kernels use) back every process's heap with
// 2 MiB pages as soon as it touches one: each of the appliance's small Go
// processes then holds megabytes it never uses, on a board that may have
// 512 MiB. With "madvise" only programs that ask get huge pages. A kernel
// without THP has no such file: nothing to do.
func limitHugePages() {
	b, err := os.ReadFile(thpEnabled)
	if err != nil {
		return
	}
	if strings.Contains(string(b), "[madvise]") || strings.Contains(string(b), "[never]") {
		return
	}
	if err := os.WriteFile(thpEnabled, []byte("madvise"), 0); err != nil {
		log.Printf("pc2-init: transparent huge pages stay %q: %v", strings.TrimSpace(string(b)), err)
	}
}

// programs lists the executables in dir, sorted, skipping this init binary.
func programs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	self, _ := os.Executable()
	var progs []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue
		}
		if p == self || p == "/gokrazy/init" {
			continue
		}
		progs = append(progs, p)
	}
	sort.Strings(progs)
	return progs, nil
}
