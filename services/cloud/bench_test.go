package cloud

// The personal cloud's benchmarks (docs/benchmarks.md, "Personal cloud"):
// upload and download throughput through the real handlers on loopback,
// each against the raw speed of the data dir's disk measured in the same
// run; the memory a large upload takes; the weight of the owner's pages.

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/services/cloud/files"
	"golang.org/x/sys/unix"
)

var benchSize = flag.Int64("cloudbench.size", 1<<30, "bytes of each upload and download in BenchmarkCloudTransfer and BenchmarkCloudUploadMemory")

// benchChunk is the size of Upload.ReadFrom's buffer; the raw writes and
// reads use it too, and so does the downloading client.
const benchChunk = 256 << 10

// benchCloud is a cloud whose wizard is done, on a loopback HTTP server,
// with a logged-in browser.
type benchCloud struct {
	tb    testing.TB
	srv   *Server
	ts    *httptest.Server
	br    *cloudtest.Browser
	dir   string // data dir
	files string // the file store's root in it
	csrf  string
	log   *slog.Logger // feeds the dashboard's log box
}

func newBenchCloud(tb testing.TB) *benchCloud {
	tb.Helper()
	c := &benchCloud{tb: tb, dir: tb.TempDir()}
	c.files = filepath.Join(c.dir, "files")
	ring := NewLogRing(200) // as the personal node keeps
	c.log = slog.New(ring.Handler(slog.DiscardHandler))
	var err error
	c.srv, err = New(Options{DataDir: c.dir, Node: &testNode{}, Version: "bench", Logs: ring, Logger: c.log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.srv.Close() })
	c.ts = httptest.NewServer(c.srv.Handler())
	tb.Cleanup(c.ts.Close)
	c.br = cloudtest.New(tb, c.ts.URL, c.ts.Client())
	c.br.CreateIdentity()
	c.br.Password("correct horse battery")
	c.br.Step("skip", nil)
	c.csrf = c.br.CSRF("/_/")
	return c
}

// upload PUTs size bytes of block to name the way the upload script
// does: one request, Content-Length set, the CSRF header. It returns the
// time the client read the body's last bytes, to send them.
func (c *benchCloud) upload(name string, size int64, block []byte) (sent time.Time) {
	c.tb.Helper()
	body := &patternReader{block: block, left: size}
	req, err := http.NewRequest("PUT", "/_/api/files/"+name, body)
	if err != nil {
		c.tb.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("X-CSRF-Token", c.csrf)
	req.Header.Set("Accept", "application/json")
	if r := c.br.Do(req); r.Code != http.StatusCreated {
		c.tb.Fatalf("upload %s: got %d %s, want 201", name, r.Code, r.Err())
	}
	return body.last
}

// download GETs name and discards it, reading benchChunk at a time.
func (c *benchCloud) download(name string, size int64, buf []byte) {
	c.tb.Helper()
	resp, err := c.br.C.Get(c.ts.URL + "/_/dl/" + name)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.tb.Fatalf("download %s: got %d, want 200", name, resp.StatusCode)
	}
	n, err := io.CopyBuffer(writerOnly{io.Discard}, resp.Body, buf)
	if err != nil || n != size {
		c.tb.Fatalf("download %s: got %d bytes (%v), want %d", name, n, err, size)
	}
}

// writerOnly hides io.Discard's ReadFrom, which would read 8 KiB at a
// time instead of the buffer given to io.CopyBuffer.
type writerOnly struct{ io.Writer }

// patternBlock is 1 MiB of pseudo-random bytes; uploads and raw writes
// repeat it, so no layer can compress or skip zeros.
func patternBlock() []byte {
	b := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{'p', 'c', '2'}).Read(b)
	return b
}

// patternReader yields left bytes of block, repeated, without holding
// them: a 1 GiB body costs the client 1 MiB.
type patternReader struct {
	block []byte
	off   int
	left  int64
	last  time.Time // when Read returned the last bytes
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.block[r.off:])
		n += c
		r.off = (r.off + c) % len(r.block)
	}
	r.left -= int64(n)
	if r.left == 0 {
		r.last = time.Now()
	}
	return n, nil
}

// rawWrite writes size bytes into the store's folder dir the way an
// upload reaches the disk (files.Upload): benchChunk writes to a new file
// in the store's temp folder, fsync, close, rename into dir, fsync of
// dir. It returns when the writes were done; removeRaw removes the file.
func rawWrite(tb testing.TB, dir string, size int64, block, buf []byte) (written time.Time) {
	tb.Helper()
	tmp, final := filepath.Join(dir, files.TempDir, "raw.tmp"), filepath.Join(dir, "raw.bin")
	f := create(tb, tmp, size, block, buf)
	written = time.Now()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		tb.Fatal(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		tb.Fatal(err)
	}
	d.Close()
	return written
}

func removeRaw(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.Remove(filepath.Join(dir, "raw.bin")); err != nil {
		tb.Fatal(err)
	}
}

// rawRead reads the file at name to its end, benchChunk at a time.
func rawRead(tb testing.TB, name string, size int64, buf []byte) {
	tb.Helper()
	f, err := os.Open(name)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if n != size {
		tb.Fatalf("read %s: got %d bytes, want %d", name, n, size)
	}
}

// create writes size bytes of block to a new file, benchChunk (len(buf))
// at a time, and returns it open.
func create(tb testing.TB, name string, size int64, block, buf []byte) *os.File {
	tb.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	src := &patternReader{block: block, left: size}
	for {
		n, rerr := src.Read(buf)
		if _, err := f.Write(buf[:n]); err != nil {
			tb.Fatal(err)
		}
		if rerr != nil {
			return f
		}
	}
}

// warm fills the page cache with size bytes of a scratch file and drops
// them unsynced (no disk write), right before a timed write. This VM has
// a virtio balloon with free page reporting: memory that has been free
// for a few seconds is slow to touch again (writing 1 GiB into the page
// cache took 1 to 3 s after a 5 s pause, 0.26 s right after a 1 GiB
// file was removed). The timed write then reuses the scratch file's
// pages, as it would on hardware without a balloon.
func warm(tb testing.TB, dir string, size int64, block, buf []byte) {
	tb.Helper()
	name := filepath.Join(dir, files.TempDir, "warm.tmp")
	create(tb, name, size, block, buf).Close()
	if err := os.Remove(name); err != nil {
		tb.Fatal(err)
	}
}

// evict drops the file's pages from the page cache (they are clean after
// the upload's fsync), so the next read comes from the disk. Unlike
// drop_caches it touches no other file on the shared machine.
func evict(tb testing.TB, name string) {
	tb.Helper()
	f, err := os.Open(name)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		tb.Fatal(err)
	}
}

// mbps is size bytes in d, in MB/s (10^6 bytes, as go test prints).
func mbps(size int64, d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }

// machine is a reading of the machine: CPU ticks of all processes and of
// this one, and bytes written to the data dir's block device. Other
// engineers share the machine; see quietly.
type machine struct {
	at        time.Time
	busy, own int64 // USER_HZ ticks
	written   int64 // bytes written to the device, by anyone
}

// userHZ is the unit of /proc's tick counts on Linux.
const userHZ = 100

func readMachine(tb testing.TB, dev [2]uint32) machine {
	tb.Helper()
	m := machine{at: time.Now()}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// cpu user nice system idle iowait irq softirq steal: busy is user,
	// nice, system, irq and softirq.
	line, _, _ := strings.Cut(string(stat), "\n")
	for i, v := range strings.Fields(line)[1:] {
		if i <= 2 || i == 5 || i == 6 {
			n, _ := strconv.ParseInt(v, 10, 64)
			m.busy += n
		}
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		tb.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(self), ") ")
	for _, v := range strings.Fields(rest)[11:13] { // utime, stime (fields 14, 15)
		n, _ := strconv.ParseInt(v, 10, 64)
		m.own += n
	}
	ds, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		tb.Fatal(err)
	}
	maj, mnr := strconv.Itoa(int(dev[0])), strconv.Itoa(int(dev[1]))
	for l := range strings.Lines(string(ds)) {
		if f := strings.Fields(l); len(f) > 9 && f[0] == maj && f[1] == mnr {
			n, _ := strconv.ParseInt(f[9], 10, 64) // sectors written, of 512 bytes
			m.written = n * 512
		}
	}
	return m
}

// phase is one timed step of an iteration and what else happened
// meanwhile.
type phase struct {
	took        time.Duration
	head        time.Duration // writes: until the last byte was written or sent, before the fsync
	own, others float64       // CPU cores: this process, all others
	extra       int64         // bytes written to the device beyond the step's own
}

// measure runs step, which writes ours bytes to the device and returns
// when it had written them (or zero), and returns its phase.
func measure(tb testing.TB, dev [2]uint32, ours int64, step func() time.Time) phase {
	tb.Helper()
	a := readMachine(tb, dev)
	head := step()
	b := readMachine(tb, dev)
	s := b.at.Sub(a.at).Seconds() * userHZ
	if head.IsZero() {
		head = b.at
	}
	return phase{
		took:   b.at.Sub(a.at),
		head:   head.Sub(a.at),
		own:    float64(b.own-a.own) / s,
		others: max(0, float64((b.busy-a.busy)-(b.own-a.own))/s),
		extra:  b.written - a.written - ours,
	}
}

func (p phase) String() string {
	commit := ""
	if p.head < p.took {
		commit = fmt.Sprintf(" (%.2f s after the last byte)", (p.took - p.head).Seconds())
	}
	return fmt.Sprintf("%.2f s%s, %.2f cores, others %.2f, others' writes %.1f MB", p.took.Seconds(), commit, p.own, p.others, float64(p.extra)/1e6)
}

var benchQuiet = flag.Float64("cloudbench.quiet", 0.25, "before each iteration wait (up to 2 min) until other processes use at most this many cores and write at most 1 MB a second to the data dir's disk; redo (up to twice) an iteration they disturbed anyway (0: do not wait)")

// quietly runs one iteration once the machine is quiet. An iteration is
// disturbed if, during one of its phases, other processes used more than
// -cloudbench.quiet cores or wrote more than 1 % of size to the disk; it
// is done again, up to twice. It returns the kept phases and how many
// iterations were redone.
func quietly(tb testing.TB, dev [2]uint32, size int64, iter func() []phase) ([]phase, int) {
	tb.Helper()
	limit := *benchQuiet
	for attempt := 0; ; attempt++ {
		if limit > 0 {
			waitQuiet(tb, dev, limit)
		}
		ps := iter()
		disturbed := false
		for _, p := range ps {
			disturbed = disturbed || p.others > limit || p.extra > size/100
		}
		if limit <= 0 || !disturbed || attempt == 2 {
			return ps, attempt
		}
		tb.Logf("disturbed, again: %v", ps)
	}
}

func waitQuiet(tb testing.TB, dev [2]uint32, limit float64) {
	tb.Helper()
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); {
		p := measure(tb, dev, 0, func() time.Time { time.Sleep(500 * time.Millisecond); return time.Time{} })
		if p.others <= limit && p.extra <= 500e3 {
			return
		}
	}
	tb.Logf("the machine did not become quiet in 2 minutes")
}

func deviceOf(tb testing.TB, dir string) [2]uint32 {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		tb.Fatal(err)
	}
	return [2]uint32{unix.Major(st.Dev), unix.Minor(st.Dev)}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkCloudTransfer: one large file up (PUT /_/api/files/) and down
// (GET /_/dl/) through the cloud's handlers on loopback. Each iteration
// pairs the transfer with the same bytes written straight to the data
// dir's disk (rawWrite), so pct_of_raw compares the two within the same
// seconds; downloads also with plain reads of the stored file, from the
// page cache (download) or from the disk (download-cold). ns/op, MB/s
// and the other figures are medians of the kept iterations (see
// quietly): disk and CPU speeds vary on a shared VM.
func BenchmarkCloudTransfer(b *testing.B) {
	size := *benchSize
	block := patternBlock()
	buf := make([]byte, benchChunk)

	b.Run("upload", func(b *testing.B) {
		c := newBenchCloud(b)
		dev := deviceOf(b, c.dir)
		b.Logf("data dir %s, device %d:%d", c.dir, dev[0], dev[1])
		b.SetBytes(size)
		var raw, up, pct []float64
		redone := 0
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			ps, n := quietly(b, dev, size, func() []phase {
				warm(b, c.files, size, block, buf)
				var r, u phase
				write := func() {
					r = measure(b, dev, size, func() time.Time { return rawWrite(b, c.files, size, block, buf) })
					removeRaw(b, c.files)
				}
				// Alternate the order, so neither side always finds the
				// disk just left busy by the other.
				if i%2 == 0 {
					write()
				}
				u = measure(b, dev, size, func() time.Time { return c.upload("bench.bin", size, block) })
				if err := c.srv.Store().Remove("bench.bin"); err != nil {
					b.Fatal(err)
				}
				if i%2 == 1 {
					write()
				}
				return []phase{r, u}
			})
			redone += n
			r, u := ps[0], ps[1]
			raw, up = append(raw, mbps(size, r.took)), append(up, mbps(size, u.took))
			pct = append(pct, 100*r.took.Seconds()/u.took.Seconds())
			b.Logf("%d: raw write %.0f MB/s (%v); upload %.0f MB/s (%v): %.1f %%", i, raw[i], r, up[i], u, pct[i])
			b.StartTimer()
		}
		b.ReportMetric(float64(size)/median(up)*1e3, "ns/op")
		b.ReportMetric(median(up), "MB/s")
		b.ReportMetric(median(raw), "raw_write_MB/s")
		b.ReportMetric(median(pct), "pct_of_raw")
		b.ReportMetric(float64(redone), "redone")
	})

	for _, cold := range []bool{false, true} {
		name := "download"
		if cold {
			name = "download-cold"
		}
		b.Run(name, func(b *testing.B) {
			c := newBenchCloud(b)
			dev := deviceOf(b, c.dir)
			c.upload("bench.bin", size, block)
			stored := filepath.Join(c.files, "bench.bin")
			b.SetBytes(size)
			var write, read, down, pct, pctRead []float64
			redone := 0
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				ps, n := quietly(b, dev, size, func() []phase {
					warm(b, c.files, size, block, buf)
					w := measure(b, dev, size, func() time.Time { return rawWrite(b, c.files, size, block, buf) })
					removeRaw(b, c.files)
					if cold {
						evict(b, stored)
					}
					r := measure(b, dev, 0, func() time.Time { rawRead(b, stored, size, buf); return time.Time{} })
					if cold {
						evict(b, stored)
					}
					d := measure(b, dev, 0, func() time.Time { c.download("bench.bin", size, buf); return time.Time{} })
					return []phase{w, r, d}
				})
				redone += n
				w, r, d := ps[0], ps[1], ps[2]
				write, read, down = append(write, mbps(size, w.took)), append(read, mbps(size, r.took)), append(down, mbps(size, d.took))
				pct, pctRead = append(pct, 100*w.took.Seconds()/d.took.Seconds()), append(pctRead, 100*r.took.Seconds()/d.took.Seconds())
				b.Logf("%d: raw write %.0f MB/s (%v); raw read %.0f MB/s (%v); download %.0f MB/s (%v)", i,
					write[i], w, read[i], r, down[i], d)
				b.StartTimer()
			}
			b.ReportMetric(float64(size)/median(down)*1e3, "ns/op")
			b.ReportMetric(median(down), "MB/s")
			b.ReportMetric(median(write), "raw_write_MB/s")
			b.ReportMetric(median(read), "raw_read_MB/s")
			b.ReportMetric(median(pct), "pct_of_raw")
			b.ReportMetric(median(pctRead), "pct_of_raw_read")
			b.ReportMetric(float64(redone), "redone")
		})
	}
}

// memReading is the process's memory: RSS from /proc and the Go heap's
// in-use spans (MemStats.HeapInuse) from runtime/metrics, which, unlike
// ReadMemStats, does not stop the world at every sample.
type memReading struct{ rss, heap uint64 }

var memSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
}

func readMem(buf []byte) memReading {
	var m memReading
	metrics.Read(memSamples)
	m.heap = memSamples[0].Value.Uint64() + memSamples[1].Value.Uint64()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	n, _ := io.ReadFull(f, buf)
	f.Close()
	if _, rest, ok := bytes.Cut(buf[:n], []byte("\nVmRSS:")); ok {
		line, _, _ := bytes.Cut(rest, []byte("\n"))
		kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(string(line)), " kB"), 10, 64)
		m.rss = kb << 10
	}
	return m
}

// BenchmarkCloudUploadMemory: how much the process grows while one large
// body streams in through PUT /_/api/files/. Client and server share the
// process, so the growth includes the client's side (a 1 MiB pattern
// block, allocated before the baseline, and the transport's buffers): an
// upper bound on the server's. Peaks are over every iteration.
func BenchmarkCloudUploadMemory(b *testing.B) {
	size := *benchSize
	block := patternBlock()
	c := newBenchCloud(b)
	b.SetBytes(size)
	var peakRSS, peakHeap int64
	statusBuf, sampleBuf := make([]byte, 8<<10), make([]byte, 8<<10)
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		debug.FreeOSMemory()
		base := readMem(statusBuf)
		var (
			peak = base // the sampler's, read after done
			stop = make(chan struct{})
			done = make(chan struct{})
		)
		go func() {
			defer close(done)
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			for {
				m := readMem(sampleBuf)
				peak.rss, peak.heap = max(peak.rss, m.rss), max(peak.heap, m.heap)
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		b.StartTimer()
		c.upload("bench.bin", size, block)
		b.StopTimer()
		close(stop)
		<-done
		rss, heap := int64(peak.rss-base.rss), int64(peak.heap-base.heap)
		b.Logf("baseline RSS %.1f MB, heap in use %.1f MB; peak growth RSS %.1f MB, heap %.1f MB",
			float64(base.rss)/1e6, float64(base.heap)/1e6, float64(rss)/1e6, float64(heap)/1e6)
		peakRSS, peakHeap = max(peakRSS, rss), max(peakHeap, heap)
		if err := c.srv.Store().Remove("bench.bin"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(peakRSS)/1e6, "peak_rss_growth_MB")
	b.ReportMetric(float64(peakHeap)/1e6, "peak_heap_growth_MB")
}

// assetRe finds what a page loads from the app's assets.
var assetRe = regexp.MustCompile(`(?:href|src)="(/_/assets/[^"]+)"`)

// weigh loads path and each distinct asset it references, as a browser
// with an empty cache does, and returns the bytes of the page and of the
// assets (bodies; the cloud does not compress).
func (c *benchCloud) weigh(path string) (page, assets int) {
	c.tb.Helper()
	r := c.br.Get(path)
	if r.Code != http.StatusOK {
		c.tb.Fatalf("GET %s: got %d, want 200", path, r.Code)
	}
	seen := map[string]bool{}
	for _, m := range assetRe.FindAllStringSubmatch(r.Body, -1) {
		if seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		a := c.br.Get(m[1])
		if a.Code != http.StatusOK {
			c.tb.Fatalf("GET %s (from %s): got %d, want 200", m[1], path, a.Code)
		}
		assets += len(a.Body)
	}
	if len(seen) == 0 {
		c.tb.Fatalf("%s references no assets", path)
	}
	return len(r.Body), assets
}

// BenchmarkCloudPageWeight: the bytes a browser with an empty cache
// loads for the dashboard and for the file browser, page plus assets,
// in KB (1,000 bytes). The dashboard is weighed fresh from the wizard and
// with its log box full (the last 50 lines, 200 characters each); the
// file browser at the root and in folders of 100 and 1,000 files.
func BenchmarkCloudPageWeight(b *testing.B) {
	c := newBenchCloud(b)
	page, assets := c.weigh("/_/")
	fresh := page + assets
	b.Logf("dashboard after the wizard: page %d B, assets %d B", page, assets)

	// The ring's lines are "<date> <time> INFO <message>": 25 + 175.
	msg := strings.Repeat("m", 175)
	for range 50 {
		c.log.Info(msg)
	}
	// Named like a camera's photos. Written straight into the store's
	// folder: the listing reads the folder, and the store's uploads would
	// fsync each file.
	for _, n := range []int{100, 1000} {
		dir := filepath.Join(c.files, fmt.Sprint("photos", n))
		if err := os.Mkdir(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		for i := range n {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("IMG_20260101_%06d.jpg", i)), []byte("jpeg"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}

	pages := []struct{ metric, path string }{
		{"dashboard_KB", "/_/"},
		{"files_root_KB", "/_/files/"},
		{"files_100_KB", "/_/files/photos100/"},
		{"files_1000_KB", "/_/files/photos1000/"},
	}
	weights := make([]int, len(pages))
	var assetBytes int
	for b.Loop() {
		for i, p := range pages {
			page, assets := c.weigh(p.path)
			weights[i], assetBytes = page+assets, assets
		}
	}
	b.ReportMetric(float64(fresh)/1e3, "dashboard_fresh_KB")
	for i, p := range pages {
		b.ReportMetric(float64(weights[i])/1e3, p.metric)
	}
	b.ReportMetric(float64(assetBytes)/1e3, "assets_KB")
}
