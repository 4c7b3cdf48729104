package image

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// entry is one file system object of the root.
type entry struct {
	mode   fs.FileMode // type bits and permissions
	data   []byte      // regular file contents, or
	src    string      // host file to copy
	target string      // symlink target
}

// mountpoints are the directories gokrazy's init mounts on (mount.go in
// github.com/gokrazy/gokrazy); a read-only root cannot create them at boot.
var mountpoints = []string{"/dev", "/etc", "/mnt", "/perm", "/proc", "/run", "/sys", "/tmp", "/gokrazy", "/user"}

// rootTree is the root file system as gokrazy expects it.
//
// /etc/resolv.conf must exist: if it does not, gokrazy.Boot mounts a tmpfs
// over /etc, hiding /etc/hostname and /etc/gokr-pw.txt. It points to
// /tmp/resolv.conf, which gokrazy's dhcp writes. /var points into /perm,
// which gokrazy.Boot prepares. lib/ of the kernel module (kernel modules)
// is copied when present. firmware (Board.LinuxFirmware's contents) and
// Board.LinuxFirmwareLinks go under /lib/firmware, where the kernel's
// firmware loader looks.
func rootTree(opts Options, bins []program, kernelDir string, firmware map[string][]byte) (map[string]entry, error) {
	t := map[string]entry{}
	for _, d := range mountpoints {
		t[d] = entry{mode: fs.ModeDir | 0o755}
	}
	t["/etc/resolv.conf"] = entry{mode: fs.ModeSymlink | 0o777, target: "/tmp/resolv.conf"}
	t["/var"] = entry{mode: fs.ModeSymlink | 0o777, target: "/perm/var"}
	t["/etc/hosts"] = entry{mode: 0o644, data: []byte("127.0.0.1 localhost\n::1 localhost\n")}
	t["/etc/hostname"] = entry{mode: 0o644, data: []byte("pc2")}
	for _, b := range bins {
		t[b.rootPath] = entry{mode: 0o755, src: b.file}
	}
	for p, data := range opts.ExtraFiles {
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(p, "gokr-pw.txt") {
			mode = 0o600
		}
		t[p] = entry{mode: mode, data: data}
	}
	lib := filepath.Join(kernelDir, "lib")
	if _, err := os.Stat(lib); err == nil {
		err := filepath.WalkDir(lib, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(kernelDir, p)
			rp := "/" + filepath.ToSlash(rel)
			if d.IsDir() {
				t[rp] = entry{mode: fs.ModeDir | 0o755}
			} else if d.Type().IsRegular() {
				t[rp] = entry{mode: 0o644, src: p}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("kernel lib: %w", err)
		}
	}
	for p, data := range firmware {
		t[path.Join("/lib/firmware", p)] = entry{mode: 0o644, data: data}
	}
	for link, target := range opts.Board.LinuxFirmwareLinks {
		t[path.Join("/lib/firmware", link)] = entry{mode: fs.ModeSymlink | 0o777, target: target}
	}
	// Parents of everything.
	for p := range t {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := t[d]; !ok {
				t[d] = entry{mode: fs.ModeDir | 0o755}
			}
		}
	}
	return t, nil
}

// writeSquashfs packs tree into a squashfs at dst and returns its size.
//
// It stages the tree in a temporary directory and runs mksquashfs
// (squashfs-tools). github.com/diskfs/go-diskfs was tried first, but its
// writer reads extended attributes through symlinks, so it fails on (or,
// worse, reads the host's files through) the absolute symlinks gokrazy needs,
// such as /etc/resolv.conf -> /tmp/resolv.conf. mksquashfs's -reproducible,
// -mkfs-time, -all-time and -all-root make the output depend only on the
// tree.
func writeSquashfs(ctx context.Context, dst string, tree map[string]entry, mtime time.Time, maxSize int64) (int64, error) {
	stage, err := os.MkdirTemp("", "pc2-root-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(stage)
	ws := filepath.Join(stage, "root")

	paths := make([]string, 0, len(tree))
	for p := range tree {
		paths = append(paths, p)
	}
	sort.Strings(paths) // parents before children
	if err := os.Mkdir(ws, 0o755); err != nil {
		return 0, err
	}
	for _, p := range paths {
		e := tree[p]
		host := filepath.Join(ws, filepath.FromSlash(p))
		switch {
		case e.mode.IsDir():
			err = os.MkdirAll(host, 0o755)
		case e.mode&fs.ModeSymlink != 0:
			err = os.Symlink(e.target, host)
		case e.src != "":
			err = copyFile(host, e.src)
		default:
			err = os.WriteFile(host, e.data, 0o644)
		}
		if err == nil && e.mode&fs.ModeSymlink == 0 {
			err = os.Chmod(host, e.mode.Perm()) // not subject to umask
		}
		if err != nil {
			return 0, fmt.Errorf("stage %s: %w", p, err)
		}
	}
	_ = os.Remove(dst)
	epoch := fmt.Sprint(mtime.Unix())
	cmd := exec.CommandContext(ctx, "mksquashfs", ws, dst,
		"-noappend", "-quiet", "-no-progress",
		"-comp", "gzip", // CONFIG_SQUASHFS_ZLIB in kernel.amd64
		"-reproducible", "-all-root", "-no-xattrs",
		"-mkfs-time", epoch, "-all-time", epoch)
	// mksquashfs refuses -mkfs-time/-all-time when SOURCE_DATE_EPOCH is
	// set (pc2 image build reads it too); the flags carry the same time.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("mksquashfs (apt-get install squashfs-tools): %w\n%s", err, out)
	}
	st, err := os.Stat(dst)
	if err != nil {
		return 0, err
	}
	if st.Size() > maxSize {
		return 0, fmt.Errorf("root file system is %d bytes, root partition %d", st.Size(), maxSize)
	}
	return st.Size(), nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
