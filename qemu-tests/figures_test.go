package qemutests

// The appliance figures of issue 3 (docs/benchmarks.md, "Appliance"):
// image sizes, QEMU start to serving and online under TCG, idle memory of
// every process on the box, and cold and warm image builds. Run them
// alone, on an otherwise idle machine (they boot one VM at a time and log
// the CPU other processes used meanwhile):
//
//	go test ./qemu-tests/ -run '^$' -bench Appliance -benchtime 1x -timeout 90m -v
//
// Each benchmark measures once per call, whatever b.N is. Targets are
// reported next to the figures, never asserted.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/boards/x86"
	"github.com/pc2/pc2/image"
	qvm "github.com/pc2/pc2/image/vm"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
	"github.com/pc2/pc2/services/dht"
)

var figureRuns = flag.Int("figures.runs", 3, "boots per firmware in BenchmarkApplianceBoot")

// mb is a decimal megabyte, the unit of the targets.
const mb = 1e6

// BenchmarkApplianceImageSize builds each board's personal image as
// `pc2 image build --board B --profile personal -o disk.img` does (default
// partition sizes, no key, no gokrazy password) and reports its apparent
// and allocated size and the size of the whole file compressed with
// `xz -T2` and `gzip -9`.
func BenchmarkApplianceImageSize(b *testing.B) {
	for _, board := range []boards.Board{x86.Board, rpi.Board, qemuarm64.Board} {
		b.Run(board.Name, func(b *testing.B) {
			built := buildReleaseImage(b, board)
			st, err := os.Stat(built.res.Image)
			if err != nil {
				b.Fatal(err)
			}
			allocated := st.Sys().(*syscall.Stat_t).Blocks * 512
			xz, xzTook := compressedSize(b, built.res.Image, "xz", "-T2", "-c")
			gz, gzTook := compressedSize(b, built.res.Image, "gzip", "-9", "-c")
			b.Logf("%s: apparent %.1f MB, allocated %.1f MB, xz -T2 %.1f MB (%v), gzip -9 %.1f MB (%v); root squashfs %.1f MB; target: compressed under 60 MB",
				board.Name, float64(st.Size())/mb, float64(allocated)/mb, float64(xz)/mb, xzTook.Round(100*time.Millisecond),
				float64(gz)/mb, gzTook.Round(100*time.Millisecond), float64(built.res.RootBytes)/mb)
			b.ReportMetric(float64(st.Size())/mb, "apparent-MB")
			b.ReportMetric(float64(allocated)/mb, "allocated-MB")
			b.ReportMetric(float64(xz)/mb, "xz-MB")
			b.ReportMetric(float64(gz)/mb, "gzip-MB")
			b.ReportMetric(float64(built.res.RootBytes)/mb, "squashfs-MB")
		})
	}
}

// BenchmarkApplianceBuild times buildReleaseImage for the x86 and rpi
// boards twice: cold, with an empty Go build cache (a fresh GOCACHE; the
// module cache stays), then warm, right after with the same cache.
func BenchmarkApplianceBuild(b *testing.B) {
	for _, board := range []boards.Board{x86.Board, rpi.Board} {
		b.Run(board.Name, func(b *testing.B) {
			// A build that ran while other processes were busy is
			// repeated (cold: with another empty cache), up to 3 times.
			measure := func(what string, prepare func()) (releaseBuild, float64) {
				for attempt := 1; ; attempt++ {
					prepare()
					waitQuiet(b)
					meter := startCPUMeter(b)
					built := buildReleaseImage(b, board)
					other := meter.otherCores()
					if other <= busyLimit || attempt == 3 {
						return built, other
					}
					b.Logf("%s build %v, not counted: other processes used %.2f cores", what, built.took.Round(100*time.Millisecond), other)
				}
			}
			cold, coldOther := measure("cold", func() { b.Setenv("GOCACHE", b.TempDir()) })
			warm, warmOther := measure("warm", func() {})
			b.Logf("%s: cold build %v (go build %v), warm build %v (go build %v); other processes used %.2f and %.2f cores",
				board.Name, cold.took.Round(100*time.Millisecond), cold.compile.Round(100*time.Millisecond),
				warm.took.Round(100*time.Millisecond), warm.compile.Round(100*time.Millisecond), coldOther, warmOther)
			b.ReportMetric(cold.took.Seconds(), "cold-s")
			b.ReportMetric(cold.compile.Seconds(), "cold-gobuild-s")
			b.ReportMetric(warm.took.Seconds(), "warm-s")
			b.ReportMetric(warm.compile.Seconds(), "warm-gobuild-s")
		})
	}
}

type releaseBuild struct {
	res           *image.Result
	took, compile time.Duration // image.Build, and its go build step
}

// buildReleaseImage builds board's personal image with what
// `pc2 image build` passes to image.Build by default.
func buildReleaseImage(b *testing.B, board boards.Board) releaseBuild {
	b.Helper()
	s := settings.Settings{Profile: profile.Personal, Supernodes: []string{placeholderSupernode(b)}}
	p, err := profile.Build(&s)
	if err != nil {
		b.Fatal(err)
	}
	var logBuf bytes.Buffer
	start := time.Now()
	res, err := image.Build(context.Background(), image.Options{
		Board: board, Programs: p.Programs, External: p.External, ExtraFiles: p.Files, BootFiles: p.BootFiles,
		SourceDateEpoch: 1700000000, Output: filepath.Join(b.TempDir(), "disk.img"),
		Logger: slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`msg=compiled .*took=(\S+)`).FindStringSubmatch(logBuf.String())
	if m == nil {
		b.Fatalf("image.Build logged no compile time:\n%s", logBuf.String())
	}
	compile, err := time.ParseDuration(m[1])
	if err != nil {
		b.Fatal(err)
	}
	return releaseBuild{res: res, took: took, compile: compile}
}

// placeholderSupernode is a well-formed supernode address for images that
// are built but not booted.
func placeholderSupernode(t testing.TB) string {
	id, err := identity.ParseDID(vectorDID)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := dht.IDToPeer(id)
	if err != nil {
		t.Fatal(err)
	}
	return "/ip4/192.0.2.1/tcp/8090/p2p/" + pid.String()
}

// compressedSize returns the size of `name args... <file` and how long it
// took.
func compressedSize(t testing.TB, file, name string, args ...string) (int64, time.Duration) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n countWriter
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, &n, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return int64(n), time.Since(start)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// bootMode is one way of booting: firmware and board.
type bootMode struct {
	name    string
	board   boards.Board
	bios    bool
	machine string // a Raspberry Pi model (image/vm), for the rpi board
	marks   []mark // console lines that end boot phases, in order
}

// mark is a console line that shows a boot phase has ended.
type mark struct{ name, text string }

// Console lines every image prints: the kernel's first line (printed when
// the serial console registers, a fraction of a second into the kernel),
// the start of gokrazy's init, the init reading the boot slots, and gokrazy's
// web interface listening on the DHCP address (the lease arrived).
var kernelMarks = []mark{
	{"kernel output", "Linux version"},
	{"init started", "Run /gokrazy/init"},
	{"boot slots read", bootSlotsMark},
	{"DHCP lease", "now listening on 10.0.2.15:"},
}

// BenchmarkApplianceBoot times QEMU start to the personal node's
// /api/status answering ("serving") and to its state "online" (did record
// published through a supernode on the host), -figures.runs times per
// firmware: x86 under OVMF (UEFI, systemd-boot), the same image under
// SeaBIOS (legacy BIOS, SYSLINUX), and arm64 on -M virt (direct kernel
// boot). Each run gets a fresh host supernode and a fresh copy of the
// image. The console lines of kernelMarks time the phases.
func BenchmarkApplianceBoot(b *testing.B) {
	modes := []bootMode{
		{name: "uefi", board: qemu.Board, marks: append([]mark{{"boot loader", "BdsDxe: loading Boot"}}, kernelMarks...)},
		{name: "bios", board: qemu.Board, bios: true, marks: append([]mark{{"boot loader", "SYSLINUX"}}, kernelMarks...)},
		{name: "arm64", board: qemuarm64.Board, marks: kernelMarks},
		// The Pi image as built, from its SD card; online needs the
		// clock, from the host's NTP server (a Pi has no clock).
		{name: "raspi3b", board: rpi.Board, machine: qvm.MachineRaspi3b, marks: kernelMarks},
	}
	// One image per board, with a placeholder supernode that each run
	// replaces in its copy.
	s := settings.Settings{Profile: profile.Personal, Hostname: "pc2-figures", Supernodes: []string{placeholderSupernode(b)},
		NTP: []string{qvm.HostAddr}}
	hostNTP(b)
	images := map[string]string{}
	for _, board := range []boards.Board{qemu.Board, qemuarm64.Board, rpi.Board} {
		images[board.Name] = buildBoardImage(b, board, s,
			map[string]image.PermFile{"pc2/node.key": {Data: keyPEM(b, vectorWords), Mode: 0o600}})
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			img := images[mode.board.Name]
			var runs []bootRun
			n := *figureRuns
			for attempt := 1; len(runs) < n; attempt++ {
				waitQuiet(b)
				run := bootOnce(b, img, s, mode)
				if run.otherCPU > busyLimit {
					if attempt < 4*n {
						b.Logf("%s attempt %d, not counted (other processes were busy): %s", mode.name, attempt, run)
						continue
					}
					b.Logf("%s: counting a run although other processes were busy", mode.name)
				}
				runs = append(runs, run)
				b.Logf("%s run %d: %s", mode.name, len(runs), run)
			}
			serving := spread(runs, func(r bootRun) time.Duration { return r.serving })
			online := spread(runs, func(r bootRun) time.Duration { return r.online })
			b.Logf("%s, %d runs: serving min/median/max %s; online %s", mode.name, len(runs), serving, online)
			var phases []string
			var extra []mark
			if mode.machine == "" {
				extra = []mark{{name: "kernel start (est.)"}, {name: "pc2 process started (est.)"}, {name: "node started (est.)"}}
			}
			for _, m := range append(mode.marks[:len(mode.marks):len(mode.marks)], extra...) {
				med := spread(runs, func(r bootRun) time.Duration { return r.marks[m.name] }).median
				phases = append(phases, fmt.Sprintf("%s %.1fs", m.name, med.Seconds()))
			}
			b.Logf("%s, phase medians (s after QEMU start): %s", mode.name, strings.Join(phases, ", "))
			b.ReportMetric(serving.min.Seconds(), "serving-min-s")
			b.ReportMetric(serving.median.Seconds(), "serving-median-s")
			b.ReportMetric(serving.max.Seconds(), "serving-max-s")
			b.ReportMetric(online.min.Seconds(), "online-min-s")
			b.ReportMetric(online.median.Seconds(), "online-median-s")
			b.ReportMetric(online.max.Seconds(), "online-max-s")
		})
	}
}

// BenchmarkApplianceRaspi4bBoot times the rpi image, as built, on QEMU
// 10's raspi4b from QEMU start to the node's setup message on the console
// (its cloud is up and waits for the wizard), -figures.runs times. QEMU
// emulates neither the Pi 4's Ethernet nor its USB, so nothing can be
// asked over the network; the console lines time the phases.
func BenchmarkApplianceRaspi4bBoot(b *testing.B) {
	qemutest.RequireMachine(b, qvm.MachineRaspi4b)
	img := buildBoardImage(b, rpi.Board, settings.Settings{Profile: profile.Personal, Hostname: "pc2-figures",
		Supernodes: []string{placeholderSupernode(b)}}, nil)
	marks := []mark{{"kernel output", "Linux version"}, {"init started", "Run /gokrazy/init"},
		{"perm mounted", "EXT4-fs (mmcblk1p4): mounted"}, {"cloud up (setup message)", "PC2: set up your personal cloud"}}
	var runs []map[string]time.Duration
	for attempt := 1; len(runs) < *figureRuns; attempt++ {
		waitQuiet(b)
		meter := startCPUMeter(b)
		vm := qemutest.Boot(b, img, qemutest.Options{GOARCH: "arm64", Machine: qvm.MachineRaspi4b})
		got := map[string]time.Duration{}
		for _, m := range marks {
			vm.WaitSerial(b, m.text, 5*time.Minute)
			got[m.name] = time.Since(vm.Started)
		}
		vm.Stop()
		if other := meter.otherCores(); other > busyLimit && attempt < 4**figureRuns {
			b.Logf("raspi4b attempt %d, not counted (other processes used %.2f cores)", attempt, other)
			continue
		}
		runs = append(runs, got)
		b.Logf("raspi4b run %d: %v", len(runs), got)
	}
	var phases []string
	for _, m := range marks {
		var ds []time.Duration
		for _, r := range runs {
			ds = append(ds, r[m.name])
		}
		slices.Sort(ds)
		phases = append(phases, fmt.Sprintf("%s %.1f/%.1f/%.1fs", m.name, ds[0].Seconds(), ds[len(ds)/2].Seconds(), ds[len(ds)-1].Seconds()))
	}
	b.Logf("raspi4b, %d runs, min/median/max after QEMU start: %s", len(runs), strings.Join(phases, ", "))
}

type bootRun struct {
	serving, online time.Duration
	marks           map[string]time.Duration // first appearance on the console
	otherCPU        float64                  // cores used by other processes
}

func (r bootRun) String() string {
	var parts []string
	names := make([]string, 0, len(r.marks))
	for n := range r.marks {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(r.marks[a], r.marks[b]) })
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.2fs", n, r.marks[n].Seconds()))
	}
	return fmt.Sprintf("serving %.2fs, online %.2fs; console: %s; other processes used %.2f cores",
		r.serving.Seconds(), r.online.Seconds(), strings.Join(parts, ", "), r.otherCPU)
}

// bootOnce boots a copy of img with a fresh host supernode written into
// its settings and times it.
func bootOnce(b *testing.B, img string, s settings.Settings, mode bootMode) bootRun {
	b.Helper()
	sn, guestAddr := hostSupernode(b)
	defer sn.Close()
	s.Supernodes = []string{guestAddr}
	img = qemutest.CopyImage(b, img)
	if err := settings.WriteImage(img, &s); err != nil {
		b.Fatal(err)
	}
	meter := startCPUMeter(b)
	vm := qemutest.Boot(b, img, qemutest.Options{Forward: []int{4200, 8080}, GOARCH: mode.board.GOARCH, BIOS: mode.bios, Machine: mode.machine})
	// The raspi machines' guest clocks cannot date phases: the kernel's
	// runs slow under TCG, the wall clock starts at 1970 until NTP.
	run := observeBoot(b, vm, mode.marks, 5*time.Minute, mode.machine == "")
	vm.Stop()
	run.otherCPU = meter.otherCores()
	return run
}

// observeBoot polls the node's /api/status every 50 ms and the console
// every 50 ms until the node is online. With estimate it also dates the
// phases that print nothing from the guest's clocks (the "(est.)" marks).
func observeBoot(t testing.TB, vm *qemutest.VM, marks []mark, deadline time.Duration, estimate bool) bootRun {
	t.Helper()
	run := bootRun{marks: map[string]time.Duration{}}
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			serial, now := vm.Serial(), time.Since(vm.Started)
			mu.Lock()
			for _, m := range marks {
				if _, ok := run.marks[m.name]; !ok && strings.Contains(serial, m.text) {
					run.marks[m.name] = now
				}
			}
			mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	// Short timeouts: until the guest has its address, QEMU's user network
	// accepts the connection and holds it; each such attempt delays the
	// measurement by up to the timeout.
	client := &http.Client{Timeout: 300 * time.Millisecond}
	url := fmt.Sprintf("http://127.0.0.1:%d/api/status", vm.HostPort(4200))
	var last personal.Status
	for run.online == 0 {
		if time.Since(vm.Started) > deadline {
			close(done)
			wg.Wait()
			t.Fatalf("node not online %v after QEMU start; last status %+v\nconsole:\n%s", deadline, last, vm.Serial())
		}
		resp, err := client.Get(url)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&last)
			resp.Body.Close()
			now := time.Since(vm.Started)
			if err == nil && resp.StatusCode == http.StatusOK {
				if run.serving == 0 {
					run.serving = now
				}
				if last.State == "online" {
					run.online = now
				}
			}
		}
		if run.online == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Let the console catch up with the last marks.
	time.Sleep(100 * time.Millisecond)
	close(done)
	wg.Wait()
	if !estimate {
		return run
	}
	// The kernel's own clock dates its start: the init line's first
	// appearance minus its timestamp.
	m := regexp.MustCompile(`\[\s*(\d+\.\d+)\] Run /gokrazy/init`).FindStringSubmatch(vm.Serial())
	if seen, ok := run.marks["init started"]; ok && m != nil {
		ts, _ := strconv.ParseFloat(m[1], 64)
		run.marks["kernel start (est.)"] = seen - time.Duration(ts*float64(time.Second))
	}
	// The guest's wall clock dates the pc2 process's start (gokrazy's
	// service status) and the node's start (personal.Run, just before it
	// listens), relative to the publication the host saw as "online"; the
	// host sees it up to one poll (50 ms plus the request) late, so these
	// are early by as much.
	if !last.Published.IsZero() {
		at := func(t time.Time) time.Duration { return run.online - last.Published.Sub(t) }
		run.marks["node started (est.)"] = at(last.Started)
		for _, svc := range gokrazyStatus(t, vm).Services {
			if svc.Path == profile.PC2Binary {
				run.marks["pc2 process started (est.)"] = at(svc.StartTime)
			}
		}
	}
	return run
}

type minMedMax struct{ min, median, max time.Duration }

func (s minMedMax) String() string {
	return fmt.Sprintf("%.1f / %.1f / %.1f s", s.min.Seconds(), s.median.Seconds(), s.max.Seconds())
}

func spread(runs []bootRun, f func(bootRun) time.Duration) minMedMax {
	var ds []time.Duration
	for _, r := range runs {
		ds = append(ds, f(r))
	}
	slices.Sort(ds)
	if len(ds) == 0 {
		return minMedMax{}
	}
	med := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	return minMedMax{ds[0], med, ds[len(ds)-1]}
}

// BenchmarkApplianceMemory boots an image per profile (x86 under UEFI
// with its one vCPU, and the personal profile on arm64 with 1, 2 (the
// default) and 4 vCPUs: every Go process sizes its runtime by the CPU
// count, and a Pi has 4 cores), waits until the node is online, lets it
// idle 30 s and reads every process's resident memory from
// GET /api/device.
//
// The admin password check of that request (argon2id, m=19 MiB) runs in
// the pc2 process just before it reads /proc, so pc2's figure there
// includes what the check touched. gokrazy's overview page on port 8080
// (no argon2 behind its password) shows each service's RSS too; it is
// read right before and right after the request, so pc2's idle RSS is
// known and the request's cost shows.
func BenchmarkApplianceMemory(b *testing.B) {
	for _, c := range []struct {
		name    string
		board   boards.Board
		profile string
		cpus    int    // 0: image/vm's default
		machine string // a Raspberry Pi model (image/vm): the rpi image as built
	}{
		{"personal", qemu.Board, profile.Personal, 0, ""},
		{"supernode", qemu.Board, profile.Supernode, 0, ""},
		{"personal-arm64-1cpu", qemuarm64.Board, profile.Personal, 1, ""},
		{"personal-arm64", qemuarm64.Board, profile.Personal, 0, ""},
		{"personal-arm64-4cpu", qemuarm64.Board, profile.Personal, 4, ""},
		// The Pi image itself on QEMU's Pi 3 (1 GiB, 4 cores).
		{"personal-raspi3b", rpi.Board, profile.Personal, 0, qvm.MachineRaspi3b},
	} {
		b.Run(c.name, func(b *testing.B) { idleMemory(b, c.board, c.profile, c.cpus, c.machine) })
	}
}

func idleMemory(b *testing.B, board boards.Board, prof string, cpus int, machine string) {
	const adminPW = "figures admin password"
	hash, err := password.Hash(adminPW)
	if err != nil {
		b.Fatal(err)
	}
	// The supernode profile bootstraps from the host's supernode, so both
	// profiles have one peer.
	sn, guestAddr := hostSupernode(b)
	defer sn.Close()
	s := settings.Settings{Profile: prof, Hostname: "pc2-" + prof, Supernodes: []string{guestAddr}, AdminPasswordHash: hash}
	if machine != "" {
		// No clock of its own: the time from the host.
		hostNTP(b)
		s.NTP = []string{qvm.HostAddr}
	}
	img := buildBoardImage(b, board, s, map[string]image.PermFile{"pc2/node.key": {Data: keyPEM(b, vectorWords), Mode: 0o600}})
	waitQuiet(b)
	meter := startCPUMeter(b)
	vm := qemutest.Boot(b, img, qemutest.Options{Forward: []int{4200, 8080}, GOARCH: board.GOARCH, CPUs: cpus, Machine: machine})
	waitOnline(b, vm, 3*time.Minute)
	// The idle period is what is measured: nothing to poll for.
	time.Sleep(30 * time.Second)
	before := gokrazyMemory(b, vm)
	info := deviceInfo(b, fmt.Sprintf("http://127.0.0.1:%d/api/device", vm.HostPort(4200)), adminPW)
	after := gokrazyMemory(b, vm)
	other := meter.otherCores()

	total, totalPSS := 0, 0
	var lines []string
	perName := map[string]int{}
	for _, p := range info.Processes {
		total += p.RSSKiB
		totalPSS += p.PSSKiB
		perName[p.Name] += p.RSSKiB
		lines = append(lines, fmt.Sprintf("  pid %4d %-8s RSS %5.1f MB (anon %5.1f, file %5.1f) PSS %5.1f MB  %s",
			p.PID, p.Name, kib(p.RSSKiB), kib(p.AnonKiB), kib(p.FileKiB), kib(p.PSSKiB), p.Command))
	}
	lines = append(lines, fmt.Sprintf("  total PSS %.1f MB; box: %.1f MB total, %.1f MB available; transparent huge pages: %q",
		kib(totalPSS), kib(info.Memory.TotalKiB), kib(info.Memory.AvailableKiB), info.Memory.TransparentHugePages))
	pc2Idle := before.rss[profile.PC2Binary]
	idleTotal := kib(total) - kib(perName["pc2"]) + pc2Idle
	b.Logf("%s on %s (%s vCPUs): read 30 s after online; other processes used %.2f cores\n"+
		"GET /api/device: total RSS %.1f MB over %d processes\n%s\n"+
		"gokrazy's page: pc2 %.1f MB before the request, %.1f MB after; init %.1f / %.1f MB; box used (MemTotal-MemAvailable) %.1f / %.1f MB\n"+
		"idle total with pc2's RSS from before the request: %.1f MB (target for personal: under 80 MB)",
		prof, board.Name+" "+machine, vcpus(board, cpus, machine), other, kib(total), len(info.Processes), strings.Join(lines, "\n"),
		pc2Idle, after.rss[profile.PC2Binary], before.rss["init"], after.rss["init"], before.used, after.used, idleTotal)
	b.ReportMetric(kib(total), "total-MB")
	b.ReportMetric(kib(totalPSS), "total-PSS-MB")
	b.ReportMetric(idleTotal, "idle-total-MB")
	b.ReportMetric(pc2Idle, "pc2-idle-MB")
	for _, name := range []string{"pc2", "init", "ntp", "randomd"} {
		b.ReportMetric(kib(perName[name]), name+"-MB")
	}
	b.ReportMetric(after.used-before.used, "request-delta-MB")
}

// vcpus names the guest's CPU count for the log.
func vcpus(board boards.Board, cpus int, machine string) string {
	switch {
	case machine != "":
		return "4" // QEMU's Pi models have the board's four cores
	case cpus != 0:
		return strconv.Itoa(cpus)
	case board.GOARCH == "arm64":
		return "2"
	}
	return "1"
}

// gokrazyMem is what gokrazy's overview page shows of memory, in MB.
type gokrazyMem struct {
	rss  map[string]float64 // by service path; "init" for PID 1
	used float64            // MemTotal - MemAvailable
}

var (
	rssTitle   = regexp.MustCompile(`title="(\S+) uses ([\d.]+) MiB RSS"`)
	memSummary = regexp.MustCompile(`([\d.]+) MiB total, ([\d.]+) MiB available`)
)

// gokrazyMemory reads gokrazy's overview page (its web interface on 8080,
// with the password buildBoardImage sets): the RSS of each service's
// process, as gokrazy shows it (0.1 MiB steps), and the box's used memory.
func gokrazyMemory(t testing.TB, vm *qemutest.VM) gokrazyMem {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", vm.HostPort(8080)), nil)
	req.SetBasicAuth("gokrazy", "pc2-test-password")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("gokrazy page: %s: %s", resp.Status, page)
	}
	const mib = 1 << 20
	m := gokrazyMem{rss: map[string]float64{}}
	for _, sm := range rssTitle.FindAllSubmatch(page, -1) {
		v, _ := strconv.ParseFloat(string(sm[2]), 64)
		m.rss[string(sm[1])] = v * mib / mb
	}
	sm := memSummary.FindSubmatch(page)
	if sm == nil || len(m.rss) == 0 {
		t.Fatalf("gokrazy page without memory figures:\n%s", page)
	}
	total, _ := strconv.ParseFloat(string(sm[1]), 64)
	avail, _ := strconv.ParseFloat(string(sm[2]), 64)
	m.used = (total - avail) * mib / mb
	return m
}

func kib(n int) float64 { return float64(n) * 1024 / mb }

// gokrazyStatusJSON is what the benchmarks read of gokrazy's status JSON.
type gokrazyStatusJSON struct {
	Services []struct {
		Path      string
		StartTime time.Time
	}
}

// gokrazyStatus reads gokrazy's status JSON from its web interface on
// 8080 (with the password buildBoardImage sets), which the VM must
// forward.
func gokrazyStatus(t testing.TB, vm *qemutest.VM) gokrazyStatusJSON {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", vm.HostPort(8080)), nil)
	req.SetBasicAuth("gokrazy", "pc2-test-password")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("gokrazy status: %s: %s", resp.Status, body)
	}
	var st gokrazyStatusJSON
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// cpuMeter measures the CPU that processes outside this process's tree
// (the benchmark, its QEMU, its go builds) use, so a run made while
// something else was busy shows in the log. Other QEMU processes are
// logged when it starts.
type cpuMeter struct {
	start      time.Time
	busy, ours int64 // clock ticks
}

func startCPUMeter(t testing.TB) cpuMeter {
	t.Helper()
	busy, ours, others := cpuTicks()
	if len(others) > 0 {
		t.Logf("warning: other QEMU processes are running: %s", strings.Join(others, "; "))
	}
	return cpuMeter{start: time.Now(), busy: busy, ours: ours}
}

// busyLimit is the CPU other processes may use during a measurement, in
// cores; a boot that saw more is repeated (the machine has two cores and
// QEMU uses one).
const busyLimit = 0.25

// waitQuiet waits until processes outside this one's tree use less than
// 0.1 cores over two seconds (at most ten minutes, then it goes on and
// says so), so a measurement does not start while other tests run.
func waitQuiet(t testing.TB) {
	t.Helper()
	start := time.Now()
	for {
		m := startCPUMeter(t)
		time.Sleep(2 * time.Second)
		other := m.otherCores()
		if other < 0.1 {
			if waited := time.Since(start); waited > 3*time.Second {
				t.Logf("waited %v for other processes to finish", waited.Round(time.Second))
			}
			return
		}
		if time.Since(start) > 10*time.Minute {
			t.Logf("warning: measuring although other processes use %.2f cores", other)
			return
		}
	}
}

// otherCores returns the cores other processes used on average since the
// meter started.
func (m cpuMeter) otherCores() float64 {
	busy, ours, _ := cpuTicks()
	const ticksPerSecond = 100 // USER_HZ
	return float64((busy-m.busy)-(ours-m.ours)) / ticksPerSecond / time.Since(m.start).Seconds()
}

// cpuTicks returns the machine's busy clock ticks (/proc/stat), those of
// this process's tree (own and reaped children's, of every live process
// descending from this one), and the QEMU processes outside the tree.
func cpuTicks() (busy, ours int64, otherQEMU []string) {
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			if i < len(f) {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				busy += n
			}
		}
	}
	type proc struct {
		ppid  int
		ticks int64
		comm  string
	}
	procs := map[int]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		// After the command: state ppid ... utime(14) stime cutime cstime.
		f := strings.Fields(s[closing+1:])
		if len(f) < 15 {
			continue
		}
		p := proc{comm: s[open+1 : closing]}
		p.ppid, _ = strconv.Atoi(f[1])
		for _, i := range []int{11, 12, 13, 14} {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			p.ticks += n
		}
		procs[pid] = p
	}
	tree := map[int]bool{os.Getpid(): true}
	for changed := true; changed; {
		changed = false
		for pid, p := range procs {
			if !tree[pid] && tree[p.ppid] {
				tree[pid], changed = true, true
			}
		}
	}
	for pid, p := range procs {
		if tree[pid] {
			ours += p.ticks
		} else if strings.HasPrefix(p.comm, "qemu-system") {
			otherQEMU = append(otherQEMU, fmt.Sprintf("pid %d %s", pid, p.comm))
		}
	}
	return busy, ours, otherQEMU
}
