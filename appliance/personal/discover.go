package personal

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/internal/atomicfile"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backoff"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
	"github.com/pc2/pc2/services/tunnel"
)

// Discovery: a node's config needs one supernode (an entry point). The
// node learns the others from the signed domain records of its
// operators' domains (the gateways they list: dht.GatewaySet, pinned to
// the operator of the node's name or of the name services its config
// offers), measures the round trip to each (libp2p ping), and gives the
// tunnel the configured supernodes and the discovered ones in that order
// (tunnel.Client.SetSupernodes): it stays attached to MaxAttached of
// them and fails over to the next when one leaves. The list is saved
// (supernodesFile) so that a node whose entry point is gone at its next
// start still joins through the others.

// supernodesFile, in the cloud's data dir, keeps the supernodes the node
// discovered, in order of preference.
const supernodesFile = "supernodes.json"

// Discovery defaults.
const (
	// DefaultDiscoverEvery is how often the node looks its operators'
	// supernodes up again and re-measures them.
	DefaultDiscoverEvery = 10 * time.Minute
	// pingTimeout bounds one round-trip measurement (connect and ping).
	pingTimeout = 5 * time.Second
	// maxDiscovered bounds the supernodes a node keeps (a domain record
	// lists at most records.MaxGateways).
	maxDiscovered = 16
)

// savedSupernodes is supernodesFile's content.
type savedSupernodes struct {
	Supernodes []string `json:"supernodes"` // full multiaddrs, /p2p/ last
}

// loadSaved reads the saved supernodes (none when the file is missing or
// broken: discovery writes it again).
func loadSaved(path string) []peer.AddrInfo {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var s savedSupernodes
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	ais, err := dht.ParseAddrInfos(s.Supernodes)
	if err != nil {
		return nil
	}
	return ais
}

// saveSupernodes writes ais to path.
func saveSupernodes(path string, ais []peer.AddrInfo) error {
	var s savedSupernodes
	for _, ai := range ais {
		full, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			continue
		}
		for _, a := range full {
			s.Supernodes = append(s.Supernodes, a.String())
		}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// mergeInfos joins lists of supernodes, first occurrence first, the
// addresses of one peer merged.
func mergeInfos(lists ...[]peer.AddrInfo) []peer.AddrInfo {
	var out []peer.AddrInfo
	at := map[peer.ID]int{}
	for _, l := range lists {
		for _, ai := range l {
			i, ok := at[ai.ID]
			if !ok {
				at[ai.ID] = len(out)
				out = append(out, peer.AddrInfo{ID: ai.ID, Addrs: slices.Clone(ai.Addrs)})
				continue
			}
			for _, a := range ai.Addrs {
				if !slices.ContainsFunc(out[i].Addrs, a.Equal) {
					out[i].Addrs = append(out[i].Addrs, a)
				}
			}
		}
	}
	return out
}

// listedInfos turns the gateways domain records list into peers.
func listedInfos(listed map[string][]records.Peer) []peer.AddrInfo {
	domains := make([]string, 0, len(listed))
	for d := range listed {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	var out []peer.AddrInfo
	for _, d := range domains {
		for _, p := range listed[d] {
			pid, err := dht.IDToPeer(p.ID)
			if err != nil {
				continue
			}
			ai := peer.AddrInfo{ID: pid}
			for _, s := range p.Addrs {
				if a, err := ma.NewMultiaddr(s); err == nil {
					ai.Addrs = append(ai.Addrs, a)
				}
			}
			if len(ai.Addrs) > 0 {
				out = append(out, ai)
			}
		}
	}
	return out
}

// otherOperators are the supernodes of other operators of the mesh, as
// the name services' gateways list them (GET /api/supernodes): those
// whose domain's operator is not the one of the node's domain.
func (n *Node) otherOperators(ctx context.Context) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, ns := range n.cfg.NameServices {
		own := ns.Operator
		if d, o := n.cloud.NameOperator(); d == ns.Domain && o != "" {
			own = o
		}
		c := &namesapi.Client{API: ns.API, HTTP: n.opts.NamesClient}
		l, err := c.Supernodes(ctx, ns.Domain)
		if err != nil || own == "" {
			continue // the own operator unknown: nothing to tell the others from
		}
		for _, e := range l.Supernodes {
			if e.Operator == "" || e.Operator == own {
				continue
			}
			if ais, err := dht.ParseAddrInfos(e.Addrs); err == nil {
				out = mergeInfos(out, ais)
			}
		}
	}
	return out
}

// preferOther makes the first slots of order (the supernodes the node
// attaches to) hold both its own operator's fastest and the fastest of
// another operator (one of others), when both answered; order is
// otherwise kept.
func preferOther(order, others []peer.AddrInfo, slots int) []peer.AddrInfo {
	isOther := func(ai peer.AddrInfo) bool {
		return slices.ContainsFunc(others, func(o peer.AddrInfo) bool { return o.ID == ai.ID })
	}
	isOwn := func(ai peer.AddrInfo) bool { return !isOther(ai) }
	if len(others) == 0 || len(order) <= slots {
		return order
	}
	out := slices.Clone(order)
	// move puts the first entry that is want after position at.
	move := func(want func(peer.AddrInfo) bool, at int) {
		if slices.ContainsFunc(out[:slots], want) {
			return
		}
		if i := slices.IndexFunc(out, want); i >= 0 {
			o := out[i]
			out = slices.Insert(slices.Delete(out, i, i+1), at, o)
		}
	}
	move(isOwn, 0)
	move(isOther, slots-1)
	return out
}

// presentAt replaces the addresses of each listed supernode by those
// of its presence record (its own did record: appliance/supernode),
// which it keeps fresher than its operator's domain record; a supernode
// without one keeps the record's.
func presentAt(ctx context.Context, resolve func(context.Context, identity.ID) (*records.DID, error), listed []peer.AddrInfo) []peer.AddrInfo {
	out := slices.Clone(listed)
	var wg sync.WaitGroup
	for i, ai := range out {
		id, err := dht.PeerToID(ai.ID)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, pingTimeout)
			defer cancel()
			d, err := resolve(rctx, id)
			if err != nil {
				return
			}
			var addrs []ma.Multiaddr
			for _, s := range d.Direct {
				if a, err := ma.NewMultiaddr(s); err == nil {
					if t, _ := peer.SplitAddr(a); t != nil {
						addrs = append(addrs, t)
					}
				}
			}
			if len(addrs) > 0 {
				out[i].Addrs = addrs
			}
		}()
	}
	wg.Wait()
	return out
}

// measured is a supernode with its round trip (ok false: no answer).
type measured struct {
	ai  peer.AddrInfo
	rtt time.Duration
	ok  bool
}

// measure pings every peer of ais from h at once.
func measure(ctx context.Context, h host.Host, ais []peer.AddrInfo) []measured {
	out := make([]measured, len(ais))
	var wg sync.WaitGroup
	for i, ai := range ais {
		out[i].ai = ai
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, pingTimeout)
			defer cancel()
			if err := h.Connect(ctx, ai); err != nil {
				return
			}
			select {
			case r := <-ping.Ping(ctx, h, ai.ID):
				if r.Error == nil {
					out[i].rtt, out[i].ok = r.RTT, true
				}
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	return out
}

// rank orders the supernodes a node may attach to: those that answered,
// fastest first, then the configured ones that did not (an entry point
// down for now is still tried, as a spare); discovered ones that did not
// answer are left out.
func rank(ms []measured, configured []peer.AddrInfo) []peer.AddrInfo {
	isConfigured := func(id peer.ID) bool {
		return slices.ContainsFunc(configured, func(ai peer.AddrInfo) bool { return ai.ID == id })
	}
	ok := slices.DeleteFunc(slices.Clone(ms), func(m measured) bool { return !m.ok })
	slices.SortStableFunc(ok, func(a, b measured) int { return cmp.Compare(a.rtt, b.rtt) })
	var out []peer.AddrInfo
	for _, m := range ok {
		out = append(out, m.ai)
	}
	for _, m := range ms {
		if !m.ok && isConfigured(m.ai.ID) {
			out = append(out, m.ai)
		}
	}
	if len(out) > maxDiscovered {
		out = out[:maxDiscovered]
	}
	return out
}

// entryPoints returns known, or when the node knows no supernode at all
// (a config with name services only, on its first start), the ones the
// name services' gateways list (GET /api/supernodes), asking until one
// answers; an error only when ctx ends first. Discovery then checks
// them against the signed domain records.
func (n *Node) entryPoints(ctx context.Context, known []peer.AddrInfo) ([]peer.AddrInfo, error) {
	if len(known) > 0 {
		return known, nil
	}
	policy := backoff.Policy{Initial: time.Second, Max: time.Minute}
	for failures := 1; ; failures++ {
		all := known
		for _, ns := range n.cfg.NameServices {
			c := &namesapi.Client{API: ns.API, HTTP: n.opts.NamesClient}
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			l, err := c.Supernodes(fctx, ns.Domain)
			cancel()
			if err != nil {
				n.log.Debug("no supernodes from a name service", "domain", ns.Domain, "err", err)
				continue
			}
			for _, e := range l.Supernodes {
				// Other operators' supernodes only where the owner allows
				// (the gateway lists its mesh's after its domain's).
				if e.Domain != "" && e.Domain != ns.Domain && !n.cfg.OtherOperators {
					continue
				}
				if ais, err := dht.ParseAddrInfos(e.Addrs); err == nil {
					all = mergeInfos(all, ais)
				}
			}
		}
		if len(all) > 0 {
			return all, nil
		}
		n.update(func(s *Status) {
			s.State, s.Detail = "connecting", "no supernode known yet: asking the name services' gateways"
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(policy.Wait(failures)):
		}
	}
}

// discoverLoop keeps the tunnel's supernodes: every DiscoverEvery (the
// first time soon after start) it looks the operators' supernodes up,
// measures them and hands them to tc in order, and saves them.
func (n *Node) discoverLoop(ctx context.Context, node *dht.Node, gateways *dht.GatewaySet, tc *tunnel.Client, configured []peer.AddrInfo) {
	every := cmp.Or(n.opts.DiscoverEvery, DefaultDiscoverEvery)
	path := filepath.Join(n.cfg.CloudDir(), supernodesFile)
	wait := min(2*time.Second, every)
	var others []peer.AddrInfo // other operators' supernodes, as last learned
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		found, err := n.discoverOnce(ctx, node, gateways, tc, configured, &others, path)
		if err != nil && ctx.Err() == nil {
			n.log.Warn("supernode discovery", "err", err)
		}
		// Until a domain record is found (a node without a name yet: its
		// operator is not known before the wizard's claim), look often.
		wait = every
		if !found {
			wait = min(every, discoverRetry)
		}
	}
}

// discoverRetry is how soon discovery looks again when it found no
// domain record.
const discoverRetry = 30 * time.Second

// discoverOnce looks the supernodes up once; found says whether a
// domain record listed any. others holds the other operators'
// supernodes last learned: kept when the name service cannot be asked
// (above all when the node's own operator is gone, which is when they
// matter).
func (n *Node) discoverOnce(ctx context.Context, node *dht.Node, gateways *dht.GatewaySet, tc *tunnel.Client, configured []peer.AddrInfo, others *[]peer.AddrInfo, path string) (found bool, err error) {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	listed := listedInfos(gateways.Listed(lctx))
	if len(listed) == 0 {
		return false, nil // no name yet, or the records are not reachable: keep what the node has
	}
	listed = presentAt(lctx, node.ResolveDID, listed)
	h := node.Host()
	// A supernode no longer listed (retired by its operator) is left.
	candidates := mergeInfos(configured, listed)
	if n.cfg.OtherOperators {
		if got := n.otherOperators(lctx); len(got) > 0 {
			*others = got
		}
		candidates = mergeInfos(candidates, *others)
	}
	ms := measure(lctx, h, candidates)
	if ctx.Err() != nil {
		return true, nil // stopping: the measurements say nothing
	}
	if !slices.ContainsFunc(ms, func(m measured) bool { return m.ok }) {
		// The node's own network is down, or every supernode is: what
		// it knows stays (saving only the configured entry points would
		// lose the others for its next start).
		return true, errors.New("no supernode answered; keeping the known ones")
	}
	order := preferOther(rank(ms, configured), *others, max(n.cfg.MaxAttached, 2))
	before := tc.Supernodes()
	tc.SetSupernodes(order)
	if !slices.EqualFunc(before, order, func(a, b peer.AddrInfo) bool { return a.ID == b.ID }) {
		ids := make([]string, len(order))
		for i, ai := range order {
			ids[i] = ai.ID.String()
		}
		n.log.Info("supernodes discovered", "supernodes", ids)
	}
	if err := saveSupernodes(path, order); err != nil {
		return true, fmt.Errorf("save the discovered supernodes: %w", err)
	}
	return true, nil
}
