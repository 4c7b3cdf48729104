package device

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Process is one process's memory for GET /api/device (the appliance's
// figures are the sum over all of them: everything on the box is ours or
// gokrazy's).
type Process struct {
	PID     int    `json:"pid"`
	Name    string `json:"name"`
	Command string `json:"command"`
	RSSKiB  int    `json:"rss_kib"`
}

// processes lists the processes under procDir (normally /proc) with their
// resident memory, largest first; kernel threads (no memory) are left out.
func processes(procDir string) []Process {
	entries, _ := os.ReadDir(procDir)
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(procDir, e.Name())
		status, err := os.ReadFile(filepath.Join(dir, "status"))
		if err != nil {
			continue // exited meanwhile
		}
		p := Process{PID: pid}
		sc := bufio.NewScanner(bytes.NewReader(status))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			v = strings.TrimSpace(v)
			switch k {
			case "Name":
				p.Name = v
			case "VmRSS":
				p.RSSKiB, _ = strconv.Atoi(strings.TrimSuffix(v, " kB"))
			}
		}
		if p.RSSKiB == 0 {
			continue
		}
		if cmd, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.Command = strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RSSKiB > out[j].RSSKiB })
	return out
}
