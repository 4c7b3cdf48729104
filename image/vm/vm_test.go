package vm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// testDisk returns a disk with a FAT16 boot partition at 1 MiB holding
// files, behind a GPT or an MBR.
func testDisk(t *testing.T, gpt bool, files map[string][]byte) []byte {
	t.Helper()
	const start = 1 << 20
	fs := fat16.New(fat16.Options{Size: 64 << 20, Label: "TEST", HiddenSectors: start / 512, ModTime: time.Unix(1700000000, 0)})
	for name, data := range files {
		fs.Add(name, data)
	}
	boot, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	disk := make([]byte, start+len(boot))
	copy(disk[start:], boot)
	disk[510], disk[511] = 0x55, 0xaa
	if gpt {
		copy(disk[512:], "EFI PART")
		binary.LittleEndian.PutUint64(disk[512+72:], 2) // entries at LBA 2
		binary.LittleEndian.PutUint64(disk[1024+32:], start/512)
	} else {
		binary.LittleEndian.PutUint32(disk[446+8:], start/512)
	}
	return disk
}

// slotFiles returns the files of a boot partition in the A/B layout of
// package image/bootslot with slot selected: config.txt with body after
// its os_prefix line, and in a/ and b/ a kernel, a device tree and
// cmdline.txt whose root= names the slot's partition, each telling its
// slot.
func slotFiles(t *testing.T, selected, body string) map[string][]byte {
	t.Helper()
	config, err := bootslot.NewConfigTxt(body, selected)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{bootslot.ConfigTxt: config}
	for _, slot := range []string{bootslot.A, bootslot.B} {
		c, err := bootslot.Pad(slotCmdline(t, slot) + "\n")
		if err != nil {
			t.Fatal(err)
		}
		files[slot+"/vmlinuz"] = []byte("kernel " + slot)
		files[slot+"/"+bootslot.Cmdline] = c
		files[slot+"/bcm2710-rpi-3-b.dtb"] = []byte("dtb " + slot)
	}
	return files
}

// slotCmdline is the command line slotFiles puts in slot's cmdline.txt.
func slotCmdline(t *testing.T, slot string) string {
	t.Helper()
	p, err := bootslot.Partition(slot)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("root=PARTUUID=2dcdfa95-%02x ro console=serial0,115200", p)
}

// writeDisk writes testDisk's disk of files to a file in dir.
func writeDisk(t *testing.T, dir string, gpt bool, files map[string][]byte) string {
	t.Helper()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, testDisk(t, gpt, files), 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestReadBootFile(t *testing.T) {
	kernel := bytes.Repeat([]byte("kernel image "), 100000) // several clusters
	cmdline := "root=PARTUUID=x/PARTNROFF=1 ro\n" + strings.Repeat(" ", 480)
	for _, gpt := range []bool{true, false} {
		disk := testDisk(t, gpt, map[string][]byte{
			"a/vmlinuz": kernel, "a/cmdline.txt": []byte(cmdline), "config.txt": []byte("x"),
			"a/bcm2710-rpi-3-b-plus.dtb": []byte("plus"), "a/bcm2710-rpi-3-b.dtb": []byte("3b"),
		})
		r := bytes.NewReader(disk)
		got, err := ReadBootFile(r, "a/vmlinuz")
		if err != nil || !bytes.Equal(got, kernel) {
			t.Errorf("gpt=%v: a/vmlinuz: %d bytes, %v; want %d bytes", gpt, len(got), err, len(kernel))
		}
		got, err = ReadBootFile(r, "a/cmdline.txt")
		if err != nil || string(got) != cmdline {
			t.Errorf("gpt=%v: a/cmdline.txt: got %q, %v; want %q", gpt, got, err, cmdline)
		}
		// Long names, whose 8.3 forms are lossy (BCM271~1.DTB).
		for name, want := range map[string]string{"a/bcm2710-rpi-3-b-plus.dtb": "plus", "a/bcm2710-rpi-3-b.dtb": "3b"} {
			if got, err := ReadBootFile(r, name); err != nil || string(got) != want {
				t.Errorf("gpt=%v: %s: got %q, %v; want %q", gpt, name, got, err, want)
			}
		}
		for _, name := range []string{"missing", "vmlinuz", "b/vmlinuz"} {
			if _, err := ReadBootFile(r, name); err == nil {
				t.Errorf("gpt=%v: missing file %s: got nil error", gpt, name)
			}
		}
	}
}

// TestDirectBoot: the direct kernel loader reads config.txt and takes
// the kernel it names and cmdline.txt from the slot os_prefix selects,
// anew at each start (an A/B switch by the device boots the other slot
// next time).
func TestDirectBoot(t *testing.T) {
	dir := t.TempDir()
	for _, slot := range []string{bootslot.A, bootslot.B} {
		img := writeDisk(t, dir, true, slotFiles(t, slot, "kernel=vmlinuz\n"))
		kernel, cmdline, err := directBoot(img, dir)
		if err != nil {
			t.Fatalf("slot %s: %v", slot, err)
		}
		if k, err := os.ReadFile(kernel); err != nil || string(k) != "kernel "+slot {
			t.Errorf("slot %s: kernel %q, %v; want %s/vmlinuz", slot, k, err, slot)
		}
		if want := slotCmdline(t, slot); cmdline != want {
			t.Errorf("slot %s: command line %q, want %q", slot, cmdline, want)
		}
	}
}

// TestDirectBootErrors: a boot partition the harness cannot boot as the
// slot selects fails with an error naming what is missing, where the Pi
// firmware would fall back to the root.
func TestDirectBootErrors(t *testing.T) {
	for _, c := range []struct {
		name, want string
		change     func(map[string][]byte)
	}{
		{"no config.txt", "no config.txt on the boot partition", func(f map[string][]byte) { delete(f, bootslot.ConfigTxt) }},
		{"no kernel=", "config.txt names no kernel", func(f map[string][]byte) { f[bootslot.ConfigTxt] = []byte("os_prefix=a/\n") }},
		{"missing slot", "c/vmlinuz (os_prefix=c/ in config.txt)", func(f map[string][]byte) {
			f[bootslot.ConfigTxt] = []byte("os_prefix=c/\nkernel=vmlinuz\n")
			f["vmlinuz"], f[bootslot.Cmdline] = f["a/vmlinuz"], f["a/"+bootslot.Cmdline]
		}},
		{"no kernel in the slot", "a/vmlinuz (os_prefix=a/ in config.txt)", func(f map[string][]byte) {
			f["vmlinuz"] = f["a/vmlinuz"]
			delete(f, "a/vmlinuz")
		}},
		{"no cmdline.txt in the slot", "b/cmdline.txt (os_prefix=b/ in config.txt)", func(f map[string][]byte) {
			f[bootslot.ConfigTxt] = []byte("os_prefix=b/\nkernel=vmlinuz\n")
			delete(f, "b/"+bootslot.Cmdline)
		}},
		{"empty cmdline.txt", "a/cmdline.txt has no command line", func(f map[string][]byte) { f["a/"+bootslot.Cmdline] = []byte("\n   ") }},
	} {
		dir := t.TempDir()
		files := slotFiles(t, bootslot.A, "kernel=vmlinuz\n")
		c.change(files)
		_, _, err := directBoot(writeDisk(t, dir, false, files), dir)
		t.Logf("%s: %v", c.name, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// TestReadRaspiBoot: the raspi machines get the kernel, the model's
// device tree and cmdline.txt (with the firmware's edits) from the slot
// config.txt's os_prefix selects, in the model's sections.
func TestReadRaspiBoot(t *testing.T) {
	dir := t.TempDir()
	m := raspis[MachineRaspi3b]
	for _, slot := range []string{bootslot.A, bootslot.B} {
		img := writeDisk(t, dir, false, slotFiles(t, slot, "[pi3]\nenable_uart=1\nkernel=vmlinuz\n[all]\n"))
		b, err := readRaspiBoot(img, m)
		if err != nil {
			t.Fatalf("slot %s: %v", slot, err)
		}
		if string(b.kernel) != "kernel "+slot || string(b.dtb) != "dtb "+slot {
			t.Errorf("slot %s: kernel %q, device tree %q; want slot %s's", slot, b.kernel, b.dtb, slot)
		}
		want := "8250.nr_uarts=1 " + strings.Replace(slotCmdline(t, slot), "serial0", "ttyS0", 1)
		if b.cmdline != want {
			t.Errorf("slot %s: command line %q, want %q", slot, b.cmdline, want)
		}
	}
	// os_prefix in a section of another model does not apply (written by
	// hand: bootslot.NewConfigTxt refuses a second os_prefix).
	files := slotFiles(t, bootslot.A, "kernel=vmlinuz\n")
	files["config.txt"] = []byte("os_prefix=a/\nkernel=vmlinuz\n[pi4]\nos_prefix=b/\n")
	if b, err := readRaspiBoot(writeDisk(t, dir, false, files), m); err != nil || string(b.kernel) != "kernel a" {
		t.Errorf("[pi4] os_prefix=b/ on a Pi 3: kernel %q, %v; want slot a's", b.kernel, err)
	}
	// A slot without the model's device tree fails; the firmware would
	// boot the root's.
	files = slotFiles(t, bootslot.B, "kernel=vmlinuz\n")
	files[m.dtb] = files["b/"+m.dtb]
	delete(files, "b/"+m.dtb)
	if _, err := readRaspiBoot(writeDisk(t, dir, false, files), m); err == nil || !strings.Contains(err.Error(), "device tree: b/"+m.dtb) {
		t.Errorf("no b/%s: got %v", m.dtb, err)
	}
}

// TestCommandArm64 checks the arm64 command line: -M virt, the kernel
// copied out of the slot config.txt selects (b), and the command line
// from that slot's cmdline.txt.
func TestCommandArm64(t *testing.T) {
	if err := Check("arm64"); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	img := writeDisk(t, dir, true, slotFiles(t, bootslot.B, "kernel=vmlinuz\n"))
	cmd, ports, err := Command(img, Options{GOARCH: "arm64", StateDir: dir, Forward: map[int]int{4200: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cmd.Path) != BinaryArm64 {
		t.Errorf("binary %s, want %s", cmd.Path, BinaryArm64)
	}
	args := cmd.Args[1:]
	arg := func(flag string) string {
		if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	if got := arg("-machine"); got != "virt" {
		t.Errorf("-machine %q, want virt", got)
	}
	if got, want := arg("-append"), slotCmdline(t, bootslot.B); got != want {
		t.Errorf("-append %q, want b/cmdline.txt's first line %q", got, want)
	}
	if k, err := os.ReadFile(arg("-kernel")); err != nil || string(k) != "kernel b" {
		t.Errorf("-kernel %q: %q, %v", arg("-kernel"), k, err)
	}
	if ports[4200] == 0 || !strings.Contains(arg("-netdev"), "-:4200") {
		t.Errorf("forward: ports %v, netdev %q", ports, arg("-netdev"))
	}
	if slices.Contains(args, "if=pflash") {
		t.Error("arm64 direct boot uses no pflash firmware")
	}
}

// TestCommandBIOS checks the amd64 command line with BIOS: q35 under
// QEMU's default firmware (SeaBIOS), no OVMF flash, no copied variables.
func TestCommandBIOS(t *testing.T) {
	if _, err := exec.LookPath(Binary); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	cmd, _, err := Command(filepath.Join(dir, "disk.img"), Options{BIOS: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cmd.Path) != Binary {
		t.Errorf("binary %s, want %s", cmd.Path, Binary)
	}
	args := strings.Join(cmd.Args[1:], " ")
	if !strings.Contains(args, "-machine q35 ") {
		t.Errorf("args %q lack -machine q35", args)
	}
	for _, bad := range []string{"pflash", "-bios", "-kernel"} {
		if strings.Contains(args, bad) {
			t.Errorf("args %q contain %s; BIOS boot is SeaBIOS from the disk", args, bad)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("state dir holds %d files, want none (no OVMF variables)", len(entries))
	}
	if _, _, err := Command(filepath.Join(dir, "disk.img"), Options{BIOS: true, GOARCH: "arm64", StateDir: dir}); err == nil {
		t.Error("BIOS boot of an arm64 guest: got nil error")
	}
}

// TestFirmwareCmdline: the Pi firmware's edits of cmdline.txt that the
// harness makes for QEMU's raspi machines.
func TestFirmwareCmdline(t *testing.T) {
	line := "root=PARTUUID=2dcdfa95-02 ro console=tty1 console=serial0,115200"
	got := firmwareCmdline(line, map[string]string{"enable_uart": "1"})
	if want := "8250.nr_uarts=1 root=PARTUUID=2dcdfa95-02 ro console=tty1 console=ttyS0,115200"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := firmwareCmdline(line, nil); strings.Contains(got, "8250") {
		t.Errorf("without enable_uart: %q", got)
	}
}

// TestCommandRaspi: the raspi3b command line boots the image's own
// kernel and device tree from the SD card, grown to a power of two in an
// overlay (65 MiB: a 128 MiB card), with the watchdog workaround; the
// raspi4b refuses forwards
// (no network).
func TestCommandRaspi(t *testing.T) {
	if err := CheckMachine(MachineRaspi3b); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	files := slotFiles(t, bootslot.A, "[all]\nenable_uart=1\nkernel=vmlinuz\n")
	files["a/vmlinuz"] = make([]byte, 4096)
	disk := testDisk(t, false, files)
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, ports, err := Command(img, Options{GOARCH: "arm64", Machine: MachineRaspi3b, StateDir: dir, Forward: map[int]int{4200: 0}})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(cmd.Args, " ")
	for _, want := range []string{"-machine raspi3b", "-dtb " + filepath.Join(dir, "bcm2710-rpi-3-b.dtb"), NoWatchdog,
		"console=ttyS0,115200", "if=sd,format=qcow2", "usb-net", fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:4200", ports[4200])} {
		if !strings.Contains(args, want) {
			t.Errorf("command %q lacks %q", args, want)
		}
	}
	out, err := exec.Command("qemu-img", "info", filepath.Join(dir, "sd.qcow2")).Output()
	if err != nil || !strings.Contains(string(out), "virtual size: 128 MiB") {
		t.Errorf("SD overlay: %v\n%s", err, out)
	}
	if fi, _ := os.Stat(img); fi.Size() != int64(len(disk)) {
		t.Errorf("the image changed size")
	}
	if _, _, err := Command(img, Options{GOARCH: "arm64", Machine: MachineRaspi4b, StateDir: dir, Forward: map[int]int{4200: 0}}); err == nil ||
		!strings.Contains(err.Error(), "no network") {
		t.Errorf("raspi4b with forwards: %v", err)
	}
}
