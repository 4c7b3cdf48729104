package tunnel

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	mss "github.com/multiformats/go-multistream"

	"github.com/pc2/pc2/services/relay"
)

// attachTimeout bounds connecting and the challenge/answer exchange.
const attachTimeout = 10 * time.Second

// attachOnce connects, attaches and pings until the attachment ends; it
// returns how long it was attached.
func (c *Client) attachOnce(ctx context.Context, ai peer.AddrInfo) (time.Duration, error) {
	st, err := c.openAttach(ctx, ai)
	if err != nil {
		return 0, err
	}
	defer st.Reset()
	// Wall clock: the stream compares its deadlines with time.Now.
	st.SetDeadline(time.Now().Add(attachTimeout))
	ch, err := readChallenge(st)
	if err != nil {
		return 0, err
	}
	// The relay may open streams as soon as it has accepted, before its
	// answer arrives here.
	c.setAccepting(ai.ID, true)
	defer c.setAccepting(ai.ID, false)
	ok, err := c.answer(st, ch)
	if err != nil {
		return 0, err
	}
	since := c.cfg.Now()
	c.setAttached(ai.ID, true, since, ok.Ports)
	c.log.Info("attached", "supernode", ai.ID, "protocol", st.Protocol(), "ports", ok.Ports, "turn", ok.TURN != nil)
	defer c.setAttached(ai.ID, false, since, nil)

	s := c.newSession(ai.ID, st, keepAliveOf(ok))
	s.quiet = st.Protocol() == relay.ProtocolAttach2
	s.turnDue = c.setTURN(ai.ID, ok.TURN)
	if ok.TURN != nil {
		go c.checkSTUN(ctx, ok.TURN.URIs)
	}
	probe := c.watchProbe(ai.ID)
	defer c.unwatchProbe(ai.ID)
	go s.read()
	if c.cfg.DirectPort > 0 {
		if err := s.askDialBack(c.cfg.DirectPort); err != nil {
			return 0, err
		}
	}
	// From here on the keep-alive decides when the stream is dead.
	st.SetDeadline(time.Time{})
	err = s.keepAlive(ctx, probe)
	return c.cfg.Now().Sub(since), err
}

// openAttach connects to the supernode and opens the attach stream.
func (c *Client) openAttach(ctx context.Context, ai peer.AddrInfo) (network.Stream, error) {
	h := c.cfg.Host
	ctx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	// A network change during the dial ends it: its attempts went out
	// on the old network (a QUIC dial waits out its timeout even when
	// the link is back), and the loop dials again at once.
	go func(changed <-chan struct{}) {
		select {
		case <-changed:
			cancel()
		case <-ctx.Done():
		}
	}(c.netChange())
	// The loop's own backoff (jittered, capped at MaxBackoff) spaces the
	// attempts: libp2p's dial backoff on top (5 s after a failed dial,
	// growing with each to 5 min) would keep a node away from a
	// supernode that is back, and after a supernode's restart it held
	// its nodes back in lockstep (docs/benchmarks.md, the attach storm).
	if sw, ok := h.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(ai.ID)
	}
	if err := h.Connect(ctx, ai); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	st, err := h.NewStream(ctx, ai.ID, c.cfg.attachProtocols...)
	if err != nil {
		return nil, fmt.Errorf("open attach stream: %w", err)
	}
	return st, nil
}

// readChallenge reads the relay's first message: a challenge, or why it
// refuses the node.
func readChallenge(st network.Stream) (*relay.Message, error) {
	ch, err := relay.ReadMessage(st)
	if err != nil {
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	if ch.Type == relay.TypeRefused {
		return nil, fmt.Errorf("refused: %s", ch.Error)
	}
	if ch.Type != relay.TypeChallenge || len(ch.Nonce) < 16 {
		return nil, fmt.Errorf("expected a challenge, got %q", ch.Type)
	}
	return ch, nil
}

// answer signs the challenge with the node key, naming the TCP services
// the node exposes, and reads the relay's verdict.
func (c *Client) answer(st network.Stream, ch *relay.Message) (*relay.Message, error) {
	names := make([]string, 0, len(c.cfg.TCP))
	for n := range c.cfg.TCP {
		names = append(names, n)
	}
	sort.Strings(names)
	if err := relay.WriteMessage(st, relay.SignAttach(c.cfg.Key, ch, c.did, c.cfg.Now(), names)); err != nil {
		return nil, fmt.Errorf("send attach: %w", err)
	}
	ok, err := relay.ReadMessage(st)
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if ok.Type != relay.TypeAttached {
		return nil, fmt.Errorf("refused: %s", ok.Error)
	}
	return ok, nil
}

// keepAliveOf is the ping interval the relay asks for, within sane bounds.
func keepAliveOf(ok *relay.Message) time.Duration {
	keep := time.Duration(ok.KeepAlive) * time.Millisecond
	if keep <= 0 || keep > time.Minute {
		keep = 5 * time.Second
	}
	return keep
}

// session is one attachment after the handshake: a reader that hands the
// relay's messages to the keep-alive loop, which owns every decision.
type session struct {
	c    *Client
	peer peer.ID
	st   network.Stream
	keep time.Duration
	// quiet: attached with relay.ProtocolAttach2: the relay pings, and
	// requests go on relay.ProtocolControl streams (ask).
	quiet bool

	wmu sync.Mutex // serializes write

	// Filled by read.
	errc  chan error
	pongs chan struct{}
	turns chan *relay.TURNInfo

	// Owned by keepAlive.
	lastPong time.Time
	probing  <-chan time.Time // a network change's ping is unanswered
	turnDue  time.Time        // when to ask for fresh TURN credentials (zero: never)
}

func (c *Client) newSession(p peer.ID, st network.Stream, keep time.Duration) *session {
	return &session{c: c, peer: p, st: st, keep: keep,
		errc: make(chan error, 1), pongs: make(chan struct{}, 1), turns: make(chan *relay.TURNInfo, 1)}
}

// read runs in its own goroutine so that ctx (shutdown) ends the
// attachment at once rather than after a blocked read.
func (s *session) read() {
	for {
		m, err := relay.ReadMessage(s.st)
		if err != nil {
			s.errc <- err
			return
		}
		if m.Type == relay.TypeDetached {
			s.errc <- fmt.Errorf("detached: %s", m.Error)
			return
		}
		s.handle(m)
	}
}

// handle takes a message of the relay's: on the attach stream, or the
// answer to a request (ask).
func (s *session) handle(m *relay.Message) {
	switch m.Type {
	case relay.TypePong, relay.TypePing: // attach/2: the relay's pings show it is there
		select {
		case s.pongs <- struct{}{}:
		default:
		}
	case relay.TypeDialBackResult:
		s.c.dialBackResult(s.peer, m)
	case relay.TypeTURN:
		if m.TURN == nil {
			s.c.log.Warn("supernode gave no TURN credentials", "supernode", s.peer, "err", m.Error)
			return
		}
		select {
		case s.turns <- m.TURN:
		default:
		}
	}
}

// ask sends a request to the relay (ping, turn, dialback), whose answer
// goes to handle: on the attach stream (attach/1), or on a control
// stream of its own, in the background (attach/2).
func (s *session) ask(m *relay.Message) error {
	if !s.quiet {
		return s.write(m)
	}
	go func() {
		answer, err := s.control(m)
		if err != nil {
			// The keep-alive (or, for a probe, its timer) decides what a
			// silent relay means.
			s.c.log.Debug("control request failed", "supernode", s.peer, "type", m.Type, "err", err)
			return
		}
		s.handle(answer)
	}()
	return nil
}

// control sends m on a new control stream over the attach stream's own
// connection (a probe's answer over another one would prove nothing of
// it) and reads the answer.
func (s *session) control(m *relay.Message) (*relay.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
	defer cancel()
	st, err := s.st.Conn().NewStream(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	// Wall clock: the stream compares its deadlines with time.Now; a
	// dial-back takes up to 5 s at the relay.
	st.SetDeadline(time.Now().Add(2 * attachTimeout))
	if err := st.SetProtocol(relay.ProtocolControl); err != nil {
		st.Reset()
		return nil, err
	}
	if err := mss.SelectProtoOrFail(relay.ProtocolControl, st); err != nil {
		st.Reset()
		return nil, err
	}
	if err := relay.WriteMessage(st, m); err != nil {
		st.Reset()
		return nil, err
	}
	answer, err := relay.ReadMessage(st)
	if err != nil {
		st.Reset()
		return nil, err
	}
	if answer.Type == relay.TypeRefused {
		return nil, fmt.Errorf("refused: %s", answer.Error)
	}
	return answer, nil
}

// write sends m; the keep-alive loop and the dial-back request share the
// stream.
func (s *session) write(m *relay.Message) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Wall clock: the stream compares its deadlines with time.Now.
	s.st.SetWriteDeadline(time.Now().Add(s.keep))
	return relay.WriteMessage(s.st, m)
}

// keepAlive pings every keep (the relay answers each) until the
// attachment ends: ctx ends, the stream fails, the relay detaches, or
// pongs stop coming.
func (s *session) keepAlive(ctx context.Context, probe <-chan struct{}) error {
	t := time.NewTicker(s.keep)
	defer t.Stop()
	s.lastPong = s.c.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.errc:
			return err
		case <-s.pongs:
			s.lastPong, s.probing = s.c.cfg.Now(), nil
		case <-probe:
			if err := s.probe(); err != nil {
				return err
			}
		case <-s.probing:
			if s.c.linkDown(s.peer) {
				s.c.log.Info("no answer after a network change, but the link is down: waiting for it", "supernode", s.peer)
				s.probing = nil
				continue
			}
			dropConns(s.c.cfg.Host, s.peer)
			return fmt.Errorf("no answer within %v after a network change", probeTimeout)
		case ti := <-s.turns:
			s.turnDue = s.c.setTURN(s.peer, ti)
		case <-t.C:
			if err := s.ping(); err != nil {
				return err
			}
			if err := s.refreshTURN(); err != nil {
				return err
			}
		}
	}
}

// ping checks that the last pong (attach/2: the relay's last ping) is
// recent and sends the next ping (attach/1).
func (s *session) ping() error {
	if s.c.cfg.Now().Sub(s.lastPong) > 3*s.keep {
		dropConns(s.c.cfg.Host, s.peer)
		return errors.New("keep-alive: no answer")
	}
	if s.quiet {
		return nil
	}
	if err := s.write(&relay.Message{Type: relay.TypePing}); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

func (c *Client) setAttached(p peer.ID, on bool, since time.Time, ports map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.links[p]
	if l.attached == on {
		return
	}
	l.attached, l.since, l.ports = on, since, ports
	if on {
		l.lastErr = ""
	}
	c.notify()
}
