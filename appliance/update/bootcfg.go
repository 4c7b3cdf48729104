package update

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
)

// ErrBootConfig is wrapped by errors about the boot partition's
// selectors and command lines.
var ErrBootConfig = errors.New("update: boot configuration")

// bootVolume is a boot partition: its FAT16 file system from offset 0.
type bootVolume = fat16.ReadWriterAt

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

// setRoot replaces the root= field by root.
func setRoot(root string) func([]string) []string {
	return func(fields []string) []string {
		out := fields[:0:0]
		for _, f := range fields {
			if strings.HasPrefix(f, "root=") {
				f = root
			}
			out = append(out, f)
		}
		return out
	}
}

// bootConfig is the selection of a boot partition.
type bootConfig struct {
	slot      string // the slot the selectors name
	partition int    // its root partition
}

// readBootConfig reads vol's selection.
func readBootConfig(vol io.ReaderAt) (bootConfig, error) {
	slot, err := bootslot.Selected(vol)
	if err != nil {
		return bootConfig{}, fmt.Errorf("%w: %w", ErrBootConfig, err)
	}
	p, err := bootslot.Partition(slot)
	return bootConfig{slot: slot, partition: p}, err
}

// selectRoot makes vol boot root partition p with its slot's kernel.
func selectRoot(vol bootVolume, p int) error {
	slot, err := bootslot.Of(p)
	if err != nil {
		return err
	}
	if err := bootslot.Select(vol, slot); err != nil {
		return fmt.Errorf("%w: %v", ErrBootConfig, err)
	}
	return nil
}
