package cli

import (
	"context"

	"github.com/pc2/pc2/appliance/device"
	"github.com/pc2/pc2/appliance/settings"
)

func init() {
	register("device", "run the appliance from its device settings (started by the image's init)", runDevice)
}

func runDevice(ctx context.Context, env Env, args []string) error {
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
	err = device.Run(ctx, device.Options{
		Logger:  env.logger(),
		Version: Version,
		Paths:   settings.Paths{Disk: *disk, PermFile: *perm},
	})
	return notConfigured(err)
}
