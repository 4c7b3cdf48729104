package records

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
)

func BenchmarkValidateDID(b *testing.B) {
	benchValidate(b, DIDKey(idOf(b, keyA)), signDID(b, keyA, testDID(b, keyA)))
}

// BenchmarkValidateName validates an active name: two signatures (grant
// and claim) and two decodes.
func BenchmarkValidateName(b *testing.B) {
	benchValidate(b, NameKey(testName), activeName(b))
}

// benchValidate runs the namespaced validator (what kad-dht calls) on one
// record and reports validations per second.
func benchValidate(b *testing.B, key string, val []byte) {
	nv := strictValidator(b).Namespaced()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := nv.Validate(key, val); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
}

const memRecords = 10000

func mustID(key ed25519.PrivateKey) identity.ID {
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		panic(err)
	}
	return id
}

// memCorpus is memRecords typical did records of distinct nodes (two direct
// addresses, one supernode, one name, one service), built once.
var memCorpus = sync.OnceValues(func() ([]string, [][]byte) {
	keys := make([]string, memRecords)
	vals := make([][]byte, memRecords)
	seed := bytes.Repeat([]byte{0x42}, ed25519.SeedSize)
	super := mustID(keySuper)
	for i := range memRecords {
		binary.BigEndian.PutUint32(seed, uint32(i))
		key := ed25519.NewKeyFromSeed(seed)
		id := mustID(key)
		d := &DID{
			Version:    Version,
			ID:         id,
			Seq:        uint64(i),
			IssuedAt:   unix(-time.Hour),
			Expires:    unix(6 * 24 * time.Hour),
			Direct:     []string{fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i>>16, (i>>8)&0xff, i&0xff), "/ip6/2001:db8::7/udp/4001/quic-v1"},
			Supernodes: []Peer{{ID: super, Addrs: []string{"/dns4/sn1.ela.city/tcp/4001"}}},
			Names:      []string{fmt.Sprintf("node%05d.ela.city", i)},
			Services:   []Service{{Name: "cloud", Endpoint: "http://192.0.2.7:4200"}},
		}
		val, err := SignDID(key, d)
		if err != nil {
			panic(err)
		}
		keys[i], vals[i] = DIDKey(id), val
	}
	return keys, vals
})

// BenchmarkRecordMemory stores memRecords encoded did records in a map keyed
// by DHT key, as an in-memory record store would, and reports the heap it
// takes per record (key, value and map overhead).
func BenchmarkRecordMemory(b *testing.B) {
	keys, vals := memCorpus()
	var valueBytes int
	for _, v := range vals {
		valueBytes += len(v)
	}
	b.ResetTimer()
	var total int64
	var ms runtime.MemStats
	for i := 0; i < b.N; i++ {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		m := make(map[string][]byte)
		for j := range keys {
			m[strings.Clone(keys[j])] = bytes.Clone(vals[j])
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		total += int64(ms.HeapAlloc) - int64(before)
		runtime.KeepAlive(m)
	}
	b.ReportMetric(float64(total)/float64(b.N)/memRecords, "B/record")
	b.ReportMetric(float64(valueBytes)/memRecords, "value-B/record")
}
