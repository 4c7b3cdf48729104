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
	// AnonKiB and FileKiB split RSS into private memory and pages mapped
	// from files (the binary's text, shared by processes that run the same
	// binary); PSSKiB divides shared pages among the processes that map
	// them, so the PSS of all processes adds up to the memory they use.
	AnonKiB int `json:"rss_anon_kib"`
	FileKiB int `json:"rss_file_kib"`
	PSSKiB  int `json:"pss_kib"`
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
				p.RSSKiB = kiB(v)
			case "RssAnon":
				p.AnonKiB = kiB(v)
			case "RssFile":
				p.FileKiB = kiB(v)
			}
		}
		if p.RSSKiB == 0 {
			continue
		}
		if rollup, err := os.ReadFile(filepath.Join(dir, "smaps_rollup")); err == nil {
			p.PSSKiB = field(rollup, "Pss")
		}
		if cmd, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.Command = strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RSSKiB > out[j].RSSKiB })
	return out
}

// kiB parses a /proc figure such as "1234 kB".
func kiB(v string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
	return n
}

// field returns the figure of the line "name: N kB" in a /proc file
// (0 when it is missing).
func field(b []byte, name string) int {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == name {
			return kiB(v)
		}
	}
	return 0
}

// Memory is the box's memory for GET /api/device.
type Memory struct {
	TotalKiB     int `json:"total_kib"`
	AvailableKiB int `json:"available_kib"`
	// TransparentHugePages is the kernel's THP mode ("always", "madvise"
	// or "never"; empty without THP).
	TransparentHugePages string `json:"transparent_hugepages,omitempty"`
}

// memory reads the box's memory from procDir/meminfo and the THP mode
// from sysDir.
func memory(procDir, sysDir string) Memory {
	var m Memory
	if b, err := os.ReadFile(filepath.Join(procDir, "meminfo")); err == nil {
		m.TotalKiB, m.AvailableKiB = field(b, "MemTotal"), field(b, "MemAvailable")
	}
	m.TransparentHugePages = thpMode(sysDir)
	return m
}

// thpMode returns the selected mode of the kernel's transparent huge
// pages, the bracketed word of sysDir/kernel/mm/transparent_hugepage/enabled.
func thpMode(sysDir string) string {
	b, err := os.ReadFile(filepath.Join(sysDir, "kernel/mm/transparent_hugepage/enabled"))
	if err != nil {
		return ""
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}
