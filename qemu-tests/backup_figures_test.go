package qemutests

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
	"github.com/pc2/pc2/services/backup"
)

// Pi-sized guest of BenchmarkApplianceBackupMemory.
const backupFiguresMemoryMiB = 1024

// BenchmarkApplianceBackupMemory (issue 17): the personal node's memory
// while it backs up, on a Pi-sized budget: the arm64 image on -M virt
// with 1 GiB of memory and its default vCPUs, about 256 MB of owner files
// (a few large random files and a few hundred small ones), backed up to a
// restic REST server on the host. GET /api/device is read every 2 s
// during the backup: the peaks of the pc2 process, of any restic process,
// of their sum, and of the box's used memory (MemTotal - MemAvailable).
// Target: the node (pc2 and restic) under 150 MB during the backup.
//
// The maintenance that follows the first backup (forget, prune, check,
// stats) is sampled too and logged apart: it is not the backup.
//
// The admin API's password check (argon2id, 19 MiB) runs once, before
// the baseline; its result is remembered for 10 minutes from each use, so
// the samples do not pay it again.
//
//	go test ./qemu-tests/ -run '^$' -bench ApplianceBackupMemory -benchtime 1x -timeout 60m -v
func BenchmarkApplianceBackupMemory(b *testing.B) {
	const adminPW = "figures admin password"
	hash, err := password.Hash(adminPW)
	if err != nil {
		b.Fatal(err)
	}
	_, guestAddr := hostSupernode(b)
	rest := restictest.StartRESTServer(b, 0)
	_, port, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(rest.URL, "http://"), "/"), ":")
	location := "http://10.0.2.2:" + port + "/alice/" // the host, from QEMU's user network

	board := qemuarm64.Board
	img := qemutest.CopyImage(b, buildBoardImage(b, board, settings.Settings{Profile: profile.Personal, Hostname: "pc2-backup",
		Supernodes: []string{guestAddr}, AdminPasswordHash: hash}, nil))
	// perm grows to the end of the disk at the first boot.
	if err := os.Truncate(img, 4<<30); err != nil {
		b.Fatal(err)
	}
	waitQuiet(b)
	meter := startCPUMeter(b)
	vm := qemutest.Boot(b, img, qemutest.Options{Forward: []int{4200}, GOARCH: board.GOARCH, Writable: true,
		MemoryMiB: backupFiguresMemoryMiB})
	waitStatus(b, vm, 5*time.Minute, "the wizard with perm grown", func(st personal.Status) bool {
		return st.Setup == "wizard" && st.Storage != nil && st.Storage.DiskTotal > 3<<30
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200))
	owner := cloudtest.New(b, base, &http.Client{Timeout: 10 * time.Minute})
	owner.CreateIdentity()
	owner.Password("owner password 1")
	owner.Step("skip", nil)

	upStart := time.Now()
	files, total := uploadBackupData(b, owner)
	upTook := time.Since(upStart)
	b.Logf("uploaded %d files, %.1f MB, in %v (%.1f MB/s)", files, float64(total)/mb, upTook.Round(time.Second), float64(total)/mb/upTook.Seconds())

	devURL := base + "/api/device"
	deviceInfo(b, devURL, adminPW) // the one argon2id check
	time.Sleep(5 * time.Second)
	idle := deviceInfo(b, devURL, adminPW)
	idleSample := sampleOf(idle)
	b.Logf("guest memory: %.1f MB (MemTotal, QEMU -m %d MiB); before the backup: pc2 %.1f MB, box used %.1f MB",
		kib(idle.Memory.TotalKiB), backupFiguresMemoryMiB, kib(idleSample.pc2), kib(idleSample.used))

	form := url.Values{"kind": {"rest"}, "url": {location}, "csrf": {owner.CSRF("/_/")}}
	start := time.Now()
	if r := owner.Post("/_/backup/location", form); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		b.Fatalf("set the backup location: %d %s", r.Code, r.Location())
	}
	// Sample until the backup succeeded (phase "backup"), then until
	// the maintenance after it ends ("maintenance").
	var during, after memPeaks
	var st backup.Status
	var took time.Duration
	var lastProgress string
	deadline := start.Add(20 * time.Minute)
	for {
		if time.Now().After(deadline) {
			b.Fatalf("backup not done within 20 min; last status %+v", st)
		}
		var v struct{ Status backup.Status }
		if r := owner.Get("/_/api/backup"); r.Code == http.StatusOK {
			json.Unmarshal([]byte(r.Body), &v)
			st = v.Status
		}
		s := sampleOf(deviceInfo(b, devURL, adminPW))
		if st.LastSuccess.IsZero() {
			during.add(s)
			if p := st.Progress; p != nil {
				line := fmt.Sprintf("%s %d%%", st.Running, int(p.Percent)/10*10)
				if line != lastProgress {
					b.Logf("  %5.0fs %s: pc2 %.1f MB, restic %.1f MB, box used %.1f MB (other %.1f)",
						time.Since(start).Seconds(), line, kib(s.pc2), kib(s.restic), kib(s.used), kib(s.used-s.pc2-s.restic))
					lastProgress = line
				}
			}
			if st.LastError != "" && st.Running == "" {
				b.Fatalf("backup failed: %s", st.LastError)
			}
		} else {
			if took == 0 {
				took = time.Since(start)
			}
			if st.Running == "" {
				break
			}
			after.add(s)
		}
		time.Sleep(2 * time.Second)
	}
	other := meter.otherCores()
	if st.Last == nil || st.Last.TotalBytes < uint64(total) {
		b.Fatalf("the backup: %+v", st)
	}
	mbps := float64(st.Last.TotalBytes) / mb / took.Seconds()
	b.Logf("backup of %d files, %.1f MB (%.1f MB added to the repository) in about %v (±2 s sampling), %.2f MB/s; %d samples; other processes used %.2f cores\n"+
		"             %10s %10s %10s %10s %10s\n"+
		"before       %10.1f %10s %10.1f %10.1f %10.1f\n"+
		"backup peak  %10.1f %10.1f %10.1f %10.1f %10.1f\n"+
		"maint. peak  %10.1f %10.1f %10.1f %10.1f %10.1f  (%d samples: forget, prune, check, stats)\n"+
		"(MB; node = pc2 + restic, the peak of their sum; box used = MemTotal - MemAvailable; other = box used - node:\n"+
		"the kernel, gokrazy's processes and tmpfs;\n"+
		"target: node under 150 MB during the backup)",
		st.Last.TotalFiles, float64(st.Last.TotalBytes)/mb, float64(st.Last.DataAddedPacked)/mb, took.Round(time.Second), mbps, during.n, other,
		"pc2", "restic", "node", "box used", "other",
		kib(idleSample.pc2), "-", kib(idleSample.pc2), kib(idleSample.used), kib(idleSample.used-idleSample.pc2),
		kib(during.pc2), kib(during.restic), kib(during.node), kib(during.used), kib(during.other),
		kib(after.pc2), kib(after.restic), kib(after.node), kib(after.used), kib(after.other), after.n)
	if during.restic == 0 {
		b.Logf("warning: no sample saw a restic process during the backup")
	}
	b.Logf("restic at its peak: %.1f MB anonymous (heap, stacks), %.1f MB of file pages (its binary)",
		kib(during.atResticPeak.resticAnon), kib(during.atResticPeak.resticFile))

	// Then every file back from that backup, into a new folder (the
	// backup page's restore): restic's restore under the same limit.
	rstart := time.Now()
	if r := owner.Post("/_/backup/restore", url.Values{"csrf": {owner.CSRF("/_/")}}); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		b.Fatalf("start the restore: %d %s", r.Code, r.Location())
	}
	var restore memPeaks
	var rtook time.Duration
	for {
		if time.Since(rstart) > 20*time.Minute {
			b.Fatal("restore not done within 20 min")
		}
		var v struct {
			Restore struct {
				Running bool
				Err     string
				Done    time.Time
			}
		}
		if r := owner.Get("/_/api/backup"); r.Code == http.StatusOK {
			json.Unmarshal([]byte(r.Body), &v)
		}
		if !v.Restore.Running && !v.Restore.Done.IsZero() {
			if v.Restore.Err != "" {
				b.Fatalf("restore failed: %s", v.Restore.Err)
			}
			rtook = time.Since(rstart)
			break
		}
		restore.add(sampleOf(deviceInfo(b, devURL, adminPW)))
		time.Sleep(2 * time.Second)
	}
	b.Logf("restore of %.1f MB into a new folder in about %v (±2 s), %.2f MB/s; %d samples\n"+
		"restore peak %10.1f %10.1f %10.1f %10.1f %10.1f  (pc2, restic, node, box used, other; MB)",
		float64(total)/mb, rtook.Round(time.Second), float64(total)/mb/rtook.Seconds(), restore.n,
		kib(restore.pc2), kib(restore.restic), kib(restore.node), kib(restore.used), kib(restore.other))
	b.ReportMetric(kib(restore.node), "restore-node-peak-MB")
	b.ReportMetric(kib(restore.restic), "restore-restic-peak-MB")
	b.ReportMetric(rtook.Seconds(), "restore-seconds")
	b.ReportMetric(kib(during.pc2), "pc2-peak-MB")
	b.ReportMetric(kib(during.restic), "restic-peak-MB")
	b.ReportMetric(kib(during.node), "node-peak-MB")
	b.ReportMetric(kib(during.used), "box-used-peak-MB")
	b.ReportMetric(took.Seconds(), "backup-seconds")
	b.ReportMetric(mbps, "MB-per-second")
}

// uploadBackupData uploads about 256 MB of incompressible files: four of
// 60 MB and 400 of 4-64 KiB in eight folders, all from a fixed seed. It
// returns the file count and bytes.
func uploadBackupData(t testing.TB, owner *cloudtest.Browser) (files int, total int64) {
	t.Helper()
	csrf := owner.CSRF("/_/")
	put := func(p string, n int64) {
		// Each file its own content: nothing for restic to deduplicate.
		seed := [32]byte{17, byte(files), byte(files >> 8)}
		req, _ := http.NewRequest("PUT", "/_/api/files/"+(&url.URL{Path: p}).EscapedPath(),
			io.LimitReader(rand.NewChaCha8(seed), n))
		req.Header.Set("X-CSRF-Token", csrf)
		req.Header.Set("Accept", "application/json")
		if r := owner.Do(req); r.Code != http.StatusCreated {
			t.Fatalf("upload %s: %d %s", p, r.Code, r.Err())
		}
		files++
		total += n
	}
	for i := range 4 {
		put(fmt.Sprintf("video-%d.bin", i), 60e6)
	}
	sizes := rand.New(rand.NewChaCha8([32]byte{18}))
	for d := range 8 {
		dir := fmt.Sprintf("photos-%d", d)
		if r := owner.Post("/_/mkdir", url.Values{"name": {dir}, "csrf": {csrf}}); r.Code != http.StatusSeeOther {
			t.Fatalf("mkdir %s: %d %s", dir, r.Code, r.Err())
		}
		for i := range 50 {
			put(fmt.Sprintf("%s/img-%03d.jpg", dir, i), int64(4<<10+sizes.IntN(60<<10)))
		}
	}
	return files, total
}

// memSample is what one GET /api/device shows of the node's memory, in
// KiB.
type memSample struct {
	pc2, restic, used      int
	resticAnon, resticFile int // restic's RSS split: heap and stacks, and its binary's pages
}

func sampleOf(info deviceInfoJSON) memSample {
	s := memSample{used: info.Memory.TotalKiB - info.Memory.AvailableKiB}
	for _, p := range info.Processes {
		switch p.Name {
		case "pc2":
			s.pc2 += p.RSSKiB
		case "restic":
			s.restic += p.RSSKiB
			s.resticAnon += p.AnonKiB
			s.resticFile += p.FileKiB
		}
	}
	return s
}

// memPeaks are the peaks of a run of samples, in KiB.
type memPeaks struct {
	pc2, restic, node, used, n int
	other                      int // used - node: the kernel, the other processes, tmpfs
	atResticPeak               memSample
}

func (m *memPeaks) add(s memSample) {
	m.pc2 = max(m.pc2, s.pc2)
	if s.restic > m.restic {
		m.restic, m.atResticPeak = s.restic, s
	}
	m.node = max(m.node, s.pc2+s.restic)
	m.used = max(m.used, s.used)
	m.other = max(m.other, s.used-s.pc2-s.restic)
	m.n++
}
