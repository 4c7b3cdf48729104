package update

import "github.com/pc2/pc2/image/fat16"

// The boot configuration's internals, for the tests of package
// update_test: they share the fixtures of packages updateapi and pull
// (updatetest), which import this package.
var (
	RootPartition  = rootPartition
	WithPartition  = withPartition
	RootField      = rootField
	EditCmdline    = editCmdline
	SetRoot        = setRoot
	AddTryInactive = addTryInactive
	SelectRoot     = selectRoot
	EnableTestBoot = enableTestBoot
)

// ExitsFile is where NoteExit writes, in the updater's directory.
const ExitsFile = exitsFile

// BootConfig is bootConfig with its fields exported.
type BootConfig struct {
	Root      string
	Partition int
	TestBoot  bool
	Flags     bool
}

// ReadBootConfig is readBootConfig.
func ReadBootConfig(vol fat16.ReadWriterAt) (BootConfig, error) {
	c, err := readBootConfig(vol)
	return BootConfig{Root: c.root, Partition: c.partition, TestBoot: c.testBoot, Flags: c.flags}, err
}
