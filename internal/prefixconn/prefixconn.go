// Package prefixconn is a net.Conn that yields some bytes before its own:
// the ones a reader took from it to decide where it goes (a ClientHello
// the gateway's SNI router peeked at, the bytes a node's bufio read past
// a PROXY header).
package prefixconn

import "net"

// Conn reads Prefix first, then Conn.
type Conn struct {
	net.Conn
	Prefix []byte
}

// New returns c reading prefix first.
func New(c net.Conn, prefix []byte) *Conn { return &Conn{Conn: c, Prefix: prefix} }

func (c *Conn) Read(p []byte) (int, error) {
	if len(c.Prefix) > 0 {
		n := copy(p, c.Prefix)
		c.Prefix = c.Prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
