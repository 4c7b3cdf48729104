package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/release"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/appliance/update/updateapi"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/provisioning/identity"
)

func init() {
	register("release", "build a signed release bundle (over-the-air update) for a board", runRelease)
	register("update", "push a release bundle to a device and wait for it to run the new version", runUpdate)
}

const releaseUsage = `usage: pc2 release --board x86|qemu|qemuarm64|rpi --key release.key -o BUNDLE-DIR [--version X.Y.Z]
         [--min-version X.Y.Z] [--channel stable|beta] [--trust ID]...
         [--image disk.img [SETTINGS FLAGS] [--node-key FILE]]`

func runRelease(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("release", env)
	board := fs.String("board", "", "target board: x86, qemu, qemuarm64 or rpi")
	keyFile := fs.String("key", "", "release signing key `file` (pc2 identity new makes one)")
	version := fs.String("version", "", "release `version`, MAJOR.MINOR.PATCH (default: 0.YYYYMMDD.HHMMSS of the build time, UTC)")
	minVersion := fs.String("min-version", "", "anti-downgrade floor: devices that install this release refuse anything older than this `version` (default: the release's own)")
	channel := fs.String("channel", manifest.Stable, "release channel: stable or beta")
	var trust multiFlag
	fs.Var(&trust, "trust", "release key `ID` (or DID, or key file) the built image trusts besides --key's (repeatable)")
	out := fs.String("o", "", "bundle output `folder`")
	img := fs.String("image", "", "also write the flashable disk image `file` (with the settings flags)")
	sf := addSettingsFlags(fs)
	nodeKey := fs.String("node-key", "", "provision this node key `file` on the disk image's perm")
	moduleDir := fs.String("module-dir", ".", "PC2 source tree to build the programs from")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *board == "" || *keyFile == "" || *out == "" {
		return usageErr("%s", releaseUsage)
	}
	b, err := boardByName(*board)
	if err != nil {
		return err
	}
	key, keyID, err := loadKeyID(*keyFile)
	if err != nil {
		return fmt.Errorf("release key: %w", err)
	}
	ids := []identity.ID{keyID}
	more, err := parseTrust(trust)
	if err != nil {
		return err
	}
	ids = append(ids, more...)
	o := release.Options{Board: b, Version: *version, MinVersion: *minVersion, Channel: *channel, Key: key, Trust: ids,
		Out: *out, Image: *img, ModuleDir: *moduleDir, Logger: env.logger()}
	if *img != "" {
		var s settings.Settings
		if err := sf.apply(&s); err != nil {
			return err
		}
		o.Settings = &s
		if *nodeKey != "" {
			data, err := readKeyFileBytes(*nodeKey)
			if err != nil {
				return err
			}
			o.PermFiles = map[string]image.PermFile{profile.KeyFile(""): {Data: data, Mode: 0o600}}
		}
	}
	if o.SourceDateEpoch, err = image.SourceDateEpochFromEnv(time.Now().Unix()); err != nil {
		return err
	}
	if o.Version == "" {
		// Later builds get higher versions; leading zeros are not
		// allowed in a version, so the time of day is not padded.
		t := time.Unix(o.SourceDateEpoch, 0).UTC()
		o.Version = fmt.Sprintf("0.%s.%d", t.Format("20060102"), t.Hour()*10000+t.Minute()*100+t.Second())
	}
	start := time.Now()
	res, err := release.Build(ctx, o)
	if err != nil {
		return err
	}
	m := res.Manifest
	fmt.Fprintf(env.Stdout, "release %s (%s, %s channel, min version %s) in %s, built in %s\n", m.Version, m.Board, m.Channel,
		m.MinVersion, res.Dir, time.Since(start).Round(time.Second))
	for _, n := range []string{manifest.Root, manifest.Boot} {
		if a, ok := m.Artifacts[n]; ok {
			fmt.Fprintf(env.Stdout, "  %-4s %s %d bytes sha256 %s\n", n, a.File, a.Size, a.SHA256)
		}
	}
	fmt.Fprintf(env.Stdout, "signed by %s\n", m.Signer)
	if res.Image != "" {
		fmt.Fprintf(env.Stdout, "disk image %s\n", res.Image)
	}
	return nil
}

// parseTrust reads release key IDs, DIDs or key files.
func parseTrust(vals []string) ([]identity.ID, error) {
	var ids []identity.ID
	for _, v := range vals {
		if id, err := identity.ParseIDOrDID(v); err == nil {
			ids = append(ids, id)
			continue
		}
		_, id, err := loadKeyID(v)
		if err != nil {
			return nil, fmt.Errorf("--trust %q: not a node ID, DID or key file: %w", v, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

const updateUsage = `usage: pc2 update --device HOST[:PORT] --bundle BUNDLE-DIR [--password-file FILE] [--no-wait] [--timeout 15m]
  the admin password comes from --password-file or $PC2_ADMIN_PASSWORD`

func runUpdate(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("update", env)
	dev := fs.String("device", "", "the device: `host[:port]` of its port 4200, or its admin URL")
	dir := fs.String("bundle", "", "release bundle `folder` (pc2 release -o)")
	pwFile := fs.String("password-file", "", "`file` holding the device's admin password")
	noWait := fs.Bool("no-wait", false, "return once the device accepted the update, without waiting for the new version")
	timeout := fs.Duration("timeout", 15*time.Minute, "how long to wait for the device to run the new version")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *dev == "" || *dir == "" {
		return usageErr("%s", updateUsage)
	}
	pw := os.Getenv("PC2_ADMIN_PASSWORD")
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return fmt.Errorf("admin password: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	if pw == "" {
		return usageErr("no admin password: --password-file or $PC2_ADMIN_PASSWORD")
	}
	base := *dev
	if !strings.Contains(base, "://") {
		if !strings.Contains(base, ":") || strings.HasSuffix(base, "]") {
			base += ":4200"
		}
		base = "http://" + base
	}
	b, err := updateapi.OpenBundle(*dir)
	if err != nil {
		return err
	}
	c := &updateapi.Client{Base: base, Password: pw}
	start := time.Now()
	before, err := c.Status(ctx, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "device %s runs %s (%s); pushing %s\n", base, before.Version, before.Board, b.Manifest.Version)
	a, sent, err := c.Push(ctx, b)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "sent %d bytes in %s; the device wrote %s and reboots into its test boot\n",
		sent, time.Since(start).Round(time.Millisecond), a.Version)
	if *noWait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the device did not report the outcome of %s within %s", a.Version, *timeout)
		case <-time.After(time.Second):
		}
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := c.Status(rctx, false)
		rcancel()
		if err != nil || st.Testing != nil || st.Last == nil || st.Last.Version != a.Version || !st.Last.Time.After(start.Add(-time.Minute)) {
			continue // rebooting, or still testing
		}
		switch st.Last.Outcome {
		case updateapi.Installed:
			fmt.Fprintf(env.Stdout, "%s installed: the device runs it, %s after the update command\n", st.Version, time.Since(start).Round(time.Second))
			return nil
		default:
			return errors.New("the device " + st.Last.Outcome + " " + a.Version + ": " + st.Last.Reason + "; it runs " + st.Version)
		}
	}
}
