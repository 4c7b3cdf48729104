package relay

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocols.
const (
	// ProtocolAttach is the control stream a node opens to attach, which
	// the relay reads for the session's life (the node's pings and
	// requests).
	ProtocolAttach protocol.ID = "/pc2/attach/1"
	// ProtocolAttach2 is ProtocolAttach in which, once attached, only the
	// relay writes (its pings, detached): the node's requests come on
	// ProtocolControl streams, and the relay holds no goroutine per node.
	ProtocolAttach2 protocol.ID = "/pc2/attach/2"
	// ProtocolControl carries one request of an attached node (turn,
	// dialback, ping) and the relay's answer.
	ProtocolControl protocol.ID = "/pc2/control/1"
	// ProtocolHTTP carries one HTTP/1.1 connection (keep-alive, upgrades)
	// from the supernode to the node.
	ProtocolHTTP protocol.ID = "/pc2/http/1"
	// ProtocolTCP carries one raw TCP connection from a mapped public port
	// to the node; it starts with the exposed service's name and '\n'.
	ProtocolTCP protocol.ID = "/pc2/tcp/1"
	// ProtocolForward lets another supernode's gateway reach a node
	// attached here (Forward).
	ProtocolForward protocol.ID = "/pc2/forward/1"
	// ProtocolConnect lets any peer (another node) reach a node attached
	// here with a ProtocolPeer stream (Connect).
	ProtocolConnect protocol.ID = "/pc2/connect/1"
	// ProtocolPeer carries one connection from another node to a node:
	// opened by the relay for a Connect, or by the other node itself when
	// the node is directly reachable. It is opaque to the relay: the two
	// nodes authenticate each other inside it (services/tunnel.SecurePeer).
	ProtocolPeer protocol.ID = "/pc2/peer/1"
	// ProtocolTLS carries one visitor's TLS connection spliced by a
	// gateway to a node that holds its own certificate (end-to-end
	// mode): a PROXY v2 header, the node's answer, the TLS bytes (see
	// WriteTLSHeader).
	ProtocolTLS protocol.ID = "/pc2/tls/1"
)

// Message types of the attach protocol.
const (
	TypeChallenge = "challenge" // relay -> node, first
	TypeAttach    = "attach"    // node -> relay, the signed answer
	TypeAttached  = "attached"  // relay -> node: accepted
	TypeRefused   = "refused"   // relay -> node: refused, then closed (also forward)
	TypePing      = "ping"      // node -> relay every KeepAlive (attach/2: relay -> node, and a control request)
	TypePong      = "pong"      // relay -> node, the answer
	TypeDetached  = "detached"  // relay -> node: session ended (replaced, shutdown)
	// TypeTURN asks for fresh TURN credentials (node -> relay) and carries
	// them (relay -> node: TURN, or Error when the relay has no TURN).
	TypeTURN = "turn"
	// Dial-back: a node asks whether it is reachable on its libp2p TCP
	// port at the address the relay sees it come from.
	TypeDialBack       = "dialback"        // node -> relay: Port
	TypeDialBackResult = "dialback_result" // relay -> node: Addr, OK, Error
)

// Message types of the forward and connect protocols.
const (
	TypeForward   = "forward"   // gateway -> relay: DID, Proto
	TypeForwarded = "forwarded" // relay -> gateway: the stream is the node's
	TypeConnect   = "connect"   // node -> relay: DID
	TypeConnected = "connected" // relay -> node: the stream is the other node's
)

// Errors of opening a stream to a node through a relay; the server
// returns them, and a gateway tells them apart (busy is a 503, not
// attached means another route).
var (
	ErrNotAttached = errors.New("relay: node not attached")
	ErrBusy        = errors.New("relay: node's stream limit reached")
)

// AsBusy marks err as ErrBusy when it is a stream refused for a resource
// limit, ours or the other end's (libp2p's resource manager: the node
// at its streams is busy, not offline); other errors are returned as
// they are.
func AsBusy(err error) error {
	var se *network.StreamError
	if err == nil || errors.Is(err, ErrBusy) {
		return err
	}
	if errors.Is(err, network.ErrResourceLimitExceeded) || (errors.As(err, &se) && se.ErrorCode == network.StreamResourceLimitExceeded) {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return err
}

// MaxMessage bounds a control message.
const MaxMessage = 4096

// attachTag is the signature domain of an attach.
const attachTag = "pc2 attach v1\x00"

// Message is one control message; fields by type.
type Message struct {
	Type string `json:"type"`
	// challenge
	Nonce []byte `json:"nonce,omitempty"`
	Relay string `json:"relay,omitempty"` // the relay's DID
	// attach
	DID  string   `json:"did,omitempty"`
	Time int64    `json:"time,omitempty"`
	TCP  []string `json:"tcp,omitempty"` // services the node exposes on mapped ports
	// forward: the stream asked for, ProtocolHTTP ("") or ProtocolTLS
	Proto string `json:"proto,omitempty"`
	Sig   []byte `json:"sig,omitempty"`
	// attached
	Ports     map[string]int `json:"ports,omitempty"` // service -> public port
	KeepAlive int64          `json:"keepalive_ms,omitempty"`
	Limits    *Limits        `json:"limits,omitempty"`
	// attached and turn: credentials for the supernode's STUN/TURN server
	TURN *TURNInfo `json:"turn,omitempty"`
	// dialback (Port) and its result (Addr, OK, Error)
	Port int    `json:"port,omitempty"`
	Addr string `json:"addr,omitempty"`
	OK   bool   `json:"ok,omitempty"`
	// refused, detached, dialback_result
	Error string `json:"error,omitempty"`
}

// Limits are what the relay allows one node.
type Limits struct {
	// Streams is the number of concurrent streams to the node.
	Streams int `json:"streams"`
	// BytesPerSecond bounds the node's relayed traffic (each direction).
	BytesPerSecond int64 `json:"bytes_per_second"`
	// Ports is the number of mapped TCP ports.
	Ports int `json:"ports"`
}

// DefaultLimits are the limits of a relay that sets none; a proxy to
// nodes sizes its idle pool from them.
var DefaultLimits = Limits{Streams: 256, BytesPerSecond: 1 << 30, Ports: 4}

// TURNInfo is a node's short-lived credentials for its supernode's
// STUN/TURN server (package turn's Credentials on the wire). They travel
// only over the node's authenticated attach stream.
type TURNInfo struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	Expires  int64    `json:"expires"` // Unix seconds
	URIs     []string `json:"uris"`    // "stun:host:port", "turn:host:port?transport=udp", ...
}

// attachPayload is what an attach signs: the relay's DID and nonce bind it
// to this relay and this stream, so a captured attach is useless anywhere
// else.
func attachPayload(relayDID string, nonce []byte, did string, t int64, tcp []string) []byte {
	b := []byte(attachTag)
	b = appendField(b, []byte(relayDID))
	b = appendField(b, nonce)
	b = appendField(b, []byte(did))
	b = binary.BigEndian.AppendUint64(b, uint64(t))
	b = appendField(b, []byte(strings.Join(tcp, "\x00")))
	return b
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// SignAttach returns the attach message answering challenge c.
func SignAttach(key ed25519.PrivateKey, c *Message, did string, now time.Time, tcp []string) *Message {
	t := now.Unix()
	return &Message{Type: TypeAttach, DID: did, Nonce: c.Nonce, Time: t, TCP: tcp,
		Sig: ed25519.Sign(key, attachPayload(c.Relay, c.Nonce, did, t, tcp))}
}

// VerifyAttach reports whether m's signature by key answers the challenge
// the relay relayDID sent with nonce (the nonce the relay issued, not the
// one m repeats).
func VerifyAttach(key ed25519.PublicKey, relayDID string, nonce []byte, m *Message) bool {
	return ed25519.Verify(key, attachPayload(relayDID, nonce, m.DID, m.Time, m.TCP), m.Sig)
}

// WriteMessage writes m as a length-prefixed JSON frame.
func WriteMessage(w io.Writer, m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("relay: %s message of %d bytes is too large", m.Type, len(b))
	}
	frame := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(b)), uint16(len(b)))
	_, err = w.Write(append(frame, b...))
	return err
}

// ReadMessage reads one frame; oversized or malformed frames are errors.
func ReadMessage(r io.Reader) (*Message, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > MaxMessage {
		return nil, fmt.Errorf("relay: control frame of %d bytes (max %d)", n, MaxMessage)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("relay: malformed control message: %w", err)
	}
	if m.Type == "" {
		return nil, errors.New("relay: control message without type")
	}
	return &m, nil
}
