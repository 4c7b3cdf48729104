// Package wrkbench runs wrk, the closed-loop HTTP load generator, for
// the benchmarks and reads its figures: answers, their latency
// percentiles, answers other than 2xx/3xx and socket errors.
package wrkbench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Script makes wrk dial 127.0.0.1 whatever the URL's host (so the URL
// carries the Host a visitor's browser would send) and print its
// figures on one line that Parse reads.
const Script = `
wrk.resolve = function(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
done = function(summary, latency, requests)
  io.write(string.format("pc2-wrk requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f status=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
`

// StatusScript is Script that also counts the answers of each status
// above 399 and prints a "pc2-wrk-status code=N count=M" line for each
// (ParseStatuses reads them): for finding out why answers failed, at a
// cost in wrk's own speed (a Lua call per answer).
const StatusScript = Script + `
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) failed = {} end
response = function(status, headers, body)
  if status > 399 then failed[status] = (failed[status] or 0) + 1 end
end
local summarize = done
done = function(summary, latency, requests)
  summarize(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("failed")) do all[code] = (all[code] or 0) + n end
  end
  for code, n in pairs(all) do io.write(string.format("pc2-wrk-status code=%d count=%d\n", code, n)) end
end
`

// ParseStatuses reads StatusScript's counts of failed answers by status.
func ParseStatuses(out string) map[int]int64 {
	m := map[int]int64{}
	for _, l := range strings.Split(out, "\n") {
		var code int
		var n int64
		if _, err := fmt.Sscanf(l, "pc2-wrk-status code=%d count=%d", &code, &n); err == nil {
			m[code] += n
		}
	}
	return m
}

// WriteStatusScript writes StatusScript into dir and returns its path.
func WriteStatusScript(dir string) (string, error) {
	p := filepath.Join(dir, "pc2-status.lua")
	return p, os.WriteFile(p, []byte(StatusScript), 0o644)
}

// WriteScript writes Script into dir and returns its path.
func WriteScript(dir string) (string, error) {
	p := filepath.Join(dir, "pc2.lua")
	return p, os.WriteFile(p, []byte(Script), 0o644)
}

// Result is one run's figures.
type Result struct {
	Requests int64         // answers
	Duration time.Duration // of the run
	P50, P99 time.Duration
	Status   int64 // answers other than 2xx and 3xx
	// Socket errors: connect, read, write, timeout.
	Connect, Read, Write, Timeout int64
}

// RPS is the 2xx and 3xx answers per second.
func (r Result) RPS() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Requests-r.Status) / r.Duration.Seconds()
}

// Errors are the socket errors.
func (r Result) Errors() int64 { return r.Connect + r.Read + r.Write + r.Timeout }

// Parse reads Script's line from wrk's output.
func Parse(out string) (Result, error) {
	i := strings.Index(out, "pc2-wrk ")
	if i < 0 {
		return Result{}, fmt.Errorf("wrk printed no figures: %s", out)
	}
	var durUS, p50, p99 int64
	var r Result
	if _, err := fmt.Sscanf(out[i:], "pc2-wrk requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d connect=%d read=%d write=%d timeout=%d",
		&r.Requests, &durUS, &p50, &p99, &r.Status, &r.Connect, &r.Read, &r.Write, &r.Timeout); err != nil {
		return Result{}, fmt.Errorf("wrk's figures: %v: %s", err, out)
	}
	r.Duration, r.P50, r.P99 = time.Duration(durUS)*time.Microsecond, time.Duration(p50)*time.Microsecond, time.Duration(p99)*time.Microsecond
	return r, nil
}

// Load is one run of wrk.
type Load struct {
	URL      string
	Conns    int
	Threads  int           // 0: 2
	Duration time.Duration // whole seconds, at least one
	Timeout  time.Duration // per request, whole seconds; 0: 5 s
	Headers  []string      // "Name: value"
}

// Command is wrk's command line for l with script.
func Command(wrk, script string, l Load) *exec.Cmd {
	threads, timeout := l.Threads, l.Timeout
	if threads <= 0 {
		threads = 2
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(l.Conns), "-d", fmt.Sprintf("%ds", max(1, int(l.Duration.Seconds()))),
		"--timeout", fmt.Sprintf("%ds", max(1, int(timeout.Seconds()))), "-s", script}
	for _, h := range l.Headers {
		args = append(args, "-H", h)
	}
	return exec.Command(wrk, append(args, l.URL)...)
}

// Run runs wrk for l and returns its figures and output.
func Run(wrk, script string, l Load) (Result, string, error) {
	cmd := Command(wrk, script, l)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return Result{}, out.String(), fmt.Errorf("wrk: %v: %s", err, out.String())
	}
	r, err := Parse(out.String())
	return r, out.String(), err
}
