package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/restic/rest-server/quota"
	"github.com/restic/rest-server/repo"
	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/internal/atomicfile"
	"github.com/pc2/pc2/provisioning/identity"
)

// Space is the backup space a node offers its owner's friends: one restic
// repository per friend, served with restic's REST protocol (the handler
// of restic's rest-server), each in its own folder under a quota the
// owner sets. Friends reach it over an authenticated node-to-node
// connection (services/peerconn), which says who they are (WithPeer); it
// stores only their ciphertext.
type Space struct {
	dir string
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	friends map[identity.ID]*Friend
	quotas  map[identity.ID]*quota.Manager
	uploads map[identity.ID]chan struct{} // one upload at a time per friend (ServeHTTP): a lock a waiter can leave
}

// Friend is a node the owner gives backup space.
type Friend struct {
	DID string `json:"did"`
	// Name is how the owner named it (a friendly URL, or a note).
	Name string `json:"name,omitempty"`
	// Quota bounds the friend's repository, in bytes.
	Quota int64     `json:"quota"`
	Added time.Time `json:"added"`
}

// FriendStatus is a friend and what its repository takes.
type FriendStatus struct {
	Friend
	Used int64 `json:"used"`
}

// MinFriendQuota is the smallest quota worth a repository.
const MinFriendQuota = 64 << 20

// OpenSpace opens (making it if needed) the space in dir.
func OpenSpace(dir string, log *slog.Logger, now func() time.Time) (*Space, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup space: %w", err)
	}
	s := &Space{dir: dir, log: log, now: now, friends: map[identity.ID]*Friend{}, quotas: map[identity.ID]*quota.Manager{}, uploads: map[identity.ID]chan struct{}{}}
	b, err := os.ReadFile(s.file())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("backup space: %w", err)
	}
	if err == nil {
		var list []*Friend
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, fmt.Errorf("backup space %s: %w", s.file(), err)
		}
		for _, f := range list {
			id, err := identity.ParseDID(f.DID)
			if err != nil {
				return nil, fmt.Errorf("backup space %s: %w", s.file(), err)
			}
			s.friends[id] = f
		}
	}
	return s, nil
}

func (s *Space) file() string { return filepath.Join(s.dir, "friends.json") }

// repoDir is friend id's repository.
func (s *Space) repoDir(id identity.ID) string { return filepath.Join(s.dir, id.String()) }

// save writes the friends; s.mu is held.
func (s *Space) save() error {
	list := make([]*Friend, 0, len(s.friends))
	for _, f := range s.friends {
		list = append(list, f)
	}
	slices.SortFunc(list, func(a, b *Friend) int { return strings.Compare(a.DID, b.DID) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.file(), b, 0o600); err != nil {
		return fmt.Errorf("backup space: %w", err)
	}
	return nil
}

// SetFriend gives did (a node's DID) quota bytes of space, or changes its
// quota; the repository stays.
func (s *Space) SetFriend(did, name string, quotaBytes int64) error {
	id, err := identity.ParseDID(strings.TrimSpace(did))
	if err != nil {
		return err
	}
	if quotaBytes < MinFriendQuota {
		return fmt.Errorf("backup space: a quota of at least %d MB, please", MinFriendQuota>>20)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.friends[id]
	// A quota must fit on the disk, beside what the friend holds now:
	// friends' backups must not fill the owner's disk.
	var used int64
	if old != nil {
		if q, err := s.quotaLocked(id); err == nil {
			used = q.SpaceUsed()
		}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(s.dir, &fs); err == nil {
		if free := int64(fs.Bavail) * fs.Bsize; quotaBytes-used > free {
			return fmt.Errorf("backup space: %d MB free on this disk, too little for %d MB more", free/1e6, (quotaBytes-used)/1e6)
		}
	}
	f := &Friend{DID: id.DID(), Added: s.now(), Name: strings.TrimSpace(name), Quota: quotaBytes}
	if old != nil {
		f.Added = old.Added
	}
	s.friends[id] = f
	if err := s.save(); err != nil {
		if old == nil {
			delete(s.friends, id)
		} else {
			s.friends[id] = old
		}
		return err
	}
	delete(s.quotas, id) // counted afresh with the new quota
	return nil
}

// RemoveFriend stops serving did; with deleteData its repository goes too.
func (s *Space) RemoveFriend(did string, deleteData bool) error {
	id, err := identity.ParseDID(did)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.friends[id]
	delete(s.friends, id)
	if err := s.save(); err != nil {
		if old != nil {
			s.friends[id] = old
		}
		return err
	}
	delete(s.quotas, id)
	if deleteData {
		return os.RemoveAll(s.repoDir(id))
	}
	return nil
}

// Friends lists the friends with the space each takes.
func (s *Space) Friends() []FriendStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []FriendStatus
	for id, f := range s.friends {
		fs := FriendStatus{Friend: *f}
		// The first look counts the repository's files; after that the
		// quota manager keeps the count.
		if q, err := s.quotaLocked(id); err == nil {
			fs.Used = q.SpaceUsed()
		}
		out = append(out, fs)
	}
	slices.SortFunc(out, func(a, b FriendStatus) int { return a.Added.Compare(b.Added) })
	return out
}

// Allowed reports whether id is a friend (peerconn.Listen's allow).
func (s *Space) Allowed(id identity.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.friends[id] != nil
}

// quotaOf is id's quota manager and repository, nil when id is no
// friend.
func (s *Space) quotaOf(id identity.ID) (*quota.Manager, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.friends[id] == nil {
		return nil, "", nil
	}
	q, err := s.quotaLocked(id)
	return q, s.repoDir(id), err
}

// quotaLocked is friend id's quota manager, made (counting what its
// repository holds) the first time; s.mu is held.
func (s *Space) quotaLocked(id identity.ID) (*quota.Manager, error) {
	if q := s.quotas[id]; q != nil {
		return q, nil
	}
	dir := s.repoDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	q, err := quota.New(dir, s.friends[id].Quota)
	if err != nil {
		return nil, err
	}
	s.quotas[id] = q
	return q, nil
}

// uploadLock is friend id's upload lock: held while a value is in it.
func (s *Space) uploadLock(id identity.ID) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.uploads[id]
	if !ok {
		l = make(chan struct{}, 1)
		s.uploads[id] = l
	}
	return l
}

type peerKey struct{}

// WithPeer marks ctx as a request of node id (proved by its connection).
func WithPeer(ctx context.Context, id identity.ID) context.Context {
	return context.WithValue(ctx, peerKey{}, id)
}

// repoPath is what the REST protocol asks for: the repository, its
// config, and its objects by type and hex ID.
var repoPath = regexp.MustCompile(`^/(config|(data|keys|locks|snapshots|index)/?([0-9a-f]{64})?)?$`)

// ServeHTTP serves the friend's own repository (the REST protocol at /);
// a request of anyone else is refused.
func (s *Space) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := r.Context().Value(peerKey{}).(identity.ID)
	if !ok {
		http.Error(w, "backup space: who are you?", http.StatusForbidden)
		return
	}
	q, dir, err := s.quotaOf(id)
	if err != nil {
		s.log.Error("backup space", "friend", id.DID(), "err", err)
		http.Error(w, "backup space unavailable", http.StatusInternalServerError)
		return
	}
	if q == nil {
		http.Error(w, "backup space: not a friend of this node", http.StatusForbidden)
		return
	}
	if !repoPath.MatchString(r.URL.Path) {
		http.Error(w, "backup space: no such object", http.StatusNotFound)
		return
	}
	h, err := repo.New(dir, repo.Options{QuotaManager: q})
	if err != nil {
		http.Error(w, "backup space unavailable", http.StatusInternalServerError)
		return
	}
	if r.Method == http.MethodPost {
		// rest-server checks an upload's declared size against the quota
		// before it writes, but two uploads at once can each fit alone
		// and not together: the one that runs out while it writes gets a
		// 500, which restic retries for 15 minutes instead of saying
		// "full" (a flaky TestSpace showed it). One upload at a time per
		// friend makes the check exact.
		// A request whose client gave up (restic aborts an upload that
		// makes no progress for minutes) leaves the wait.
		l := s.uploadLock(id)
		select {
		case l <- struct{}{}:
			defer func() { <-l }()
		case <-r.Context().Done():
			return
		}
	}
	h.ServeHTTP(w, r)
	// rest-server answers an upload over the quota (507) without reading
	// its body, and the connection is then closed under the client while
	// it still writes: restic may see a broken connection instead of the
	// answer, and retry for 15 minutes instead of saying "full". The
	// rest of the body is read here (at most what it declared, within
	// the largest object restic writes), so the answer arrives whole.
	if r.Method == http.MethodPost && r.ContentLength > 0 {
		io.Copy(io.Discard, io.LimitReader(r.Body, min(r.ContentLength, maxUpload)))
	}
}

// maxUpload bounds what ServeHTTP reads of a refused upload: restic's
// largest pack (its pack size is at most 128 MiB) with room to spare.
const maxUpload = 256 << 20
