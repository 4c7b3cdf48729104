// Package qemutest boots appliance images in QEMU for tests.
//
// QEMU runs with TCG (-accel tcg,thread=multi) because KVM is not usable on
// the build machines (nested virtualisation); amd64 guests boot under OVMF
// (UEFI) through systemd-boot, or with Options.BIOS under SeaBIOS through
// SYSLINUX, arm64 guests (-M virt) by direct kernel boot from the image's
// boot partition (package image/vm has the command lines).
// The disk is attached with snapshot=on,
// so writes go to a temporary overlay and the built image is never modified.
// The serial console is captured for assertions and logged when the test
// fails. Guest ports are reached through user-mode networking's hostfwd on
// free loopback ports.
//
// Set QEMUTEST_SERIAL_LOG=<file> to keep the console output of a run.
//
// Tests skip when QEMU, OVMF or root are missing, except with CI=true, where
// a missing prerequisite is a failure: CI must not pass by skipping.
package qemutest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	qvm "github.com/pc2/pc2/image/vm"

	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// Options configure Boot; the zero value is usable.
type Options struct {
	// Forward lists guest TCP ports to forward from free host ports.
	Forward []int
	// MemoryMiB is the guest's memory; default 1024.
	MemoryMiB int
	// CPUs is the guest's CPU count; default as image/vm (1 on amd64, 2 on arm64).
	CPUs int
	// Writable attaches the image read-write, so what the guest writes
	// (perm) is there at the next Boot. Pass a copy (CopyImage), never the
	// built image.
	Writable bool
	// GOARCH is the image's board's GOARCH; default amd64.
	GOARCH string
	// BIOS boots an amd64 image with SeaBIOS (legacy BIOS) instead of
	// OVMF (image/vm's Options.BIOS).
	BIOS bool
	// FollowReboots starts QEMU again (same disk, same host ports, the
	// console output appended) when the guest reboots, which ends QEMU
	// (-no-reboot; a new QEMU also re-reads config.txt and the slot for arm64's
	// direct kernel boot). Needs Writable.
	FollowReboots bool
	// Tap adds a second network card on this host tap interface
	// (image/vm's Options.Tap).
	Tap string
	// Machine boots an rpi board image on one of QEMU's Raspberry Pi
	// models (image/vm's Options.Machine: "raspi3b", "raspi4b"); GOARCH
	// must be arm64.
	Machine string
}

// VM is a running QEMU guest.
type VM struct {
	// Started is when QEMU was started, for boot time measurements.
	Started time.Time
	ports   map[int]int
	serial  *proc.TailBuffer
	done    chan struct{}
	waitErr error

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	boots   int
}

// Skip skips t, or fails it when CI=true, with a message saying what is
// missing.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.SkipOrFail(t, format, args...)
}

// Require checks that QEMU, OVMF and root privileges are available for
// amd64 guests.
func Require(t testing.TB) {
	t.Helper()
	RequireArch(t, "amd64")
}

// RequireArch checks that QEMU (and firmware, where needed) for goarch and
// root privileges are available.
func RequireArch(t testing.TB, goarch string) {
	t.Helper()
	if err := qvm.Check(goarch); err != nil {
		Skip(t, "%v", err)
	}
	requireRoot(t)
}

// RequireMachine checks that a QEMU with the Raspberry Pi model machine
// and root privileges are available.
func RequireMachine(t testing.TB, machine string) {
	t.Helper()
	if err := qvm.CheckMachine(machine); err != nil {
		Skip(t, "%v", err)
	}
	requireRoot(t)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "QEMU tests run as root")
	}
}

// Boot starts a guest from the raw disk image and stops it when the test
// ends.
func Boot(t testing.TB, image string, opts Options) *VM {
	t.Helper()
	if opts.Machine != "" {
		RequireMachine(t, opts.Machine)
	} else {
		RequireArch(t, opts.GOARCH)
	}
	fwd := map[int]int{}
	for _, p := range opts.Forward {
		fwd[p] = 0
	}
	if opts.FollowReboots && !opts.Writable {
		t.Fatal("qemutest: FollowReboots needs Writable")
	}
	state := t.TempDir()
	qopts := qvm.Options{Forward: fwd, MemoryMiB: opts.MemoryMiB, CPUs: opts.CPUs,
		Writable: opts.Writable, StateDir: state, GOARCH: opts.GOARCH, BIOS: opts.BIOS, Machine: opts.Machine, Tap: opts.Tap}
	cmd, ports, err := qvm.Command(image, qopts)
	if err != nil {
		t.Fatal(err)
	}
	vm := &VM{ports: ports, serial: &proc.TailBuffer{}, done: make(chan struct{}), cmd: cmd, boots: 1}
	vm.cmd.Stdout = vm.serial
	vm.cmd.Stderr = vm.serial
	vm.Started = time.Now()
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	// The same host ports from now on.
	qopts.Forward = ports
	go func() {
		defer close(vm.done)
		for {
			vm.mu.Lock()
			c := vm.cmd
			vm.mu.Unlock()
			err := c.Wait()
			vm.mu.Lock()
			if err != nil || vm.stopped || !opts.FollowReboots {
				vm.waitErr = err
				vm.mu.Unlock()
				return
			}
			fmt.Fprintf(vm.serial, "\n[qemutest: the guest rebooted; starting QEMU again]\n")
			next, _, err := qvm.Command(image, qopts)
			if err == nil {
				next.Stdout, next.Stderr = vm.serial, vm.serial
				err = next.Start()
			}
			if err != nil {
				vm.waitErr = fmt.Errorf("restart after a reboot: %w", err)
				vm.mu.Unlock()
				return
			}
			vm.cmd = next
			vm.boots++
			vm.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			t.Logf("serial console:\n%s", vm.Serial())
		}
		if p := os.Getenv("QEMUTEST_SERIAL_LOG"); p != "" {
			_ = os.WriteFile(p, []byte(vm.Serial()), 0o644)
		}
	})
	return vm
}

// Stop kills the guest at once, like pulling the power cord, and waits
// for QEMU to exit.
func (vm *VM) Stop() {
	vm.mu.Lock()
	vm.stopped = true
	_ = vm.cmd.Process.Kill()
	vm.mu.Unlock()
	<-vm.done
}

// Boots is how many times the guest started (FollowReboots).
func (vm *VM) Boots() int {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.boots
}

// CopyImage makes a sparse copy of image in a temporary directory, for
// Writable boots.
func CopyImage(t testing.TB, image string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(image))
	if out, err := exec.Command("cp", "--sparse=always", image, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", image, err, out)
	}
	return dst
}

// HostPort returns the host port forwarded to guest port p.
func (vm *VM) HostPort(p int) int { return vm.ports[p] }

// Serial returns the console output so far.
func (vm *VM) Serial() string { return vm.serial.String() }

// WaitSerial waits until the console output contains s.
func (vm *VM) WaitSerial(t testing.TB, s string, deadline time.Duration) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !strings.Contains(vm.Serial(), s) {
		if err := vm.exited(); err != nil {
			t.Fatalf("waiting for %q on the console: %v", s, err)
		}
		if time.Now().After(end) {
			t.Fatalf("no %q on the console after %v", s, deadline)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (vm *VM) exited() error {
	select {
	case <-vm.done:
		return fmt.Errorf("qemu exited: %v", vm.waitErr)
	default:
		return nil
	}
}

// WaitHTTP polls url (user:password@ in it selects basic auth) until it
// answers 200 OK and returns the body.
func (vm *VM) WaitHTTP(t testing.TB, url string, deadline time.Duration) []byte {
	t.Helper()
	end := time.Now().Add(deadline)
	client := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		if err := vm.exited(); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode == http.StatusOK {
				return body
			}
			last = fmt.Sprintf("status %s", resp.Status)
		} else {
			cancel()
			last = err.Error()
		}
		if time.Now().After(end) {
			t.Fatalf("GET %s: no 200 after %v; last: %s", url, deadline, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
