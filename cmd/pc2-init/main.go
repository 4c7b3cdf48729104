// Command pc2-init is the init process (PID 1) of the PC2 appliance image.
//
// It is deliberately thin: gokrazy.Boot mounts the file systems, sets the
// hostname and the web interface password, and gokrazy.SuperviseServices runs
// and restarts every program the image builder (package image) placed under
// /gokrazy (gokrazy's own services: dhcp, ntp, randomd) and /user (ours). The
// program set is read from the root file system at boot instead of being
// compiled in, so the same init binary serves every profile and board and
// the image builder stays the single place that decides what runs.
//
// The image builder sets buildTimestamp with
// -ldflags "-X main.buildTimestamp=..." from SOURCE_DATE_EPOCH so that the
// binary, and with it the image, is reproducible.
package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/gokrazy/gokrazy"

	"github.com/pc2/pc2/appliance/svctable"
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
	var services []*gokrazy.Service
	progs, err := programs("/gokrazy")
	if err != nil {
		return err
	}
	for _, p := range progs {
		services = append(services, gokrazy.NewService(exec.Command(p)))
	}
	// Our services run as the profile's table says (with arguments); without
	// a table, every program under /user runs without arguments.
	table, err := svctable.Read(svctable.Path)
	if err != nil {
		log.Printf("pc2-init: %v; falling back to running /user/* without arguments", err)
	}
	if len(table) > 0 {
		for _, s := range table {
			services = append(services, gokrazy.NewService(exec.Command(s.Path, s.Args...)))
		}
	} else {
		progs, err := programs("/user")
		if err != nil {
			return err
		}
		for _, p := range progs {
			services = append(services, gokrazy.NewService(exec.Command(p)))
		}
	}
	return gokrazy.SuperviseServices(services)
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
