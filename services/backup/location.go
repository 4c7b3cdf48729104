package backup

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// Kinds of Location.
const (
	// KindS3 is any S3-compatible store: URL is
	// http(s)://host[:port]/bucket[/prefix].
	KindS3 = "s3"
	// KindREST is a restic REST server: URL is
	// http(s)://[user:password@]host[:port]/[path].
	KindREST = "rest"
	// KindNode is another PC2 node that offers its owner's friends
	// backup space: Node is its DID.
	KindNode = "node"
)

// Location is where a repository lives. It holds credentials: it is kept
// in files of mode 0600, and published only sealed (Seal).
type Location struct {
	Kind string `json:"kind"`
	URL  string `json:"url,omitempty"`
	// AccessKey and SecretKey are an S3 store's credentials.
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	// Region is an S3 store's region (empty: restic's default).
	Region string `json:"region,omitempty"`
	// Node is a friend node's DID (KindNode).
	Node string `json:"node,omitempty"`
}

// MaxLocationSize bounds an encoded Location (and so a sealed one).
const MaxLocationSize = 2048

// Check reports what is wrong with l, if anything.
func (l Location) Check() error {
	switch l.Kind {
	case KindS3, KindREST:
		u, err := url.Parse(l.URL)
		if err != nil {
			return fmt.Errorf("backup location: url: %w", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("backup location: url %q: want http:// or https://", redact(l.URL))
		}
		if u.Host == "" {
			return fmt.Errorf("backup location: url %q has no host", redact(l.URL))
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("backup location: url %q: no query or fragment, please", redact(l.URL))
		}
		if l.Kind == KindS3 {
			if strings.Trim(u.Path, "/") == "" {
				return fmt.Errorf("backup location: url %q names no bucket (http(s)://host/bucket)", redact(l.URL))
			}
			if u.User != nil {
				return errors.New("backup location: S3 credentials go in access_key and secret_key, not the url")
			}
			if l.AccessKey == "" || l.SecretKey == "" {
				return errors.New("backup location: an S3 store needs access_key and secret_key")
			}
		}
	case KindNode:
		if l.Node == "" {
			return errors.New("backup location: a friend node needs its DID")
		}
	case "":
		return errors.New("backup location: kind is required (s3, rest or node)")
	default:
		return fmt.Errorf("backup location: kind %q (want s3, rest or node)", l.Kind)
	}
	if b, _ := json.Marshal(l); len(b) > MaxLocationSize {
		return fmt.Errorf("backup location: %d bytes encoded, at most %d", len(b), MaxLocationSize)
	}
	return nil
}

// String is l without its secrets, for logs and the dashboard.
func (l Location) String() string {
	switch l.Kind {
	case KindNode:
		return "friend node " + l.Node
	case KindS3:
		return "S3 " + redact(l.URL)
	case KindREST:
		return "REST server " + redact(l.URL)
	}
	return l.Kind
}

// redact drops a URL's password.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// repository is restic's repository string of l and the environment it
// needs (never on the command line, where other processes see it).
// nodeURL is the local endpoint of a KindNode location.
func (l Location) repository(nodeURL string) (repo string, env []string, err error) {
	if err := l.Check(); err != nil {
		return "", nil, err
	}
	switch l.Kind {
	case KindS3:
		env = []string{"AWS_ACCESS_KEY_ID=" + l.AccessKey, "AWS_SECRET_ACCESS_KEY=" + l.SecretKey}
		if l.Region != "" {
			env = append(env, "AWS_DEFAULT_REGION="+l.Region)
		}
		return "s3:" + strings.TrimSuffix(l.URL, "/"), env, nil
	case KindREST:
		return "rest:" + l.URL, nil, nil
	default: // KindNode
		if nodeURL == "" {
			return "", nil, errors.New("backup: no way to reach friend nodes on this device")
		}
		return "rest:" + nodeURL, nil, nil
	}
}

// probeURL is what Restic.probe asks for: a REST repository's config
// file, an S3 store's bucket.
func (l Location) probeURL(repo string) string {
	raw, ok := strings.CutPrefix(repo, "rest:")
	if !ok {
		raw = strings.TrimPrefix(repo, "s3:")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u.User = nil
	if strings.HasPrefix(repo, "rest:") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/config"
		return u.String()
	}
	bucket, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	u.Path = "/" + bucket
	return u.String()
}

// sealInfo is the HKDF info of the key that seals a location.
const sealInfo = "pc2/backup-location/v1"

// sealKey derives the key that seals locations from the backup
// password: the words alone give it back.
func sealKey(password string) ([]byte, error) {
	if password == "" {
		return nil, errors.New("backup: no backup password")
	}
	return hkdf.Key(sha256.New, []byte(password), nil, sealInfo, chacha20poly1305.KeySize)
}

// Seal encrypts l with a key derived from the backup password
// (XChaCha20-Poly1305, HKDF-SHA256 with info "pc2/backup-location/v1"),
// so the identity's public backup record holds no secret.
func Seal(l Location, password string) ([]byte, error) {
	if err := l.Check(); err != nil {
		return nil, err
	}
	aead, err := sealAEAD(password)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, []byte(sealInfo)), nil
}

// Open decrypts a sealed location; ErrWrongPassword if password did not
// seal it (or it was changed).
func Open(sealed []byte, password string) (Location, error) {
	aead, err := sealAEAD(password)
	if err != nil {
		return Location{}, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() || len(sealed) > MaxLocationSize+aead.NonceSize()+aead.Overhead() {
		return Location{}, fmt.Errorf("backup: sealed location of %d bytes", len(sealed))
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(sealInfo))
	if err != nil {
		return Location{}, ErrWrongPassword
	}
	var l Location
	if err := json.Unmarshal(plain, &l); err != nil {
		return Location{}, fmt.Errorf("backup: sealed location: %w", err)
	}
	if err := l.Check(); err != nil {
		return Location{}, err
	}
	return l, nil
}

func sealAEAD(password string) (cipher.AEAD, error) {
	key, err := sealKey(password)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(key)
}
