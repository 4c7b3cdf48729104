//go:build unix

package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	leveldb "github.com/ipfs/go-ds-leveldb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/services/dht/records"
)

// storeRecords is how many did records the store benchmarks write.
var storeRecords = flag.Int("store.records", 10000, "did records the store benchmarks write")

// typicalDID signs the did record of user i as a node publishes it: two
// direct addresses, one supernode, one name, one service (the same shape
// as the records package's memory benchmark).
func typicalDID(tb testing.TB, i int, super ed25519.PrivateKey, now time.Time) (key string, value []byte) {
	tb.Helper()
	k := testKey(fmt.Sprint("store-user-", i))
	d := &records.DID{
		Version:    records.Version,
		ID:         idOf(tb, k),
		Seq:        1,
		IssuedAt:   now.Unix(),
		Expires:    now.Add(6 * 24 * time.Hour).Unix(),
		Direct:     []string{fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i>>16&0xff, i>>8&0xff, i&0xff), "/ip6/2001:db8::7/udp/4001/quic-v1"},
		Supernodes: []records.Peer{{ID: idOf(tb, super), Addrs: []string{"/dns4/sn1.ela.city/tcp/4001"}}},
		Names:      []string{fmt.Sprintf("node%05d.ela.city", i)},
		Services:   []records.Service{{Name: "cloud", Endpoint: "http://192.0.2.7:4200"}},
	}
	v, err := records.SignDID(k, d)
	if err != nil {
		tb.Fatal(err)
	}
	return records.DIDKey(d.ID), v
}

// BenchmarkStoreMemory writes -store.records (10,000) valid did records
// into a lone supernode with the in-memory store (no Config.DataDir)
// through Node.Put, and reports the heap they take per record.
func BenchmarkStoreMemory(b *testing.B) { benchStore(b, false) }

// BenchmarkStoreLevelDB is the same with a LevelDB store (Config.DataDir),
// and reports the disk the records take too. It runs after
// BenchmarkStoreMemory: a closed LevelDB is freed late and would make the
// in-memory store look smaller than it is.
func BenchmarkStoreLevelDB(b *testing.B) { benchStore(b, true) }

func benchStore(b *testing.B, disk bool) {
	now := time.Now()
	super := testKey("store-supernode")
	keys := make([]string, *storeRecords)
	vals := make([][]byte, *storeRecords)
	valueBytes := 0
	for i := range keys {
		keys[i], vals[i] = typicalDID(b, i, super, now)
		valueBytes += len(vals[i])
	}

	var heap, diskBytes, diskAlloc, reopened, putNs float64
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		mn := mocknet.New()
		sk, err := crypto.UnmarshalEd25519PrivateKey(super)
		if err != nil {
			b.Fatal(err)
		}
		h, err := mn.AddPeer(sk, ma.StringCast("/ip4/10.0.0.1/udp/39001/quic-v1"))
		if err != nil {
			b.Fatal(err)
		}
		cfg := Config{Host: h, Mode: ModeServer, ReplicateInterval: -1, Logger: testLogger(b)}
		if disk {
			cfg.DataDir = dir
		}
		nd, err := New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		before := heapAfterGC()
		b.StartTimer()

		start := time.Now()
		for i := range keys {
			// With no peers, kad-dht's PutValue stores the record locally
			// and then fails its lookup for peers to send it to.
			if err := nd.Put(ctx, keys[i], vals[i]); err != nil && !errors.Is(err, kb.ErrLookupFailure) {
				b.Fatalf("put %d: %v", i, err)
			}
		}
		putNs = float64(time.Since(start).Nanoseconds()) / float64(*storeRecords)

		b.StopTimer()
		heap = float64(int64(heapAfterGC())-int64(before)) / float64(*storeRecords)
		recs, err := nd.localRecords(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) != *storeRecords {
			b.Fatalf("store holds %d records, want %d", len(recs), *storeRecords)
		}
		if err := nd.Close(); err != nil {
			b.Fatal(err)
		}
		mn.Close()
		if disk {
			size, alloc := du(b, dir)
			diskBytes, diskAlloc = float64(size)/float64(*storeRecords), float64(alloc)/float64(*storeRecords)
			// Reopening replays LevelDB's journal into a compressed table,
			// which is where records live once a node has run a while.
			st, err := leveldb.NewDatastore(dir, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			size, _ = du(b, dir)
			reopened = float64(size) / float64(*storeRecords)
		}
		runtime.KeepAlive(vals)
		b.StartTimer()
	}
	b.ReportMetric(putNs, "ns/put")
	b.ReportMetric(heap, "heap-B/record")
	b.ReportMetric(float64(valueBytes)/float64(*storeRecords), "value-B/record")
	if disk {
		b.ReportMetric(diskBytes, "disk-B/record")
		b.ReportMetric(diskAlloc, "disk-alloc-B/record")
		b.ReportMetric(reopened, "disk-reopened-B/record")
	}
}

// heapAfterGC is the live heap once it and the number of goroutines have
// been steady for a second (at most 30 s): what earlier benchmarks closed
// (a store's finalizers, a simulated network's goroutines) is freed first.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	var lastHeap uint64
	lastG, steady := -1, 0
	for deadline := time.Now().Add(30 * time.Second); steady < 4 && time.Now().Before(deadline); {
		runtime.GC()
		runtime.ReadMemStats(&m)
		g := runtime.NumGoroutine()
		if g == lastG && max(m.HeapAlloc, lastHeap)-min(m.HeapAlloc, lastHeap) < 64<<10 {
			steady++
		} else {
			steady = 0
		}
		lastHeap, lastG = m.HeapAlloc, g
		time.Sleep(250 * time.Millisecond)
	}
	return m.HeapAlloc
}

// du sums the apparent size and the allocated blocks of the files in dir.
func du(tb testing.TB, dir string) (size, alloc int64) {
	tb.Helper()
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return size, alloc
}
