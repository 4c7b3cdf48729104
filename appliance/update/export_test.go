package update

import "io"

// The boot configuration's internals, for the tests of package
// update_test: they share the fixtures of packages updateapi and pull
// (updatetest), which import this package.
var (
	RootField   = rootField
	EditCmdline = editCmdline
	SetRoot     = setRoot
	SelectRoot  = selectRoot
)

// ExitsFile is where NoteExit writes, in the updater's directory.
const ExitsFile = exitsFile

// BootConfig is bootConfig with its fields exported.
type BootConfig struct {
	Slot      string
	Partition int
}

// ReadBootConfig is readBootConfig.
func ReadBootConfig(vol io.ReaderAt) (BootConfig, error) {
	c, err := readBootConfig(vol)
	return BootConfig{Slot: c.slot, Partition: c.partition}, err
}
