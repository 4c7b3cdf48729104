package dht

import (
	"context"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"google.golang.org/protobuf/proto"

	"github.com/pc2/pc2/services/backoff"
)

type storedRecord struct {
	dsKey ds.Key
	key   string
	value []byte
}

// localRecords lists the value records in this node's store. kad-dht keeps
// them as serialized libp2p Record protobufs; anything else is skipped.
func (n *Node) localRecords(ctx context.Context) ([]storedRecord, error) {
	res, err := n.store.Query(ctx, dsq.Query{})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []storedRecord
	for e := range res.Next() {
		if e.Error != nil {
			return out, e.Error
		}
		var rec recpb.Record
		if proto.Unmarshal(e.Value, &rec) != nil || len(rec.GetKey()) == 0 {
			continue
		}
		out = append(out, storedRecord{dsKey: ds.RawKey(e.Key), key: string(rec.GetKey()), value: rec.GetValue()})
	}
	return out, nil
}

func (n *Node) republishLoop(ctx context.Context) {
	defer n.wg.Done()
	for backoff.Sleep(ctx, n.cfg.RepublishInterval) {
		n.mu.Lock()
		keys := make(map[string]*owned, len(n.owned))
		for k, o := range n.owned {
			keys[k] = o
		}
		n.mu.Unlock()
		for k, o := range keys {
			if o.sign == nil {
				if _, err := n.validator.Parse(k, o.value); err != nil {
					n.log.Warn("not republishing invalid record (re-sign it)", "key", k, "err", err)
					continue
				}
			}
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			if _, err := n.republish(pctx, k, o); err != nil {
				n.log.Warn("republish failed", "key", k, "err", err)
			}
			cancel()
		}
	}
}

// ClientRefreshInterval is how often a client refreshes its routing
// table (kad-dht's own period; its 2-minute refresh of a table with
// fewer than 10 peers is off for clients, see New).
const ClientRefreshInterval = 10 * time.Minute

// clientRefreshLoop refreshes a client's routing table: a lookup of its
// own key and of random keys in the buckets not refreshed lately, which
// finds the servers near it.
func (n *Node) clientRefreshLoop(ctx context.Context) {
	defer n.wg.Done()
	for backoff.Sleep(ctx, ClientRefreshInterval) {
		select {
		case err := <-n.dht.RefreshRoutingTable():
			if err != nil {
				n.log.Debug("routing table refresh", "err", err)
			}
		case <-ctx.Done():
			return
		}
	}
}

// replicateLoop re-puts every valid stored record so it reaches the nodes
// now closest to its key (after joins and departures), and drops records
// that have expired.
func (n *Node) replicateLoop(ctx context.Context) {
	defer n.wg.Done()
	for backoff.Sleep(ctx, n.cfg.ReplicateInterval) {
		n.Replicate(ctx)
	}
}

// Replicate runs one replication pass now and returns how many records it
// re-put and how many expired or invalid ones it dropped.
func (n *Node) Replicate(ctx context.Context) (put, dropped int) {
	recs, err := n.localRecords(ctx)
	if err != nil {
		n.log.Warn("replicate: list store", "err", err)
	}
	for _, r := range recs {
		if ctx.Err() != nil {
			return
		}
		if _, err := n.validator.Parse(r.key, r.value); err != nil {
			n.log.Info("dropping stored record", "key", r.key, "err", err)
			_ = n.store.Delete(ctx, r.dsKey)
			dropped++
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := n.Put(pctx, r.key, r.value); err != nil {
			n.log.Debug("replicate put", "key", r.key, "err", err)
		} else {
			put++
		}
		cancel()
	}
	return
}
