package cloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pc2/pc2/internal/atomicfile"
)

// owner is the wizard's result (state/owner.json).
type owner struct {
	SetupDone    bool      `json:"setup_done"`
	SetupAt      time.Time `json:"setup_at,omitzero"`
	PasswordHash string    `json:"password_hash,omitempty"` // argon2id PHC string
	PasswordAt   time.Time `json:"password_at,omitzero"`
	// Name is the claimed name (label.domain), NameAPI the names API
	// it was claimed at ("" for https://<domain>).
	Name    string `json:"name,omitempty"`
	NameAPI string `json:"name_api,omitempty"`
	// NameOperator is the DID of the operator whose grant gave Name: the
	// node trusts the gateways that operator's domain record lists, and
	// no other record of the domain.
	NameOperator string `json:"name_operator,omitempty"`
	// NameLost says why the node no longer holds the name it claimed
	// (revoked by the operator and why, granted to an earlier claim,
	// released elsewhere), for the dashboard, until another is claimed.
	NameLost string `json:"name_lost,omitempty"`
	// Domains are the owner's own domains (domains.go).
	Domains []string `json:"domains,omitempty"`
	// Registered are the own domains registered with the name's
	// operator (whose gateways take them by invite), by domain.
	Registered map[string]hostRegistration `json:"registered,omitempty"`
}

// hostRegistration is an own domain's registration: when, and until
// when the operator's gateways serve it (renewed at half).
type hostRegistration struct {
	At    time.Time `json:"at"`
	Until time.Time `json:"until"`
}

// session is a logged-in browser (state/sessions.json). The map key is
// the SHA-256 of the cookie's token, so the file does not hold tokens.
type session struct {
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Seen    time.Time `json:"seen"`
	IP      string    `json:"ip,omitempty"`
	Agent   string    `json:"agent,omitempty"`
}

// share is a share link (state/shares.json), keyed by its token.
type share struct {
	ID      string    `json:"id"` // short public handle for revoking
	Path    string    `json:"path"`
	Dir     bool      `json:"dir"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
}

// stateStore keeps the cloud's small state files in memory and writes
// each one atomically (internal/atomicfile) when it changes, so a power
// cut leaves the old or the new file.
type stateStore struct {
	dir string
	now func() time.Time

	mu       sync.Mutex
	owner    owner
	sessions map[string]*session
	shares   map[string]*share
}

func openState(dir string, now func() time.Time) (*stateStore, error) {
	st := &stateStore{dir: dir, now: now, sessions: map[string]*session{}, shares: map[string]*share{}}
	for name, v := range map[string]any{"owner.json": &st.owner, "sessions.json": &st.sessions, "shares.json": &st.shares} {
		if err := loadJSON(filepath.Join(dir, name), v); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func loadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cloud state: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("cloud state %s: %w", path, err)
	}
	return nil
}

// save writes one state file; called with mu held.
func (st *stateStore) save(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(st.dir, name), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("cloud state: save %s: %w", name, err)
	}
	return nil
}

func (st *stateStore) setupDone() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.owner.SetupDone
}

func (st *stateStore) getOwner() owner {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.owner.clone()
}

// clone is o with its own copies of its slices and maps (callers read
// theirs while updateOwner changes the store's).
func (o owner) clone() owner {
	o.Domains = slices.Clone(o.Domains)
	o.Registered = maps.Clone(o.Registered)
	return o
}

// updateOwner changes the owner record and saves it; on a failed save
// the change is undone.
func (st *stateStore) updateOwner(f func(*owner)) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	old := st.owner.clone()
	f(&st.owner)
	if err := st.save("owner.json", &st.owner); err != nil {
		st.owner = old
		return err
	}
	return nil
}

// adopt takes the owner record and share links of a restored state
// folder (a backup's), replacing the current ones; the sessions stay.
// Both files are read before anything changes.
func (st *stateStore) adopt(dir string) error {
	var o owner
	shares := map[string]*share{}
	if err := loadJSON(filepath.Join(dir, "owner.json"), &o); err != nil {
		return err
	}
	if err := loadJSON(filepath.Join(dir, "shares.json"), &shares); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.save("shares.json", shares); err != nil {
		return err
	}
	st.shares = shares
	if err := st.save("owner.json", &o); err != nil {
		return err
	}
	st.owner = o
	return nil
}
