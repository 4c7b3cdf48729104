package relayserver

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/pc2/pc2/services/relay"
)

// Nodes attached with relay.ProtocolAttach2 ("quiet" sessions): the relay
// pings them from one loop and answers their requests on streams of their
// own, so that no goroutine waits on each node's stream. One goroutine
// blocked on a stream costs about 8.5 KB of stack: at 10,000 nodes, the
// largest share of a supernode's memory that is its own code's
// (docs/benchmarks.md, "Relay: 10,000 attached nodes").

// pingWorkers write one round's pings side by side: a node whose
// connection is stuck holds one of them up to pingTimeout.
const pingWorkers = 64

// pingTimeout bounds one ping's write. A ping that waits longer (its
// connection busy or stuck) is skipped, not taken for the node's end:
// the node misses one, as it may miss two, and a dead connection ends
// at yamux's keep-alive. A round of 10,000 nodes then takes at most
// a few seconds even with hundreds of stuck ones.
const pingTimeout = time.Second

// pingLoop pings every quiet session each KeepAlive until Close. A ping
// that fails ends its session: the node reset the stream or its
// connection ended (a connection that died silently ends at yamux's
// keep-alive, and then so does the session); one that times out does
// not (pingTimeout).
func (r *Relay) pingLoop() {
	t := time.NewTicker(r.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-r.stopPings:
			return
		case <-t.C:
		}
		r.mu.Lock()
		quiet := make([]*session, 0, len(r.sessions))
		for _, s := range r.sessions {
			if s.quiet {
				quiet = append(quiet, s)
			}
		}
		r.mu.Unlock()
		r.pingAll(quiet)
	}
}

// pingAll pings sessions with pingWorkers goroutines.
func (r *Relay) pingAll(sessions []*session) {
	next := make(chan *session)
	var wg sync.WaitGroup
	for range min(pingWorkers, len(sessions)) {
		wg.Go(func() {
			for s := range next {
				err := s.ping(min(pingTimeout, r.cfg.KeepAlive))
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if err != nil {
					select {
					case <-s.done:
					default:
						r.log.Info("node detached", "did", s.id.DID(), "err", err)
					}
					r.dropSession(s)
				}
			}
		})
	}
	for _, s := range sessions {
		next <- s
	}
	close(next)
	wg.Wait()
}

// connClosed ends the quiet session whose stream went with connection c
// at once, rather than at its next ping (an attach/1 session's reader
// sees its stream end by itself).
func (r *Relay) connClosed(c network.Conn) {
	r.mu.Lock()
	s := r.sessions[c.RemotePeer()]
	r.mu.Unlock()
	if s == nil || !s.quiet || s.stream.Conn() != c {
		return
	}
	r.log.Info("node detached", "did", s.id.DID(), "err", "connection closed")
	r.dropSession(s)
}

// ping writes a ping on a quiet session's stream, within timeout.
func (s *session) ping(timeout time.Duration) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Wall clock: the stream compares its deadlines with time.Now.
	s.stream.SetWriteDeadline(time.Now().Add(timeout))
	return relay.WriteMessage(s.stream, &relay.Message{Type: relay.TypePing})
}

// controlTimeout bounds reading a control request and writing its answer
// (a dial-back's own time comes on top).
const controlTimeout = 10 * time.Second

// handleControl answers one request of a node attached here (any
// session: an attach/1 node may use it too): ping, turn, dialback.
func (r *Relay) handleControl(st network.Stream) {
	defer st.Close()
	r.mu.Lock()
	s := r.sessions[st.Conn().RemotePeer()]
	r.mu.Unlock()
	if s == nil {
		st.Reset() // only attached nodes ask
		return
	}
	// Wall clock: the stream compares its deadlines with time.Now.
	st.SetDeadline(time.Now().Add(controlTimeout))
	m, err := relay.ReadMessage(st)
	if err != nil {
		st.Reset()
		return
	}
	var answer *relay.Message
	if m.Type == relay.TypeDialBack {
		if !s.dialing.CompareAndSwap(false, true) {
			answer = &relay.Message{Type: relay.TypeDialBackResult, Error: "a dial-back is already running"}
		} else {
			answer = r.dialBack(context.Background(), s, m.Port)
			s.dialing.Store(false)
			st.SetDeadline(time.Now().Add(controlTimeout))
		}
	} else if answer = r.answer(s, m); answer == nil {
		answer = &relay.Message{Type: relay.TypeRefused, Error: "unexpected " + m.Type}
	}
	relay.WriteMessage(st, answer)
}
