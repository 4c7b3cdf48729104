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
// before the device's DHCP clients send it, and the time servers of
// gokrazy's NTP client. Addresses, DHCP included, are `pc2 device`'s
// (package netconf runs one DHCP client per interface in that process;
// gokrazy's DHCP program, one 11 MB process per interface, is not in the
// image).
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
	var ntp []string
	if l, err := settings.Load(settings.Paths{}); err != nil {
		log.Printf("pc2-init: device settings: %v", err)
	} else {
		if l.Hostname != "" {
			if err := unix.Sethostname([]byte(l.Hostname)); err != nil {
				log.Printf("pc2-init: set hostname %q: %v", l.Hostname, err)
			}
		}
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
		services = append(services, gokrazy.NewService(exec.Command(p)))
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
