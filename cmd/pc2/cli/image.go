package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/release"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/boards/x86"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/image/vm"
)

func init() {
	register("image", "build an appliance image or run one in QEMU", runImage)
}

// knownBoards are the boards images can be built for.
var knownBoards = map[string]boards.Board{"x86": x86.Board, "qemu": qemu.Board, "qemuarm64": qemuarm64.Board, "rpi": rpi.Board}

const imageUsage = `usage:
  pc2 image build --board x86|qemu|qemuarm64|rpi --profile personal|supernode [--settings FILE] [SETTINGS FLAGS] [--key FILE]
                  [--version X.Y.Z] [--release-key ID]... -o pc2.img
  pc2 image settings --image pc2.img [--show] [SETTINGS FLAGS] (pc2 image settings -h lists them)
  pc2 image run --image pc2.img [--arch amd64|arm64] [--bios] [--forward GUEST:HOST]... [--writable]`

func runImage(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return usageErr("%s", imageUsage)
	}
	switch args[0] {
	case "build":
		return imageBuild(ctx, env, args[1:])
	case "run":
		return imageRun(ctx, env, args[1:])
	case "settings":
		return imageSettings(ctx, env, args[1:])
	}
	return usageErr("unknown image command %q\n%s", args[0], imageUsage)
}

// boardByName returns a known board.
func boardByName(name string) (boards.Board, error) {
	b, ok := knownBoards[name]
	if !ok {
		names := make([]string, 0, len(knownBoards))
		for n := range knownBoards {
			names = append(names, n)
		}
		sort.Strings(names)
		return b, usageErr("board %q is not supported (have: %s)", name, strings.Join(names, ", "))
	}
	return b, nil
}

func imageBuild(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("image build", env)
	board := fs.String("board", "", "target board: x86, qemu, qemuarm64 or rpi")
	sf := addSettingsFlags(fs)
	keyFile := fs.String("key", "", "provision this node key `file` on perm (default: the device makes one on first boot)")
	gokrPW := fs.String("gokrazy-password-file", "", "password `file` for gokrazy's web interface (port 8080; none: it does not listen)")
	out := fs.String("o", "", "output image `file`")
	moduleDir := fs.String("module-dir", ".", "PC2 source tree to build the programs from")
	version := fs.String("version", "0.0.0", "the image's `version` (any signed release above it can update it)")
	var trust multiFlag
	fs.Var(&trust, "release-key", "release key `ID` (or DID, or key file) the image accepts updates from (repeatable; none: no updates)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *board == "" || *out == "" {
		return usageErr("%s", imageUsage)
	}
	keys, err := parseTrust(trust)
	if err != nil {
		return err
	}
	b, err := boardByName(*board)
	if err != nil {
		return err
	}
	var s settings.Settings
	if err := sf.apply(&s); err != nil {
		return err
	}
	p, err := profile.Build(&s)
	if err != nil {
		return err
	}
	perm := map[string]image.PermFile{}
	if *keyFile != "" {
		data, err := readKeyFileBytes(*keyFile)
		if err != nil {
			return err
		}
		perm[profile.KeyFile("")] = image.PermFile{Data: data, Mode: 0o600}
	}
	if *gokrPW != "" {
		pw, err := os.ReadFile(*gokrPW)
		if err != nil {
			return fmt.Errorf("gokrazy password: %w", err)
		}
		p.Files["/etc/gokr-pw.txt"] = []byte(strings.TrimSpace(string(pw)))
	}
	rel, err := release.Files(manifest.ReleaseInfo{Version: *version, Board: b.Name}, keys)
	if err != nil {
		return usageErr("--version: %v", err)
	}
	for k, v := range rel {
		p.Files[k] = v
	}
	epoch, err := image.SourceDateEpochFromEnv(time.Now().Unix())
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := image.Build(ctx, image.Options{
		Board: b, Programs: p.Programs, External: p.External, ExtraFiles: p.Files, PermFiles: perm, BootFiles: p.BootFiles,
		SourceDateEpoch: epoch, Output: *out, ModuleDir: *moduleDir, Logger: env.logger(),
		Vars: map[string]string{release.VersionVar: *version},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "image %s (board %s, profile %s) built in %s\nupdate artifacts: %s %s\n",
		res.Image, b.Name, s.Profile, time.Since(start).Round(time.Second), res.Root, res.Boot)
	return nil
}

// readKeyFileBytes reads a key file after checking it is a valid, private key.
func readKeyFileBytes(path string) ([]byte, error) {
	if _, _, err := loadKeyID(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

func imageRun(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("image run", env)
	img := fs.String("image", "", "disk image `file`")
	writable := fs.Bool("writable", false, "write to the image (default: changes are discarded)")
	arch := fs.String("arch", "amd64", "the image's architecture: amd64 (UEFI) or arm64 (-M virt)")
	bios := fs.Bool("bios", false, "boot an amd64 image (board x86 or qemu) with the legacy BIOS, SeaBIOS, instead of UEFI")
	var fwd multiFlag
	fs.Var(&fwd, "forward", "forward host loopback port to a guest port: `GUEST[:HOST]` (repeatable)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || *img == "" {
		return usageErr("%s", imageUsage)
	}
	forward := map[int]int{}
	for _, f := range fwd {
		g, h, _ := strings.Cut(f, ":")
		gp, err := strconv.Atoi(g)
		if err != nil {
			return usageErr("--forward %q: %v", f, err)
		}
		hp := 0
		if h != "" {
			if hp, err = strconv.Atoi(h); err != nil {
				return usageErr("--forward %q: %v", f, err)
			}
		}
		forward[gp] = hp
	}
	state, err := os.MkdirTemp("", "pc2-vm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	cmd, ports, err := vm.Command(filepath.Clean(*img), vm.Options{Forward: forward, Writable: *writable, StateDir: state, GOARCH: *arch, BIOS: *bios})
	if err != nil {
		return err
	}
	for g, h := range ports {
		fmt.Fprintf(env.Stderr, "guest port %d -> 127.0.0.1:%d\n", g, h)
	}
	cmd.Stdout, cmd.Stderr = env.Stdout, env.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s exited: %w", cmd.Path, err)
		}
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return nil
	}
}
