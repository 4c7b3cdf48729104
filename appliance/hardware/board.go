package hardware

import (
	"bytes"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// Kind is the family of board the appliance runs on.
type Kind string

// The boards the appliance knows. Kinds are stable strings: logs and the
// dashboard show them.
const (
	KindRPi3     Kind = "rpi3"     // Raspberry Pi 3 (B, B+, A+, CM3)
	KindRPi4     Kind = "rpi4"     // Raspberry Pi 4, 400, CM4
	KindRPi5     Kind = "rpi5"     // Raspberry Pi 5, 500, CM5
	KindRPiZero2 Kind = "rpizero2" // Raspberry Pi Zero 2 W
	KindX86      Kind = "x86"      // a PC or VM on amd64 or 386 (not QEMU)
	KindQEMU     Kind = "qemu"     // a QEMU virtual machine (x86 or arm64 virt)
	KindUnknown  Kind = "unknown"  // anything else, including older Pis
)

// Board is what Detect found.
type Board struct {
	// Model is the board's own name: the device tree's model on ARM
	// ("Raspberry Pi 4 Model B Rev 1.5") or the DMI product name on a PC.
	// Empty if neither exists.
	Model string
	Kind  Kind
}

// IsRaspberryPi reports whether b is one of the supported Raspberry Pis,
// the only boards with GPIO that this package drives through periph.
func (b Board) IsRaspberryPi() bool {
	switch b.Kind {
	case KindRPi3, KindRPi4, KindRPi5, KindRPiZero2:
		return true
	}
	return false
}

// virtual reports whether b is a PC or VM: no status LED, no GPIO.
func (b Board) virtual() bool { return b.Kind == KindX86 || b.Kind == KindQEMU }

// Detect identifies the board this program runs on.
func Detect() Board { return DetectFS(os.DirFS("/")) }

// DetectFS identifies the board from the files under root, a view of "/",
// so that tests can feed sample model strings.
func DetectFS(root fs.FS) Board { return detect(root, runtime.GOARCH) }

// Where the model is read from, relative to "/". /proc/device-tree is a
// symlink to the sysfs path; both are tried in case /proc is not mounted yet.
var (
	dtModelPaths   = []string{"proc/device-tree/model", "sys/firmware/devicetree/base/model"}
	dmiProductPath = "sys/class/dmi/id/product_name"
	dmiVendorPath  = "sys/class/dmi/id/sys_vendor"
)

func detect(root fs.FS, goarch string) Board {
	for _, p := range dtModelPaths {
		if model := readModel(root, p); model != "" {
			return Board{Model: model, Kind: dtKind(model)}
		}
	}
	product := readModel(root, dmiProductPath)
	vendor := readModel(root, dmiVendorPath)
	if isQEMU(product, vendor) {
		return Board{Model: product, Kind: KindQEMU}
	}
	if goarch == "amd64" || goarch == "386" {
		// Without DMI too: some VMs (Firecracker, containers) have none,
		// and an x86 machine has no status LED or GPIO either way.
		return Board{Model: product, Kind: KindX86}
	}
	// Nothing, or DMI on a non-x86 machine (an arm64 server with UEFI): not
	// a board we have support for.
	return Board{Model: product, Kind: KindUnknown}
}

// readModel returns the file's first NUL-terminated line, trimmed; "" if it
// cannot be read. Device tree strings end in NUL, sysfs ones in a newline.
func readModel(root fs.FS, path string) string {
	b, err := fs.ReadFile(root, path)
	if err != nil {
		return ""
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// dtKind maps a device tree model to a Kind. Pi models read
// "Raspberry Pi <generation> ..." or "Raspberry Pi Compute Module <generation>
// ..."; the 400 and 500 keyboards are a Pi 4 and Pi 5 inside.
func dtKind(model string) Kind {
	rest, ok := strings.CutPrefix(model, "Raspberry Pi ")
	if !ok {
		if strings.Contains(model, "dummy-virt") || strings.Contains(model, "QEMU") {
			return KindQEMU
		}
		return KindUnknown
	}
	rest = strings.TrimPrefix(rest, "Compute Module ")
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return KindUnknown
	}
	switch fields[0] {
	case "3":
		return KindRPi3
	case "4", "400":
		return KindRPi4
	case "5", "500":
		return KindRPi5
	case "Zero":
		if len(fields) > 1 && fields[1] == "2" {
			return KindRPiZero2
		}
	}
	return KindUnknown
}

// isQEMU recognises QEMU's DMI data: vendor "QEMU", and machine types named
// "Standard PC (i440FX + PIIX, 1996)" or "Standard PC (Q35 + ICH9, 2009)".
func isQEMU(product, vendor string) bool {
	return vendor == "QEMU" ||
		strings.Contains(product, "QEMU") ||
		strings.HasPrefix(product, "Standard PC (")
}
