package personal

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backoff"
	"github.com/pc2/pc2/services/backup"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/cloud/files"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

// backupRecordTTL is the backup record's lifetime: re-signed while the
// node runs, it outlives a dead device by about a year.
const backupRecordTTL = 395 * 24 * time.Hour

// nodeBackups are the node's backups as the cloud sees them
// (cloud.Backups): the backup service, and the identity's backup record
// for finding them again.
type nodeBackups struct {
	*backup.Service
	n *Node
}

// newBackups makes the backup service of the cloud's data folder (and
// the config's includes), nil when backups are off.
func newBackups(n *Node) (*nodeBackups, error) {
	bc := n.cfg.Backup
	if bc.Off {
		return nil, nil
	}
	dir := n.cfg.CloudDir()
	folders := map[string]string{cloud.BackupFolder: dir}
	for name, p := range bc.Include {
		folders[name] = p
	}
	svc, err := backup.New(backup.Config{
		Restic:       bc.Restic,
		PasswordFile: identity.BackupPasswordFile(n.cfg.KeyFile),
		StateDir:     filepath.Join(dir, "backup"),
		Folders:      folders,
		// Not the backup service's own state and cache, a restore being
		// written, uploads in flight, or the browsers' sessions.
		// Not friends' backups either (they are theirs, and encrypted).
		Excludes: []string{filepath.Join(dir, "backup"), filepath.Join(dir, cloud.RestoreDir), filepath.Join(dir, spaceDir),
			filepath.Join(dir, "files", files.TempDir), filepath.Join(dir, "state", "sessions.json")},
		NodeURL:       n.friendURL,
		Host:          n.did,
		Default:       bc.Location,
		Interval:      bc.Interval.Or(0),
		Keep:          backup.Retention{Daily: bc.KeepDaily, Weekly: bc.KeepWeekly, Monthly: bc.KeepMonthly},
		CheckInterval: bc.CheckInterval.Or(0),
		GOGC:          bc.GOGC,
		GOMEMLIMIT:    bc.MemoryLimit,
		Connections:   bc.Connections,
		Logger:        n.log.With("service", "backup"),
		Now:           n.opts.Now,
	})
	if err != nil {
		return nil, err
	}
	if n.space, err = backup.OpenSpace(filepath.Join(dir, spaceDir), n.log.With("service", "backup-space"), n.opts.Now); err != nil {
		return nil, err
	}
	return &nodeBackups{Service: svc, n: n}, nil
}

// spaceDir holds the backup space friends use, in the cloud's folder.
const spaceDir = "backup-space"

// Friends are the nodes this node gives backup space.
func (b *nodeBackups) Friends() []backup.FriendStatus { return b.n.space.Friends() }

// SetFriend gives the node named who (a DID, or a name such as
// bob.ela.city) quota bytes of backup space.
func (b *nodeBackups) SetFriend(ctx context.Context, who string, quota int64) error {
	did, err := b.n.resolveNode(ctx, who)
	if err != nil {
		return err
	}
	name := ""
	if !strings.HasPrefix(strings.TrimSpace(who), "did:") {
		name = strings.ToLower(strings.TrimSpace(who))
	}
	return b.n.space.SetFriend(did, name, quota)
}

// RemoveFriend stops giving did backup space (deleting its backups too
// with deleteData).
func (b *nodeBackups) RemoveFriend(did string, deleteData bool) error {
	return b.n.space.RemoveFriend(did, deleteData)
}

// SetLocation sets the location and publishes it (sealed) in the
// identity's backup record.
func (b *nodeBackups) SetLocation(ctx context.Context, loc backup.Location) error {
	if loc.Kind == backup.KindNode && loc.Node != "" {
		did, err := b.n.resolveNode(ctx, loc.Node)
		if err != nil {
			return err
		}
		loc.Node = did
	}
	if err := b.Service.SetLocation(ctx, loc); err != nil {
		return err
	}
	select {
	case b.n.backupChanged <- struct{}{}:
	default:
	}
	return nil
}

// SetWords writes the backup password of words, which must give the
// node's key (a device provisioned with a key file, whose owner types
// the words on the dashboard).
func (b *nodeBackups) SetWords(words, passphrase string) error {
	key, err := identity.NodeKeyFromMnemonic(words, passphrase)
	if err != nil {
		return err
	}
	cur := b.n.currentKey()
	if cur == nil || !cur.Equal(key) {
		return errors.New("these words (and passphrase) are not this device's identity")
	}
	if err := identity.WriteBackupPassword(b.n.cfg.KeyFile, words, passphrase); err != nil {
		return err
	}
	b.Wake()
	select {
	case b.n.backupChanged <- struct{}{}:
	default:
	}
	return nil
}

// password is the backup password the words gave this device.
func (b *nodeBackups) password() (string, error) {
	raw, err := os.ReadFile(identity.BackupPasswordFile(b.n.cfg.KeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", backup.ErrNoPassword
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(raw)), nil
}

// Find reads the identity's backup record from the DHT and opens its
// sealed location with the backup password, waiting for the node to
// join the network (the wizard calls it right after the identity
// changed).
func (b *nodeBackups) Find(ctx context.Context) (backup.Location, error) {
	pw, err := b.password()
	if err != nil {
		return backup.Location{}, err
	}
	for {
		node, id, err := b.n.network()
		if err == nil {
			var rec *records.Backup
			if rec, err = node.ResolveBackup(ctx, id); err == nil {
				loc, err := backup.Open(rec.Sealed, pw)
				if err != nil {
					return backup.Location{}, fmt.Errorf("the backup record does not open with these words: %w", err)
				}
				return loc, nil
			}
			if errors.Is(err, dht.ErrNotFound) {
				return backup.Location{}, errors.New("this identity has published no backup location")
			}
		}
		select {
		case <-ctx.Done():
			return backup.Location{}, err
		case <-time.After(time.Second):
		}
	}
}

// keepBackupRecord publishes the sealed location in the identity's
// backup record, again whenever it changes, until ctx ends. A node
// without a location or the words' backup password publishes nothing.
func (n *Node) keepBackupRecord(ctx context.Context, node *dht.Node, key ed25519.PrivateKey) {
	b := n.backups
	if b == nil {
		return
	}
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return
	}
	sign := func(seq uint64, now time.Time) ([]byte, error) {
		loc, ok := b.Location()
		if !ok {
			return nil, backup.ErrNoLocation
		}
		pw, err := b.password()
		if err != nil {
			return nil, err
		}
		sealed, err := backup.Seal(loc, pw)
		if err != nil {
			return nil, err
		}
		return records.SignBackup(key, &records.Backup{Version: records.Version, ID: id, Seq: seq,
			IssuedAt: now.Unix(), Expires: now.Add(backupRecordTTL).Unix(), Sealed: sealed})
	}
	// Until the node has joined (it may just have got its identity),
	// a put fails: retry soon, then less often.
	retry, failures := time.After(0), 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.backupChanged:
			failures = 0
		case <-retry:
		}
		retry = nil
		if _, ok := b.Location(); !ok {
			continue
		}
		if _, err := b.password(); err != nil {
			continue
		}
		// Published once, the DHT node re-signs it every republish
		// interval; a new location publishes at once.
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := node.KeepPublished(pctx, records.BackupKey(id), sign)
		cancel()
		if err != nil {
			wait := backoff.Policy{Initial: 2 * time.Second, Max: time.Minute}.Wait(failures)
			failures++
			n.log.Warn("backup record not published; trying again", "in", wait.Round(time.Second), "err", err)
			retry = time.After(wait)
			continue
		}
		failures = 0
		n.update(func(s *Status) { s.BackupRecord = n.now() })
		n.log.Info("backup record published", "stored_on", res.Stored, "sent_to", res.Sent)
	}
}

// network is the node's DHT node and its identity, once it is online.
func (n *Node) network() (*dht.Node, identity.ID, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.key == nil {
		return nil, identity.ID{}, errors.New("the node has no identity yet")
	}
	// Online: its did record went out, so its DHT has peers to ask (a
	// lookup before that finds nothing, and says "not found").
	if n.dht == nil || n.status.State != "online" {
		return nil, identity.ID{}, errors.New("the node has not joined the network yet")
	}
	return n.dht, n.id, nil
}
