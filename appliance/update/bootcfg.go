package update

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/image/fat16"
)

// gokrazy's test-boot flags: try_boot_inactive=1 makes gokrazy's init
// switch into the inactive root once, and replaces itself by
// switch_on_boot=1 when it does (nothing reads that one).
const (
	flagTryInactive  = "gokrazy.try_boot_inactive=1"
	flagSwitchOnBoot = "gokrazy.switch_on_boot=1"
)

// ErrBootConfig is wrapped by errors about the boot partition's command
// line files.
var ErrBootConfig = errors.New("update: boot configuration")

// bootVolume is a boot partition: its FAT16 file system from offset 0.
type bootVolume = fat16.ReadWriterAt

// cmdline is one command line file of a boot partition.
type cmdline struct {
	path string
	data []byte
}

// readCmdlines returns the command line files vol has (cmdline.txt must
// be there).
func readCmdlines(vol bootVolume) ([]cmdline, error) {
	var out []cmdline
	for _, p := range manifest.CmdlineFiles {
		b, err := fat16.ReadFile(vol, p)
		if errors.Is(err, fs.ErrNotExist) && p != manifest.CmdlineFiles[0] {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBootConfig, err)
		}
		out = append(out, cmdline{path: p, data: b})
	}
	return out, nil
}

// cmdlineLine returns the start and end of the line of data holding the
// kernel command line: the one with a root= field. Lines end at '\n' or
// '\r' (systemd-boot's entry ends its other lines in '\r').
func cmdlineLine(data []byte) (start, end int, err error) {
	i := bytes.Index(data, []byte("root="))
	for i > 0 && data[i-1] != ' ' && data[i-1] != '\n' && data[i-1] != '\r' {
		j := bytes.Index(data[i+1:], []byte("root="))
		if j < 0 {
			i = -1
			break
		}
		i += 1 + j
	}
	if i < 0 {
		return 0, 0, fmt.Errorf("%w: no root= on the kernel command line", ErrBootConfig)
	}
	start = bytes.LastIndexAny(data[:i], "\r\n") + 1
	end = bytes.IndexAny(data[i:], "\r\n")
	if end < 0 {
		return 0, 0, fmt.Errorf("%w: the kernel command line has no line end", ErrBootConfig)
	}
	return start, i + end, nil
}

// editCmdline applies edit to the fields of data's command line and pads
// the result to data's length (spaces after the final newline).
func editCmdline(data []byte, edit func(fields []string) []string) ([]byte, error) {
	start, end, err := cmdlineLine(data)
	if err != nil {
		return nil, err
	}
	line := strings.Join(edit(strings.Fields(string(data[start:end]))), " ")
	last := bytes.LastIndexByte(data, '\n')
	if last < end {
		return nil, fmt.Errorf("%w: the kernel command line has no final newline", ErrBootConfig)
	}
	out := make([]byte, 0, len(data))
	out = append(out, data[:start]...)
	out = append(out, line...)
	out = append(out, data[end:last+1]...)
	if len(out) > len(data) {
		return nil, fmt.Errorf("%w: the edited command line does not fit the file's %d bytes", ErrBootConfig, len(data))
	}
	return append(out, bytes.Repeat([]byte(" "), len(data)-len(out))...), nil
}

// rootField returns the root= field of data's command line.
func rootField(data []byte) (string, error) {
	start, end, err := cmdlineLine(data)
	if err != nil {
		return "", err
	}
	for _, f := range strings.Fields(string(data[start:end])) {
		if strings.HasPrefix(f, "root=") {
			return f, nil
		}
	}
	return "", fmt.Errorf("%w: no root= field", ErrBootConfig)
}

// rootPartition returns the partition number (2 or 3) a root= field
// names: the GPT form root=PARTUUID=<p1 GUID>/PARTNROFF=1|2 or the MBR form
// root=PARTUUID=<signature>-02|03 that image.Build and gokrazy use.
func rootPartition(field string) (int, error) {
	v := strings.TrimPrefix(field, "root=PARTUUID=")
	if v == field {
		return 0, fmt.Errorf("%w: %q is not a root=PARTUUID= field", ErrBootConfig, field)
	}
	if _, off, ok := strings.Cut(v, "/PARTNROFF="); ok {
		n, err := strconv.Atoi(off)
		if err != nil || n < 1 || n > 2 {
			return 0, fmt.Errorf("%w: %q names no root partition", ErrBootConfig, field)
		}
		return n + 1, nil
	}
	if i := strings.LastIndexByte(v, '-'); i > 0 {
		n, err := strconv.ParseUint(v[i+1:], 16, 8)
		if err == nil && len(v[i+1:]) == 2 && (n == 2 || n == 3) {
			return int(n), nil
		}
	}
	return 0, fmt.Errorf("%w: %q names no root partition", ErrBootConfig, field)
}

// withPartition returns field naming partition p instead.
func withPartition(field string, p int) (string, error) {
	if _, err := rootPartition(field); err != nil {
		return "", err
	}
	if i := strings.Index(field, "/PARTNROFF="); i >= 0 {
		return field[:i] + "/PARTNROFF=" + strconv.Itoa(p-1), nil
	}
	return field[:len(field)-2] + fmt.Sprintf("%02x", p), nil
}

// setRoot replaces the root= field by root and removes the test-boot
// flags.
func setRoot(root string) func([]string) []string {
	return func(fields []string) []string {
		out := fields[:0:0]
		for _, f := range fields {
			switch {
			case f == flagTryInactive || f == flagSwitchOnBoot:
				continue
			case strings.HasPrefix(f, "root="):
				f = root
			}
			out = append(out, f)
		}
		return out
	}
}

// addTryInactive adds gokrazy's test-boot flag.
func addTryInactive(fields []string) []string {
	for _, f := range fields {
		if f == flagTryInactive {
			return fields
		}
	}
	return append(fields, flagTryInactive)
}

// bootConfig is the command line state of a boot partition.
type bootConfig struct {
	root      string // root= field of cmdline.txt
	partition int    // the partition it names
	testBoot  bool   // cmdline.txt asks gokrazy's init for a test boot
	flags     bool   // a test-boot flag is on some command line
}

// readBootConfig reads vol's command lines.
func readBootConfig(vol bootVolume) (bootConfig, error) {
	files, err := readCmdlines(vol)
	if err != nil {
		return bootConfig{}, err
	}
	var c bootConfig
	if c.root, err = rootField(files[0].data); err != nil {
		return c, err
	}
	if c.partition, err = rootPartition(c.root); err != nil {
		return c, err
	}
	for i, f := range files {
		s, e, err := cmdlineLine(f.data)
		if err != nil {
			return c, fmt.Errorf("%s: %w", f.path, err)
		}
		fields := strings.Fields(string(f.data[s:e]))
		for _, fl := range fields {
			if fl == flagTryInactive || fl == flagSwitchOnBoot {
				c.flags = true
				if i == 0 && fl == flagTryInactive {
					c.testBoot = true
				}
			}
		}
	}
	return c, nil
}

// rewriteCmdlines edits every command line file of vol in place (same
// length: only the files' data is written).
func rewriteCmdlines(vol bootVolume, edit func([]string) []string, only0 bool) error {
	files, err := readCmdlines(vol)
	if err != nil {
		return err
	}
	if only0 {
		files = files[:1]
	}
	for _, f := range files {
		b, err := editCmdline(f.data, edit)
		if err != nil {
			return fmt.Errorf("%s: %w", f.path, err)
		}
		if bytes.Equal(b, f.data) {
			continue
		}
		if err := fat16.Rewrite(vol, f.path, b); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBootConfig, f.path, err)
		}
	}
	return nil
}

// selectRoot makes every command line of vol boot partition p, without
// test-boot flags.
func selectRoot(vol bootVolume, p int) error {
	c, err := readBootConfig(vol)
	if err != nil {
		return err
	}
	root, err := withPartition(c.root, p)
	if err != nil {
		return err
	}
	return rewriteCmdlines(vol, setRoot(root), false)
}

// enableTestBoot asks gokrazy's init to boot the inactive root once: the
// flag goes on cmdline.txt, the only file gokrazy's init reads it from.
func enableTestBoot(vol bootVolume) error {
	return rewriteCmdlines(vol, addTryInactive, true)
}
