package hardware

import (
	"testing"
	"testing/fstest"
)

func TestDetect(t *testing.T) {
	dt := func(model string) fstest.MapFS {
		// The kernel's device tree strings end in NUL.
		return fstest.MapFS{"proc/device-tree/model": {Data: []byte(model + "\x00")}}
	}
	dmi := func(product, vendor string) fstest.MapFS {
		fsys := fstest.MapFS{}
		if product != "" {
			fsys["sys/class/dmi/id/product_name"] = &fstest.MapFile{Data: []byte(product + "\n")}
		}
		if vendor != "" {
			fsys["sys/class/dmi/id/sys_vendor"] = &fstest.MapFile{Data: []byte(vendor + "\n")}
		}
		return fsys
	}
	tests := []struct {
		name   string
		fsys   fstest.MapFS
		goarch string
		want   Board
	}{
		{"pi4", dt("Raspberry Pi 4 Model B Rev 1.5"), "arm64", Board{"Raspberry Pi 4 Model B Rev 1.5", KindRPi4}},
		{"pi400", dt("Raspberry Pi 400 Rev 1.0"), "arm64", Board{"Raspberry Pi 400 Rev 1.0", KindRPi4}},
		{"cm4", dt("Raspberry Pi Compute Module 4 Rev 1.0"), "arm64", Board{"Raspberry Pi Compute Module 4 Rev 1.0", KindRPi4}},
		{"pi5", dt("Raspberry Pi 5 Model B Rev 1.0"), "arm64", Board{"Raspberry Pi 5 Model B Rev 1.0", KindRPi5}},
		{"pi500", dt("Raspberry Pi 500 Rev 1.0"), "arm64", Board{"Raspberry Pi 500 Rev 1.0", KindRPi5}},
		{"pi3b+", dt("Raspberry Pi 3 Model B Plus Rev 1.3"), "arm64", Board{"Raspberry Pi 3 Model B Plus Rev 1.3", KindRPi3}},
		{"pi3b", dt("Raspberry Pi 3 Model B Rev 1.2"), "arm64", Board{"Raspberry Pi 3 Model B Rev 1.2", KindRPi3}},
		{"zero2w", dt("Raspberry Pi Zero 2 W Rev 1.0"), "arm64", Board{"Raspberry Pi Zero 2 W Rev 1.0", KindRPiZero2}},
		{"zero-w-unsupported", dt("Raspberry Pi Zero W Rev 1.1"), "arm", Board{"Raspberry Pi Zero W Rev 1.1", KindUnknown}},
		{"pi2-unsupported", dt("Raspberry Pi 2 Model B Rev 1.1"), "arm", Board{"Raspberry Pi 2 Model B Rev 1.1", KindUnknown}},
		{"other-arm-board", dt("Pine64 PINE A64+"), "arm64", Board{"Pine64 PINE A64+", KindUnknown}},
		{"qemu-arm64-virt", dt("linux,dummy-virt"), "arm64", Board{"linux,dummy-virt", KindQEMU}},
		{"sysfs-devicetree", fstest.MapFS{"sys/firmware/devicetree/base/model": {Data: []byte("Raspberry Pi 4 Model B Rev 1.4\x00")}},
			"arm64", Board{"Raspberry Pi 4 Model B Rev 1.4", KindRPi4}},
		{"qemu-q35", dmi("Standard PC (Q35 + ICH9, 2009)", "QEMU"), "amd64", Board{"Standard PC (Q35 + ICH9, 2009)", KindQEMU}},
		{"qemu-i440fx-no-vendor", dmi("Standard PC (i440FX + PIIX, 1996)", ""), "amd64", Board{"Standard PC (i440FX + PIIX, 1996)", KindQEMU}},
		{"qemu-product", dmi("QEMU", ""), "amd64", Board{"QEMU", KindQEMU}},
		{"qemu-vendor-only", dmi("", "QEMU"), "amd64", Board{"", KindQEMU}},
		{"pc", dmi("OptiPlex 7050", "Dell Inc."), "amd64", Board{"OptiPlex 7050", KindX86}},
		{"pc-386", dmi("To Be Filled By O.E.M.", "To Be Filled By O.E.M."), "386", Board{"To Be Filled By O.E.M.", KindX86}},
		{"arm64-server-dmi", dmi("Graviton", "Amazon EC2"), "arm64", Board{"Graviton", KindUnknown}},
		{"pc-without-dmi", fstest.MapFS{}, "amd64", Board{"", KindX86}},
		{"nothing-arm64", fstest.MapFS{}, "arm64", Board{"", KindUnknown}},
		{"empty-model", dt(""), "arm64", Board{"", KindUnknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := detect(tt.fsys, tt.goarch)
			if got != tt.want {
				t.Errorf("detect = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDetectFSDeviceTreeWins(t *testing.T) {
	// A Pi with UEFI firmware may expose DMI too; the device tree names the board.
	fsys := fstest.MapFS{
		"proc/device-tree/model":        {Data: []byte("Raspberry Pi 4 Model B Rev 1.5\x00")},
		"sys/class/dmi/id/product_name": {Data: []byte("Raspberry Pi 4 Model B\n")},
	}
	if got, want := DetectFS(fsys).Kind, KindRPi4; got != want {
		t.Errorf("Kind = %q, want %q", got, want)
	}
}

func TestIsRaspberryPi(t *testing.T) {
	for k, want := range map[Kind]bool{
		KindRPi3: true, KindRPi4: true, KindRPi5: true, KindRPiZero2: true,
		KindX86: false, KindQEMU: false, KindUnknown: false,
	} {
		if got := (Board{Kind: k}).IsRaspberryPi(); got != want {
			t.Errorf("Board{Kind: %q}.IsRaspberryPi() = %v, want %v", k, got, want)
		}
	}
}
