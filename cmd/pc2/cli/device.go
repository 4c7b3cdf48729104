package cli

import (
	"context"
	"io"
	"os"
	"syscall"

	"github.com/pc2/pc2/appliance/device"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update"
)

func init() {
	register("device", "run the appliance from its device settings (started by the image's init)", runDevice)
}

func runDevice(ctx context.Context, env Env, args []string) (err error) {
	defer func() {
		// During the test boot of an update, the rollback's reason names
		// why the device service stopped.
		if err != nil && ctx.Err() == nil {
			update.NoteExit("", nil, err)
		}
	}()
	fs := newFlagSet("device", env)
	disk := fs.String("disk", "", "boot `disk` holding "+settings.BootFile+" (default: the disk the root file system is on)")
	perm := fs.String("perm-file", settings.PermFile, "the settings copy on perm")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErr("usage: pc2 device [--disk DISK] [--perm-file FILE]")
	}
	// gokrazy keeps a service's output in its log buffer; what the owner
	// must see at the box (the setup code) goes to the console too.
	var console io.Writer
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|os.O_APPEND|syscall.O_NOCTTY, 0); err == nil {
		defer f.Close()
		console = f
	}
	err = device.Run(ctx, device.Options{
		Logger:  env.logger(),
		Version: Version,
		Paths:   settings.Paths{Disk: *disk, PermFile: *perm},
		Console: console,
	})
	return notConfigured(err)
}
