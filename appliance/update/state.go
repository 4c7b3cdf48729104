package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/internal/atomicfile"
)

// Files in the updater's directory on perm (StateDir).
const (
	stateFile  = "state.json"
	logFile    = "last.log"
	stagingDir = "staging"
	exitsFile  = "exits.log"
	// maxLog bounds the update log; lines past it are dropped with a note.
	maxLog = 256 << 10
)

// Outcomes of an update.
const (
	Installed  = "installed"   // tested and committed: the new version runs
	RolledBack = "rolled back" // tested and failed: the old version runs
	Refused    = "refused"     // bad signature, board, downgrade, artifact
	Failed     = "failed"      // could not be written (disk, network)
)

// State is what the updater keeps on perm across reboots.
type State struct {
	// Floor is the highest min_version of the releases installed here:
	// nothing below it is accepted.
	Floor string `json:"floor,omitempty"`
	// Pending is an update written and waiting for its test boot's
	// verdict.
	Pending *Pending `json:"pending,omitempty"`
	// Last is the last update's result.
	Last *Result `json:"last,omitempty"`
	// Installing is the update being written (its outcome still empty):
	// found at a start, the device stopped in the middle of it.
	Installing *Result `json:"installing,omitempty"`
}

// Pending is an update between its install and its commit or rollback.
type Pending struct {
	Version    string `json:"version"`
	From       string `json:"from"`
	MinVersion string `json:"min_version"`
	// Partition is the root partition written (2 or 3).
	Partition   int       `json:"partition"`
	BootWritten bool      `json:"boot_written,omitempty"`
	Source      string    `json:"source"` // push, pull
	Installed   time.Time `json:"installed"`
	// HealthTimeout is how long the new system has after it starts to
	// pass its health check.
	HealthTimeout config.Duration `json:"health_timeout"`
	// Failure, when set, is why the test boot failed (set by the new
	// system before it returns to the old one).
	Failure string `json:"failure,omitempty"`
}

// Result is the outcome of one update.
type Result struct {
	Version string    `json:"version"`
	From    string    `json:"from,omitempty"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	Source  string    `json:"source,omitempty"`
	Time    time.Time `json:"time"`
}

// store reads and writes the state and the log in dir.
type store struct {
	dir string
	mu  sync.Mutex
}

func (s *store) load() (*State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(s.dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := config.Decode(filepath.Join(s.dir, stateFile), b, &st); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	return &st, nil
}

func (s *store) save(st *State) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.dir, stateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("update: save state: %w", err)
	}
	return nil
}

// logf appends a time-stamped line to the update log (synced: the line
// must survive the reboot that may follow).
func (s *store) logf(now time.Time, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := filepath.Join(s.dir, logFile)
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return
	}
	line := now.UTC().Format(time.RFC3339) + " " + fmt.Sprintf(format, args...) + "\n"
	if fi, err := os.Stat(p); err == nil && fi.Size()+int64(len(line)) > maxLog {
		return
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	f.WriteString(line)
	f.Sync()
	f.Close()
}

// newLog starts the log of a new update.
func (s *store) newLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	os.Remove(filepath.Join(s.dir, logFile))
	os.Remove(filepath.Join(s.dir, exitsFile))
}

// readLog returns the update log.
func (s *store) readLog() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, logFile))
	return string(b)
}

// lastExit returns the last line NoteExit wrote and how many there are.
func (s *store) lastExit() (string, int) {
	b, err := os.ReadFile(filepath.Join(s.dir, exitsFile))
	if err != nil {
		return "", 0
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return string(lines[len(lines)-1]), len(lines)
}
