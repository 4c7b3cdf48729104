package relay

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"golang.org/x/time/rate"
)

// limitedStream is a stream to a node that waits on the node's token
// bucket for every byte relayed and releases its slot in the node's stream
// limit once, when closed or reset.
type limitedStream struct {
	network.Stream
	ctx     context.Context
	limit   *rate.Limiter
	release func()
	once    sync.Once
}

func newLimitedStream(ctx context.Context, st network.Stream, limit *rate.Limiter, release func()) *limitedStream {
	return &limitedStream{Stream: st, ctx: context.WithoutCancel(ctx), limit: limit, release: release}
}

// waitN takes n tokens, in bursts the bucket allows.
func (s *limitedStream) waitN(n int) error {
	for n > 0 {
		k := min(n, s.limit.Burst())
		if err := s.limit.WaitN(s.ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (s *limitedStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if n > 0 {
		if werr := s.waitN(n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (s *limitedStream) Write(p []byte) (int, error) {
	if err := s.waitN(len(p)); err != nil {
		return 0, err
	}
	return s.Stream.Write(p)
}

func (s *limitedStream) Close() error {
	s.once.Do(s.release)
	return s.Stream.Close()
}

func (s *limitedStream) Reset() error {
	s.once.Do(s.release)
	return s.Stream.Reset()
}
