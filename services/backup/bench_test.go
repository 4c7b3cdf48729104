package backup_test

// The backup benchmark (docs/benchmarks.md, "Backup and restore
// throughput (issue 17)"): a backup of a mixed gigabyte to a rest-server
// on loopback, a second one after 1 % of it changed, and a restore, each
// against plain file copies on the same disk in the same run.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
)

// The environment of this test binary when it runs as the meter's
// restic (resticMeter).
const (
	envMeterRestic = "PC2_BENCH_METER_RESTIC"
	envMeterLog    = "PC2_BENCH_METER_LOG"
)

func TestMain(m *testing.M) {
	if bin := os.Getenv(envMeterRestic); bin != "" {
		os.Exit(runMetered(bin, os.Getenv(envMeterLog), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// BenchmarkBackupThroughput: a first backup of PC2_BENCH_BACKUP_MB MiB of
// mixed files (default 1024) through Service.BackupNow to a rest-server
// on loopback, a second backup after about 1 % of the bytes changed, and
// a Service.Restore of the whole folder, with plain copies of the same
// files on the same disk in the same run. Each iteration is the whole
// story with a fresh repository (under a minute for 1 GiB on 2 cores),
// so run it once:
//
//	go test -run '^$' -bench BackupThroughput -benchtime 1x -timeout 30m -v ./services/backup/
//
// PC2_BENCH_BACKUP_MB=64 makes a quick run. Everything (data, copies,
// repository, restic's cache, restores) is under os.TempDir(): set TMPDIR
// to measure another disk. MB are 10^6 bytes; figures of several
// iterations are totals over all of them (rates) or means (the rest).
func BenchmarkBackupThroughput(b *testing.B) {
	size := int64(1024) << 20
	if s := os.Getenv("PC2_BENCH_BACKUP_MB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 8 {
			b.Fatalf("PC2_BENCH_BACKUP_MB=%q: want a number of MiB, at least 8", s)
		}
		size = int64(n) << 20
	}
	restic := restictest.Restic(b)
	meter := newResticMeter(b, restic)
	tmp := b.TempDir()
	start := time.Now()
	d := makeDataset(b, filepath.Join(tmp, "cloud"), size)
	b.Logf("data: %s, written in %v, under %s", d, time.Since(start).Round(time.Millisecond), tmp)

	var sum benchSums
	n := 0
	for i := 0; b.Loop(); i++ {
		sum.add(runStory(b, meter, d, tmp, i))
		n++
	}
	mb := float64(d.total) * float64(n) / 1e6
	fn := float64(n)
	// ns/op would be the whole story, checks included: not a figure.
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mb/sum.copySync.Seconds(), "raw_copy_MB/s")
	b.ReportMetric(mb/sum.copyOneSync.Seconds(), "raw_copy_one_sync_MB/s")
	b.ReportMetric(mb/sum.backup.Seconds(), "backup_MB/s")
	b.ReportMetric(mb/sum.backupRestic.Seconds(), "backup_restic_MB/s")
	b.ReportMetric(float64(sum.backupPacked)/1e6/fn, "backup_added_packed_MB")
	b.ReportMetric(sum.second.Seconds()/fn, "backup2_s")
	b.ReportMetric(sum.secondRestic.Seconds()/fn, "backup2_restic_s")
	b.ReportMetric(float64(sum.changed)/1e6/fn, "backup2_changed_MB")
	b.ReportMetric(float64(sum.secondAdded)/1e6/fn, "backup2_added_MB")
	b.ReportMetric(float64(sum.secondPacked)/1e6/fn, "backup2_added_packed_MB")
	b.ReportMetric(mb/sum.restore.Seconds(), "restore_MB/s")
	b.ReportMetric(mb/(sum.restore+sum.restoreSync).Seconds(), "restore_sync_MB/s")
	b.ReportMetric(float64(sum.backupRSS)/1e6, "restic_backup_peak_RSS_MB")
	b.ReportMetric(float64(sum.restoreRSS)/1e6, "restic_restore_peak_RSS_MB")
	b.ReportMetric(float64(sum.anyRSS)/1e6, "restic_peak_RSS_MB")
}

// storyResult is one iteration's figures; RSS in bytes.
type storyResult struct {
	copySync, copyOneSync              time.Duration
	backup, backupRestic               time.Duration
	backupPacked                       uint64
	second, secondRestic               time.Duration
	changed, secondAdded, secondPacked uint64
	restore, restoreSync               time.Duration
	backupRSS, restoreRSS, anyRSS      int64
}

// benchSums adds iterations up; RSS figures are peaks.
type benchSums storyResult

func (s *benchSums) add(r storyResult) {
	s.copySync += r.copySync
	s.copyOneSync += r.copyOneSync
	s.backup += r.backup
	s.backupRestic += r.backupRestic
	s.backupPacked += r.backupPacked
	s.second += r.second
	s.secondRestic += r.secondRestic
	s.changed += r.changed
	s.secondAdded += r.secondAdded
	s.secondPacked += r.secondPacked
	s.restore += r.restore
	s.restoreSync += r.restoreSync
	s.backupRSS = max(s.backupRSS, r.backupRSS)
	s.restoreRSS = max(s.restoreRSS, r.restoreRSS)
	s.anyRSS = max(s.anyRSS, r.anyRSS)
}

// runStory is one iteration: copies, first backup, 1 % changed, second
// backup, restore. Dirty pages are synced before each copy and each
// backup, so none pays for the writeback of what came before.
func runStory(b *testing.B, meter *resticMeter, d *dataset, tmp string, iter int) storyResult {
	var r storyResult
	ctx, cancel := context.WithTimeout(b.Context(), time.Hour)
	defer cancel()
	mb := float64(d.total) / 1e6
	scratch := filepath.Join(tmp, "scratch")
	clean := func() {
		if err := os.RemoveAll(scratch); err != nil {
			b.Fatal(err)
		}
		syscall.Sync()
	}
	clean()

	// The disk's pace: plain copies of the same files, each fsynced (as
	// a file sync or an upload commits a file), then all of them synced
	// once at the end (the disk's bandwidth, without per-file commits).
	p := beginPhase()
	if err := d.copyTo(scratch, true); err != nil {
		b.Fatal(err)
	}
	r.copySync = p.took()
	b.Logf("%d: raw copy, fsync per file: %.0f MB/s (%v; %s)", iter, mb/r.copySync.Seconds(), r.copySync.Round(time.Millisecond), p)
	clean()
	p = beginPhase()
	if err := d.copyTo(scratch, false); err != nil {
		b.Fatal(err)
	}
	syscall.Sync()
	r.copyOneSync = p.took()
	b.Logf("%d: raw copy, one sync at the end: %.0f MB/s (%v; %s)", iter, mb/r.copyOneSync.Seconds(), r.copyOneSync.Round(time.Millisecond), p)
	clean()

	srv := restictest.StartRESTServer(b, 0)
	svc := benchService(b, meter.bin, d.root, srv.URL+"alice/")
	meter.take(b)

	// First backup: the repository is made, and the first run also
	// prunes and checks (2 % of the data read back), as on a device.
	p = beginPhase()
	first, err := svc.BackupNow(ctx)
	r.backup = p.took()
	if err != nil {
		b.Fatalf("first backup: %v", err)
	}
	runs := meter.take(b)
	bk := only(b, runs, "backup")
	r.backupRestic, r.backupPacked = bk.Wall, first.DataAddedPacked
	r.backupRSS, r.anyRSS = bk.rss(), peakRSS(runs)
	b.Logf("%d: first backup: %.0f MB/s (BackupNow %v; restic backup %v, %.0f MB/s; %s); added %.1f MB, %.1f MB packed",
		iter, mb/r.backup.Seconds(), r.backup.Round(time.Millisecond), bk.Wall.Round(time.Millisecond), mb/bk.Wall.Seconds(), p,
		float64(first.DataAdded)/1e6, float64(first.DataAddedPacked)/1e6)
	logRuns(b, runs)
	if first.TotalBytes != uint64(d.total) || first.FilesNew != uint64(len(d.files)) {
		b.Fatalf("first backup: %d bytes in %d new files, want %d in %d", first.TotalBytes, first.FilesNew, d.total, len(d.files))
	}

	changed, touched, kinds := d.change(b, iter)
	syscall.Sync()
	r.changed = uint64(changed)
	p = beginPhase()
	second, err := svc.BackupNow(ctx)
	r.second = p.took()
	if err != nil {
		b.Fatalf("second backup: %v", err)
	}
	runs = meter.take(b)
	bk = only(b, runs, "backup")
	r.secondRestic, r.secondAdded, r.secondPacked = bk.Wall, second.DataAdded, second.DataAddedPacked
	r.backupRSS, r.anyRSS = max(r.backupRSS, bk.rss()), max(r.anyRSS, peakRSS(runs))
	b.Logf("%d: second backup, %.1f MB changed in %d files (%s): BackupNow %v (restic backup %v; %s); added %.1f MB, %.1f MB packed",
		iter, float64(changed)/1e6, touched, kinds, r.second.Round(time.Millisecond), bk.Wall.Round(time.Millisecond), p,
		float64(second.DataAdded)/1e6, float64(second.DataAddedPacked)/1e6)
	logRuns(b, runs)
	if second.FilesChanged != uint64(touched) {
		b.Fatalf("second backup: %d files changed, want %d", second.FilesChanged, touched)
	}

	// Restore: restic does not fsync what it restores, so the figure
	// with sync(2) after it is the one to set beside the raw copies.
	target := filepath.Join(scratch, "restored")
	p = beginPhase()
	if err := svc.Restore(ctx, nil, "latest", "cloud", target, nil); err != nil {
		b.Fatalf("restore: %v", err)
	}
	r.restore = p.took()
	s := time.Now()
	syscall.Sync()
	r.restoreSync = time.Since(s)
	runs = meter.take(b)
	rs := only(b, runs, "restore")
	r.restoreRSS, r.anyRSS = rs.rss(), max(r.anyRSS, peakRSS(runs))
	b.Logf("%d: restore: %.0f MB/s (Service.Restore %v, restic restore %v; %s); then sync %v: %.0f MB/s",
		iter, mb/r.restore.Seconds(), r.restore.Round(time.Millisecond), rs.Wall.Round(time.Millisecond), p,
		r.restoreSync.Round(time.Millisecond), mb/(r.restore+r.restoreSync).Seconds())
	logRuns(b, runs)
	if err := d.verify(target); err != nil {
		b.Fatalf("restored tree: %v", err)
	}
	clean()
	return r
}

// benchService is a device's backup service over root, backing up to a
// REST location at url, running restic through the meter.
func benchService(b *testing.B, restic, root, url string) *backup.Service {
	b.Helper()
	dir := b.TempDir()
	key := filepath.Join(dir, "node.key")
	if err := identity.WriteBackupPassword(key, words, ""); err != nil {
		b.Fatal(err)
	}
	svc, err := backup.New(backup.Config{
		Restic:       restic,
		PasswordFile: identity.BackupPasswordFile(key),
		StateDir:     filepath.Join(dir, "backup"),
		Folders:      map[string]string{"cloud": root},
		Host:         func() string { return "did:boson:bench" },
		Default:      &backup.Location{Kind: backup.KindREST, URL: url},
		Logger:       testlog.New(b, slog.LevelInfo),
	})
	if err != nil {
		b.Fatal(err)
	}
	return svc
}

// phase times a phase and the CPU used meanwhile, in /proc/stat's
// jiffies: by the whole machine, and by this benchmark (this process,
// the processes it waited for, restic among them, and its children still
// running: the rest-server). The rest is other processes': a run on a
// busy machine shows.
type phase struct {
	start, end time.Time
	cpu0, cpu1 cpuTimes
}

type cpuTimes struct{ busy, iowait, ours uint64 }

// userHZ is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

func readCPU() cpuTimes {
	var c cpuTimes
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		// cpu user nice system idle iowait irq softirq steal guest...
		for i, f := range strings.Fields(string(line))[1:] {
			v, _ := strconv.ParseUint(f, 10, 64)
			switch {
			case i == 3: // idle
			case i == 4:
				c.iowait += v
			case i < 8: // guest time is in user already
				c.busy += v
			}
		}
	}
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	for _, tv := range []syscall.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		c.ours += uint64(tv.Nano()) * userHZ / 1e9
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: fields 4, 14 and 15.
		_, rest, _ := bytes.Cut(b, []byte(") "))
		f := strings.Fields(string(rest))
		if len(f) < 13 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		s, _ := strconv.ParseUint(f[12], 10, 64)
		c.ours += u + s
	}
	return c
}

func beginPhase() *phase { return &phase{start: time.Now(), cpu0: readCPU()} }

func (p *phase) took() time.Duration {
	p.end, p.cpu1 = time.Now(), readCPU()
	return p.end.Sub(p.start)
}

// String is the CPU use during the phase, in cores.
func (p *phase) String() string {
	sec := p.end.Sub(p.start).Seconds() * userHZ
	cores := func(a, b uint64) float64 { return (float64(b) - float64(a)) / sec }
	busy, ours := cores(p.cpu0.busy, p.cpu1.busy), cores(p.cpu0.ours, p.cpu1.ours)
	return fmt.Sprintf("CPU: %.2f cores ours, %.2f others', %.2f in iowait", ours, busy-ours, cores(p.cpu0.iowait, p.cpu1.iowait))
}

// resticMeter has the Service run restic through a script that runs
// this test binary (TestMain, runMetered), which runs restic and
// records the wall time, CPU time and peak RSS (getrusage) of each
// command: the Service waits for restic itself and keeps none of that.
type resticMeter struct {
	bin string // the script: the Service's Config.Restic
	log string // one JSON line per command
}

func newResticMeter(tb testing.TB, restic string) *resticMeter {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	m := &resticMeter{bin: filepath.Join(dir, "restic"), log: filepath.Join(dir, "runs.jsonl")}
	// restic runs with a minimal environment (Restic.run): the script
	// carries the meter's settings.
	script := fmt.Sprintf("#!/bin/sh\n%s=%s %s=%s exec %s \"$@\"\n",
		envMeterRestic, shellQuote(restic), envMeterLog, shellQuote(m.log), shellQuote(self))
	if err := os.WriteFile(m.bin, []byte(script), 0o700); err != nil {
		tb.Fatal(err)
	}
	// What the meter adds to each command: the shell and this binary
	// starting. The log line says whether it matters.
	var direct, metered time.Duration
	for range 3 {
		for _, bin := range []string{restic, m.bin} {
			s := time.Now()
			if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
				tb.Fatalf("%s version: %v\n%s", bin, err, out)
			}
			if bin == restic {
				direct += time.Since(s)
			} else {
				metered += time.Since(s)
			}
		}
	}
	m.take(tb)
	tb.Logf("restic version: %v direct, %v through the meter (means of 3)", (direct / 3).Round(time.Millisecond), (metered / 3).Round(time.Millisecond))
	return m
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// resticRun is one restic command as the meter saw it.
type resticRun struct {
	Args      []string      `json:"args"`
	Wall      time.Duration `json:"wall"`
	CPU       time.Duration `json:"cpu"` // user + system
	MaxRSSKiB int64         `json:"max_rss_kib"`
	Code      int           `json:"code"`
}

// cmd is the restic command: the first argument that is neither a flag
// nor a flag's value (Restic.run puts the global flags first).
func (r resticRun) cmd() string {
	for i := 0; i < len(r.Args); i++ {
		switch a := r.Args[i]; {
		case a == "--password-file" || a == "--cache-dir" || a == "--retry-lock" || a == "-o":
			i++
		case !strings.HasPrefix(a, "-"):
			return a
		}
	}
	return ""
}

func (r resticRun) rss() int64 { return r.MaxRSSKiB << 10 }

// take returns the commands run since the last take.
func (m *resticMeter) take(tb testing.TB) []resticRun {
	tb.Helper()
	data, err := os.ReadFile(m.log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Remove(m.log); err != nil {
		tb.Fatal(err)
	}
	var runs []resticRun
	for line := range bytes.Lines(data) {
		var r resticRun
		if err := json.Unmarshal(line, &r); err != nil {
			tb.Fatalf("meter log %q: %v", line, err)
		}
		runs = append(runs, r)
	}
	return runs
}

// only is the one command named cmd among runs.
func only(tb testing.TB, runs []resticRun, cmd string) resticRun {
	tb.Helper()
	var found []resticRun
	for _, r := range runs {
		if r.cmd() == cmd {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		tb.Fatalf("got %d restic %s commands, want 1", len(found), cmd)
	}
	return found[0]
}

func peakRSS(runs []resticRun) int64 {
	var peak int64
	for _, r := range runs {
		peak = max(peak, r.rss())
	}
	return peak
}

func logRuns(tb testing.TB, runs []resticRun) {
	tb.Helper()
	var s strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&s, "\n  restic %-9s %8v  cpu %8v  peak RSS %6.1f MB  exit %d", r.cmd(), r.Wall.Round(time.Millisecond),
			r.CPU.Round(time.Millisecond), float64(r.rss())/1e6, r.Code)
	}
	tb.Logf("restic commands:%s", s.String())
}

// runMetered runs restic with args, as the meter's script asked, and
// appends what it took to logFile. It passes interrupts on (the Service
// interrupts restic to cancel it) and exits with restic's code.
func runMetered(bin, logFile string, args []string) int {
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, envMeterRestic+"=") && !strings.HasPrefix(e, envMeterLog+"=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "meter: %v\n", err)
		return 1
	}
	go func() {
		for s := range sig {
			_ = cmd.Process.Signal(s)
		}
	}()
	_ = cmd.Wait() // the exit code is in ProcessState
	r := resticRun{Args: args, Wall: time.Since(start), Code: cmd.ProcessState.ExitCode()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.MaxRSSKiB = ru.Maxrss // KiB on Linux
	}
	line, _ := json.Marshal(r)
	if f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		_, _ = f.Write(append(line, '\n'))
		_ = f.Close()
	}
	if r.Code < 0 { // killed by a signal
		return 1
	}
	return r.Code
}

// dataset is the benchmark's data: a deterministic mix of what a
// personal cloud holds.
type dataset struct {
	root             string
	files            []dataFile
	total            int64
	big, small, text int // files of each kind
}

type dataFile struct {
	rel   string
	size  int64
	start int64 // offset in all the files, one after the other
	kind  int   // 0 large, 1 small, 2 text
	text  bool
}

// benchSeed seeds the data; the changes of iteration i use it with its
// last byte set to i+1.
var benchSeed = [32]byte([]byte("pc2/services/backup bench data 1"))

// makeDataset writes about total bytes under root: half in incompressible
// files of 16 to 64 MiB (videos), a quarter in incompressible files of 4
// to 64 KiB (photos, thumbnails), a quarter in text of 16 KiB to 2 MiB
// (documents, notes; zstd compresses it about threefold). It syncs them.
func makeDataset(tb testing.TB, root string, total int64) *dataset {
	tb.Helper()
	src := rand.NewChaCha8(benchSeed)
	rnd := rand.New(src)
	d := &dataset{root: root}
	budget := func(share int64) int64 { return total * share / 4 }
	kinds := []struct {
		share    int64
		min, max int64
		text     bool
		name     func(i int) string
		count    *int
	}{
		{2, 16 << 20, 64 << 20, false, func(i int) string { return fmt.Sprintf("videos/clip-%03d.mp4", i) }, &d.big},
		{1, 4 << 10, 64 << 10, false, func(i int) string { return fmt.Sprintf("photos/%03d/img-%05d.jpg", i/100, i) }, &d.small},
		{1, 16 << 10, 2 << 20, true, func(i int) string { return fmt.Sprintf("documents/%02d/note-%04d.txt", i/50, i) }, &d.text},
	}
	for kind, k := range kinds {
		left := budget(k.share)
		if k.text {
			left = total - d.total // what rounding left over
		}
		for i := 0; left > 0; i++ {
			size := min(k.min+rnd.Int64N(k.max-k.min+1), left)
			d.files = append(d.files, dataFile{rel: k.name(i), size: size, start: d.total, kind: kind, text: k.text})
			d.total += size
			left -= size
			*k.count++
		}
	}
	buf := make([]byte, 1<<20)
	dirs := map[string]bool{}
	for _, f := range d.files {
		p := filepath.Join(root, f.rel)
		if dir := filepath.Dir(p); !dirs[dir] {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				tb.Fatal(err)
			}
			dirs[dir] = true
		}
		out, err := os.Create(p)
		if err != nil {
			tb.Fatal(err)
		}
		for left := f.size; left > 0; {
			chunk := buf[:min(left, int64(len(buf)))]
			fillData(src, rnd, chunk, f.text)
			if _, err := out.Write(chunk); err != nil {
				tb.Fatal(err)
			}
			left -= int64(len(chunk))
		}
		if err := out.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	syscall.Sync()
	return d
}

func (d *dataset) String() string {
	return fmt.Sprintf("%.1f MB (%d MiB) in %d files: %d large, %d small, %d text", float64(d.total)/1e6, d.total>>20,
		len(d.files), d.big, d.small, d.text)
}

// words of the text files.
var vocabulary = strings.Fields(`the of and to in is was that for it with as on be at by this had not are but
from or have an they which one you were her all she there would their we him been has when who will more no if
out so said what up its about into than them can only other new some could time these two may then do first any
my now such like our over man me even most made after also did many before must through back years where much
your way well down should because each just those people how too little state good very make world still own
see men work long get here between both life being under never day same another know while last might us great
old year off come since against go came right used take three backup photo folder device node cloud friend
restore snapshot key words relay gateway garden kitchen meeting invoice holiday letter school music recipe`)

// fillData fills p with random bytes, or text made of vocabulary, numbers
// and line breaks.
func fillData(src *rand.ChaCha8, rnd *rand.Rand, p []byte, text bool) {
	if !text {
		_, _ = src.Read(p)
		return
	}
	var num [20]byte
	for i := 0; i < len(p); {
		w := vocabulary[rnd.IntN(len(vocabulary))]
		if rnd.IntN(16) == 0 {
			w = string(strconv.AppendInt(num[:0], rnd.Int64N(100000), 10))
		}
		i += copy(p[i:], w)
		if i < len(p) {
			p[i] = ' '
			if rnd.IntN(12) == 0 {
				p[i] = '\n'
			}
			i++
		}
	}
}

// change rewrites about 1 % of the bytes in place, in regions of up to
// 64 KiB at random offsets over all the files (so a file's chance grows
// with its size): new random bytes, or new text in the text files. It
// returns the bytes rewritten and how many files it touched, in all and
// of each kind.
func (d *dataset) change(tb testing.TB, iter int) (changed int64, files int, kinds string) {
	tb.Helper()
	seed := benchSeed
	seed[31] = byte(iter + 1)
	src := rand.NewChaCha8(seed)
	rnd := rand.New(src)
	touched := map[int]bool{}
	buf := make([]byte, 64<<10)
	for changed < d.total/100 {
		pos := rnd.Int64N(d.total)
		i, found := slices.BinarySearchFunc(d.files, pos, func(f dataFile, pos int64) int {
			switch {
			case pos < f.start:
				return 1
			case pos >= f.start+f.size:
				return -1
			}
			return 0
		})
		if !found {
			tb.Fatalf("offset %d is in no file", pos)
		}
		f := d.files[i]
		n := min(int64(len(buf)), f.size)
		off := min(pos-f.start, f.size-n)
		fillData(src, rnd, buf[:n], f.text)
		out, err := os.OpenFile(filepath.Join(d.root, f.rel), os.O_WRONLY, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := out.WriteAt(buf[:n], off); err != nil {
			tb.Fatal(err)
		}
		if err := out.Close(); err != nil {
			tb.Fatal(err)
		}
		changed += n
		touched[i] = true
	}
	var n [3]int
	for i := range touched {
		n[d.files[i].kind]++
	}
	return changed, len(touched), fmt.Sprintf("%d large, %d small, %d text", n[0], n[1], n[2])
}

// copyTo copies every file to the same path under dst with io.Copy
// (copy_file_range(2) on Linux), fsyncing each file if fsync.
func (d *dataset) copyTo(dst string, fsync bool) error {
	dirs := map[string]bool{}
	for _, f := range d.files {
		p := filepath.Join(dst, f.rel)
		if dir := filepath.Dir(p); !dirs[dir] {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			dirs[dir] = true
		}
		if err := copyFile(filepath.Join(d.root, f.rel), p, fsync); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, fsync bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if fsync {
		if err := out.Sync(); err != nil {
			out.Close()
			return fmt.Errorf("fsync %s: %w", dst, err)
		}
	}
	return out.Close()
}

// verify compares the restored tree with the data, byte for byte, and
// checks that it holds no other file.
func (d *dataset) verify(target string) error {
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, f := range d.files {
		if err := sameFile(filepath.Join(d.root, f.rel), filepath.Join(target, f.rel), a, b); err != nil {
			return err
		}
	}
	n := 0
	err := filepath.WalkDir(target, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		return err
	}
	if n != len(d.files) {
		return fmt.Errorf("got %d files, want %d", n, len(d.files))
	}
	return nil
}

func sameFile(want, got string, a, b []byte) error {
	fa, err := os.Open(want)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(got)
	if err != nil {
		return err
	}
	defer fb.Close()
	for off := int64(0); ; {
		na, ea := io.ReadFull(fa, a)
		nb, eb := io.ReadFull(fb, b)
		if na != nb || !bytes.Equal(a[:na], b[:nb]) {
			return fmt.Errorf("%s differs from %s after byte %d", got, want, off)
		}
		off += int64(na)
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			if eb != ea {
				return fmt.Errorf("%s is longer than %s (%d bytes)", got, want, off)
			}
			return nil
		}
		if ea != nil {
			return ea
		}
		if eb != nil {
			return eb
		}
	}
}
