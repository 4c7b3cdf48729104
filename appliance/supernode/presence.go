package supernode

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

// A supernode's presence record is its own did record (signed by its
// key, as every node's): its current addresses, and the domains it
// serves as services named PresenceService. It is short-lived
// (PresenceTTL) and re-signed every republish interval while the
// supernode runs, so one that is gone drops out within hours, and a
// node that discovers a supernode from its operator's domain record
// reaches it at the addresses it publishes itself, which may be newer
// than the record's.

// PresenceTTL is a presence record's lifetime.
const PresenceTTL = 6 * time.Hour

// PresenceService names, in a presence record, a domain the supernode
// serves.
const PresenceService = "pc2-supernode"

// keepPresence publishes this supernode's presence record once it can
// (retrying every 30 s: the other supernodes may not be up yet), then
// leaves it to the DHT node's republishing.
func keepPresence(ctx context.Context, node *dht.Node, key ed25519.PrivateKey, domains []string, log *slog.Logger) {
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return
	}
	sign := func(seq uint64, now time.Time) ([]byte, error) {
		d := &records.DID{Version: records.Version, ID: id, Seq: seq, IssuedAt: now.Unix(), Expires: now.Add(PresenceTTL).Unix()}
		for _, a := range node.Multiaddrs() {
			if len(d.Direct) < 16 { // the validator's bound
				d.Direct = append(d.Direct, a.String())
			}
		}
		for _, dom := range domains {
			if len(d.Services) < 16 {
				d.Services = append(d.Services, records.Service{Name: PresenceService, Endpoint: dom})
			}
		}
		return records.SignDID(key, d)
	}
	for wait := 2 * time.Second; ; wait = 30 * time.Second {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := node.KeepPublished(pctx, records.DIDKey(id), sign)
		cancel()
		if err == nil {
			log.Info("presence record published", "did", id.DID())
			return
		}
		log.Debug("presence record not published yet; retrying", "err", err)
	}
}
