package relayserver

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// limitedStream is a stream to a node that waits on the node's token
// buckets (one per direction) for every byte relayed and releases its slot
// in the node's stream limit once, when closed or reset.
type limitedStream struct {
	network.Stream
	ctx     context.Context
	in, out *rate.Limiter // from and to the node
	release func()
	once    sync.Once
	// read and written count the bytes from and to the node (metrics;
	// nil: not counted).
	read, written prometheus.Counter
}

func newLimitedStream(ctx context.Context, st network.Stream, in, out *rate.Limiter, release func()) *limitedStream {
	return &limitedStream{Stream: st, ctx: context.WithoutCancel(ctx), in: in, out: out, release: release}
}

// newBandwidth is a token bucket of bytesPerSecond with a burst of up to
// 4 MiB.
func newBandwidth(bytesPerSecond int64) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(bytesPerSecond), int(min(bytesPerSecond, 4<<20)))
}

// waitN takes n tokens from l, in bursts the bucket allows.
func (s *limitedStream) waitN(l *rate.Limiter, n int) error {
	for n > 0 {
		k := min(n, l.Burst())
		if err := l.WaitN(s.ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (s *limitedStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if n > 0 && s.read != nil {
		s.read.Add(float64(n))
	}
	if n > 0 {
		if werr := s.waitN(s.in, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (s *limitedStream) Write(p []byte) (int, error) {
	if err := s.waitN(s.out, len(p)); err != nil {
		return 0, err
	}
	n, err := s.Stream.Write(p)
	if n > 0 && s.written != nil {
		s.written.Add(float64(n))
	}
	return n, err
}

func (s *limitedStream) Close() error {
	s.once.Do(s.release)
	return s.Stream.Close()
}

func (s *limitedStream) Reset() error {
	s.once.Do(s.release)
	return s.Stream.Reset()
}
