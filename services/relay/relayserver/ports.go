package relayserver

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pc2/pc2/internal/atomicfile"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/relay"
)

// portTable assigns public ports to (DID, service) pairs, stably: a node
// gets its port back after a reconnect or a restart. An assignment whose
// node is not attached is only kept while its port is not needed: when
// the range is full, a new service takes the port of the node detached
// longest ago, and assignments unused for unusedFor are dropped.
type portTable struct {
	path      string
	min, max  int
	unusedFor time.Duration
	mu        sync.Mutex
	byKey     map[string]portEntry // "did\x00service" -> port
	byPort    map[int]string
}

// portEntry is one assignment: its port and when its node last attached
// (Unix seconds).
type portEntry struct {
	Port int   `json:"port"`
	Seen int64 `json:"seen"`
}

func loadPorts(path string, lo, hi int, unusedFor time.Duration, now time.Time) (*portTable, error) {
	t := &portTable{path: path, min: lo, max: hi, unusedFor: unusedFor, byKey: map[string]portEntry{}, byPort: map[int]string{}}
	if path == "" {
		return t, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: port table: %w", err)
	}
	var saved map[string]json.RawMessage
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("relay: port table %s: %w", path, err)
	}
	for k, raw := range saved {
		var e portEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			// The first format: the port alone.
			if err := json.Unmarshal(raw, &e.Port); err != nil {
				return nil, fmt.Errorf("relay: port table %s: %s: %w", path, k, err)
			}
			e.Seen = now.Unix()
		}
		if e.Port >= lo && e.Port <= hi && t.byPort[e.Port] == "" {
			t.byKey[k], t.byPort[e.Port] = e, k
		}
	}
	return t, nil
}

// didOfKey is the DID part of a port table key.
func didOfKey(key string) string {
	did, _, _ := strings.Cut(key, "\x00")
	return did
}

// candidates returns the ports to try for key: its assigned port, else
// free ports from the hash-derived start upwards through the whole range,
// then the ports of nodes not attached now (attached holds their DIDs),
// longest unseen first.
func (t *portTable) candidates(key string, attached map[string]bool) []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byKey[key]; ok {
		return []int{e.Port}
	}
	first := hashPort(key, t.min, t.max)
	span := t.max - t.min + 1
	var out []int
	for i := 0; i < span; i++ {
		p := t.min + (first-t.min+i)%span
		if _, taken := t.byPort[p]; !taken {
			out = append(out, p)
		}
	}
	var idle []portEntry
	for k, e := range t.byKey {
		if !attached[didOfKey(k)] {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b portEntry) int { return cmp.Compare(a.Seen, b.Seen) })
	for _, e := range idle {
		out = append(out, e.Port)
	}
	return out
}

// portKey names a node's exposed service in the port table.
func portKey(id identity.ID, service string) string { return id.DID() + "\x00" + service }

// hashPort is the port in min-max that key's search starts at.
func hashPort(key string, min, max int) int {
	h := sha256.Sum256([]byte(key))
	return min + int(binary.BigEndian.Uint64(h[:8])%uint64(max-min+1))
}

// PreferredPort is the public port a relay with ports min-max gives the
// service of node id when that port is free and the node has none yet:
// what an operator (or a test forwarding ports) can plan with.
func PreferredPort(id identity.ID, service string, min, max int) int {
	return hashPort(portKey(id, service), min, max)
}

// assign records key's port, seen now, taking it from a detached node
// that held it, drops assignments of detached nodes unused for
// unusedFor, and saves the table. A node re-attaching within a day of
// its last save changes nothing (no write per attach).
func (t *portTable) assign(key string, port int, now time.Time, attached map[string]bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byKey[key]; ok && e.Port == port && now.Sub(time.Unix(e.Seen, 0)) < 24*time.Hour {
		return nil
	}
	if owner, ok := t.byPort[port]; ok && owner != key {
		delete(t.byKey, owner)
	}
	t.byKey[key], t.byPort[port] = portEntry{Port: port, Seen: now.Unix()}, key
	for k, e := range t.byKey {
		if !attached[didOfKey(k)] && now.Sub(time.Unix(e.Seen, 0)) > t.unusedFor {
			delete(t.byKey, k)
			delete(t.byPort, e.Port)
		}
	}
	return t.save()
}

// save writes the table (t.mu held).
func (t *portTable) save() error {
	if t.path == "" {
		return nil
	}
	b, _ := json.Marshal(t.byKey)
	return atomicfile.Write(t.path, b, 0o600)
}

// keepOnly drops id's assignments of services not in services (what the
// node exposes now) and saves the table, so a node holds at most as many
// ports as one attach may ask for (Limits.Ports): re-attaching with new
// service names does not reserve the range port by port.
func (t *portTable) keepOnly(id identity.ID, services []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	keep := map[string]bool{}
	for _, name := range services {
		keep[portKey(id, name)] = true
	}
	prefix := portKey(id, "")
	dropped := false
	for k, e := range t.byKey {
		if strings.HasPrefix(k, prefix) && !keep[k] {
			delete(t.byKey, k)
			delete(t.byPort, e.Port)
			dropped = true
		}
	}
	if !dropped {
		return nil
	}
	return t.save()
}

// mappedPort is a listening public port of one node's service.
type mappedPort struct {
	port int
	ln   net.Listener
	once sync.Once
}

func (m *mappedPort) close() { m.once.Do(func() { m.ln.Close() }) }

// mapPort opens the public port of service name for session s and splices
// each connection to a /pc2/tcp/1 stream to the node.
func (r *Relay) mapPort(s *session, name string) (*mappedPort, error) {
	if name == "" || len(name) > 64 {
		return nil, fmt.Errorf("service name %q", name)
	}
	key := portKey(s.id, name)
	var ln net.Listener
	var port int
	var lastErr error
	attached := r.attachedDIDs()
	for _, p := range r.ports.candidates(key, attached) {
		l, err := r.cfg.Listen("tcp", net.JoinHostPort(r.cfg.ListenIP, strconv.Itoa(p)))
		if err != nil {
			lastErr = err
			continue
		}
		ln, port = l, p
		break
	}
	if ln == nil {
		return nil, fmt.Errorf("no free port in %d-%d: %v", r.cfg.PortMin, r.cfg.PortMax, lastErr)
	}
	if err := r.ports.assign(key, port, r.cfg.Now(), attached); err != nil {
		r.log.Warn("port table not saved", "err", err)
	}
	mp := &mappedPort{port: port, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.splice(s, name, c)
		}
	}()
	return mp, nil
}

// splice relays one public TCP connection to the node's service.
func (r *Relay) splice(s *session, name string, c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	st, err := r.OpenStream(ctx, s.id, relay.ProtocolTCP)
	cancel()
	if err != nil {
		r.log.Warn("mapped port: no stream to the node", "did", s.id.DID(), "service", name, "err", err)
		return
	}
	defer st.Close()
	if _, err := st.Write([]byte(name + "\n")); err != nil {
		return
	}
	relay.Splice(c, st)
}
