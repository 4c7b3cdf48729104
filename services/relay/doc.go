// Package relay is the wire format of the Active Proxy: the protocols a
// personal node (services/tunnel), a supernode's relay server
// (relay/relayserver) and a gateway (services/gateway) speak over libp2p,
// their control messages, the stream conn, and the client of
// ProtocolForward. The server is in relay/relayserver, the HTTP reverse
// proxy to a node in relay/nodeproxy.
//
// # Protocol flow
//
// A control message is a 2-byte big-endian length and that many bytes of
// JSON (Message, at most MaxMessage bytes; WriteMessage, ReadMessage).
//
// /pc2/attach/1 (ProtocolAttach) is the node's control stream, opened by
// the node over its own outbound connection to the supernode and kept open
// for the session:
//
//	relay -> node  challenge  Nonce (32 random bytes), Relay (the relay's DID)
//	node -> relay  attach     DID, Time, TCP (services to map), Sig (SignAttach)
//	relay -> node  attached   Ports (service -> public port), KeepAlive, Limits, TURN
//	           or  refused    Error; the relay closes the stream
//
// The libp2p handshake already proves the node holds its peer ID's key,
// which is its DID key; the signature binds the answer to this relay's
// DID and this stream's nonce (VerifyAttach), so a captured attach is
// worth nothing on another stream or at another relay.
//
// While attached, on the same stream:
//
//	node -> relay  ping              every KeepAlive; silence for 3 x KeepAlive ends the session
//	relay -> node  pong
//	node -> relay  turn              asks for fresh STUN/TURN credentials
//	relay -> node  turn              TURN, or Error when the supernode runs no TURN
//	node -> relay  dialback          Port: "can you reach me at my address on this port?"
//	relay -> node  dialback_result   Addr, OK, or Error (a Noise handshake that proves the node's key)
//	relay -> node  detached          Error (replaced by a newer attach, relay shutting down,
//	                                 an unexpected message); then the stream ends
//
// /pc2/attach/2 (ProtocolAttach2) is the same handshake, after which only
// the relay writes on the stream, so that it holds no goroutine per
// attached node (a goroutine blocked on a stream costs about 8.5 KB:
// docs/benchmarks.md, "Relay: 10,000 attached nodes"):
//
//	relay -> node  ping      every KeepAlive; the node gives the session up after 3 x KeepAlive without one
//	relay -> node  detached  Error; then the stream ends
//
// The relay ends the session when a ping fails (the node reset the
// stream, or its connection ended; a connection that died silently ends
// at the supernode's yamux keep-alive, within 15 s: services/dht); one
// that waits over a second to be written is skipped. The node's
// requests each come on a /pc2/control/1 (ProtocolControl) stream of
// their own, answered as on attach/1 (ping -> pong, the node's probe
// after a network change; turn; dialback -> dialback_result), only
// while the node is attached. A node asks for attach/2 first and falls
// back to attach/1 on older relays.
//
// The supernode reaches an attached node by opening streams back over the
// node's connection (never dialling it: it may be behind NAT):
//
//   - /pc2/http/1 (ProtocolHTTP) carries one HTTP/1.1 connection as is:
//     keep-alive, upgrades (WebSocket), streamed bodies.
//   - /pc2/tls/1 (ProtocolTLS) carries one visitor's TLS connection that
//     a gateway splices to a node holding its own certificate: a PROXY
//     protocol v2 header (the visitor's address, the server name, the
//     ACME flag; WriteTLSHeader), the node's one-byte answer (TLSAccept,
//     or why not), then the TLS bytes both ways. Only nodes that serve
//     TLS of their own offer it.
//   - /pc2/tcp/1 (ProtocolTCP) carries one raw TCP connection from a
//     mapped public port: the service's name and '\n', then the bytes.
//
// /pc2/forward/1 (ProtocolForward) lets a gateway reach a node attached to
// another supernode (Forward). Only the gateways the operator of a domain
// the relay serves lists in its domain record may forward (each within a
// share of the node's streams): the node counts logins by the client
// address the gateway writes.
//
//	gateway -> relay  forward    DID, Proto ("" for /pc2/http/1, or /pc2/tls/1)
//	relay -> gateway  forwarded  the stream is now a stream of that protocol to the node
//	              or  refused    Error (not a gateway, not attached there, at its limit); then closed
package relay
