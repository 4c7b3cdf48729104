package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// partStart is where p1 begins; 1 MiB alignment suits every flash medium.
// The same room at the end holds the backup GPT.
const partStart = 1 * MiB

// guids are the disk's identifiers, all derived from one hash.
type guids struct {
	disk     string
	parts    [4]string // p1..p4
	permUUID string    // ext4 file system UUID
	permHash string    // ext4 directory hash seed
	volumeID uint32    // FAT volume serial
}

func newGUIDs(seed [32]byte) guids {
	derive := func(label string) [16]byte {
		s := sha256.Sum256(append([]byte(label+"\x00"), seed[:]...))
		var b [16]byte
		copy(b[:], s[:16])
		b[6] = b[6]&0x0f | 0x40 // version 4 layout, as random GUIDs have
		b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
		return b
	}
	str := func(b [16]byte) string {
		return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	}
	g := guids{disk: str(derive("disk"))}
	part := derive("partitions")
	for i := range g.parts {
		// Like gokrazy's packer, the partitions share a prefix and end in
		// their number, which makes them easy to recognise.
		p := part
		p[14], p[15] = 0, byte(i+1)
		g.parts[i] = str(p)
	}
	g.permUUID = str(derive("perm uuid"))
	g.permHash = str(derive("perm hash seed"))
	v := derive("fat volume id")
	g.volumeID = binary.LittleEndian.Uint32(v[:4])
	return g
}

// mbrID is the MBR disk signature as the kernel prints it in PARTUUIDs
// (8 lower-case hex digits), derived from the disk GUID.
func (g guids) mbrID() string {
	return strings.ToLower(strings.ReplaceAll(g.disk, "-", "")[:8])
}

// layout is the partitions' byte offsets and sizes.
type layout struct {
	start, size [4]int64
	total       int64
}

func diskLayout(o Options) layout {
	var l layout
	off := int64(partStart)
	for i, s := range []int64{o.BootSize, o.RootSize, o.RootSize, o.PermSize} {
		l.start[i], l.size[i] = off, s
		off += s
	}
	l.total = off + partStart
	return l
}

// writeDisk assembles the disk image at opts.Output.
func writeDisk(ctx context.Context, opts Options, g guids, boot []byte, rootPath string, mtime time.Time) error {
	l := diskLayout(opts)
	tmp := opts.Output + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer f.Close()
	if err := f.Truncate(l.total); err != nil {
		return err
	}

	if opts.Board.MBR {
		sig, err := strconv.ParseUint(g.mbrID(), 16, 32)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(mbrSector(uint32(sig), l), 0); err != nil {
			return fmt.Errorf("mbr: %w", err)
		}
	} else {
		bios := opts.Board.BIOSBootCode != ""
		if err := writeGPT(f, g, l, bios); err != nil {
			return err
		}
		if bios {
			if err := writeBIOSBootCode(f, opts.Board.BIOSBootCode); err != nil {
				return err
			}
		}
	}

	if int64(len(boot)) != l.size[0] {
		return fmt.Errorf("boot partition is %d bytes, want %d", len(boot), l.size[0])
	}
	if err := writeSparse(f, l.start[0], bytes.NewReader(boot)); err != nil {
		return fmt.Errorf("write boot: %w", err)
	}
	root, err := os.Open(rootPath)
	if err != nil {
		return err
	}
	defer root.Close()
	if st, err := root.Stat(); err != nil {
		return err
	} else if st.Size() > l.size[1] {
		return fmt.Errorf("root file system is %d bytes, root partition %d", st.Size(), l.size[1])
	}
	if err := writeSparse(f, l.start[1], root); err != nil {
		return fmt.Errorf("write root: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := mkfsExt4(ctx, tmp, l.start[3], l.size[3], g, mtime, opts.PermFiles); err != nil {
		return err
	}
	return os.Rename(tmp, opts.Output)
}

// writeGPT writes the GPT (with protective MBR) for l; biosBoot marks p1
// legacy BIOS bootable (see bios.go).
func writeGPT(f *os.File, g guids, l layout, biosBoot bool) error {
	types := []gpt.Type{gpt.EFISystemPartition, gpt.LinuxFilesystem, gpt.LinuxFilesystem, gpt.LinuxFilesystem}
	names := []string{"boot", "root A", "root B", "perm"}
	table := &gpt.Table{
		LogicalSectorSize:  512,
		PhysicalSectorSize: 512,
		GUID:               g.disk,
		ProtectiveMBR:      true,
	}
	for i := range 4 {
		var attrs uint64
		if biosBoot && i == 0 {
			attrs = legacyBIOSBootable
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index:      i + 1,
			Start:      uint64(l.start[i] / 512),
			End:        uint64((l.start[i]+l.size[i])/512 - 1),
			Size:       uint64(l.size[i]),
			Type:       types[i],
			Name:       names[i],
			GUID:       g.parts[i],
			Attributes: attrs,
		})
	}
	if err := table.Write(f, l.total); err != nil {
		return fmt.Errorf("gpt: %w", err)
	}
	return nil
}

// mbrSector is an MBR (DOS) partition table for l with disk signature sig.
// go-diskfs' MBR writer cannot set the signature, which root=PARTUUID=
// names, and the format is one sector: entries at 446, 16 bytes each,
// CHS fields set to the "use LBA" values, boot signature 0x55aa.
func mbrSector(sig uint32, l layout) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[440:], sig) // 444-445 stay zero, as gokrazy's rootdev expects
	types := []byte{0x0e, 0x83, 0x83, 0x83}     // FAT16 LBA, Linux
	for i := range 4 {
		e := b[446+16*i:]
		if i == 0 {
			e[0] = 0x80 // active
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = types[i]
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(l.start[i]/512))
		binary.LittleEndian.PutUint32(e[12:], uint32(l.size[i]/512))
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

// mkfsExt4 formats the perm partition inside the image file, populated
// with files (mkfs.ext4 -d from a staging directory). The UUID, hash seed,
// E2FSPROGS_FAKE_TIME and fixed file times make the result reproducible.
func mkfsExt4(ctx context.Context, img string, offset, size int64, g guids, mtime time.Time, files map[string]PermFile) error {
	const blockSize = 4096
	args := []string{"-q", "-F",
		"-b", fmt.Sprint(blockSize),
		"-L", "perm",
		"-U", g.permUUID,
		"-E", fmt.Sprintf("offset=%d,hash_seed=%s,root_owner=0:0", offset, g.permHash),
	}
	if len(files) > 0 {
		stage, err := os.MkdirTemp("", "pc2-perm-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(stage)
		if err := stagePerm(stage, files, mtime); err != nil {
			return fmt.Errorf("perm files: %w", err)
		}
		args = append(args, "-d", stage)
	}
	args = append(args, img, fmt.Sprint(size/blockSize))
	cmd := exec.CommandContext(ctx, "mkfs.ext4", args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", mtime.Unix()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 (apt-get install e2fsprogs): %w\n%s", err, out)
	}
	return nil
}

// stagePerm writes files below dir with their modes and mtime; directories
// are 0700 (perm holds keys).
func stagePerm(dir string, files map[string]PermFile, mtime time.Time) error {
	var dirs []string
	for _, name := range sortedKeys(files) {
		clean := filepath.Clean("/" + name)[1:]
		if clean == "" || clean != name {
			return fmt.Errorf("%q: want a clean relative path", name)
		}
		p := filepath.Join(dir, clean)
		for d := filepath.Dir(p); d != dir; d = filepath.Dir(d) {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, d)
		}
		mode := files[name].Mode.Perm()
		if mode == 0 {
			mode = 0o600
		}
		if err := os.WriteFile(p, files[name].Data, mode); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil { // umask must not widen or narrow it
			return err
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			return err
		}
	}
	for _, d := range append(dirs, dir) {
		if err := os.Chtimes(d, mtime, mtime); err != nil {
			return err
		}
	}
	return nil
}

// writeSparse copies r to w at off, skipping all-zero 4 KiB blocks, which
// the file system then stores as holes.
func writeSparse(w io.WriterAt, off int64, r io.Reader) error {
	buf := make([]byte, 4096)
	zero := make([]byte, 4096)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := w.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// writeSparseFile writes b to a new file at path, sparsely.
func writeSparseFile(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		f.Close()
		return err
	}
	if err := writeSparse(f, 0, bytes.NewReader(b)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
