package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-msgio/pbio"
)

// ErrRefused means no peer the record was sent to kept it.
var ErrRefused = errors.New("dht: record refused by every peer")

// PutResult says where a record ended up.
type PutResult struct {
	Sent   int // closest peers the record was sent to
	Stored int // of those, how many now serve exactly this record
	// Superseded counts peers that serve a better record (higher seq).
	Superseded int
	// Seq is the seq of the record KeepPublished signed (0 for Put).
	Seq uint64
}

// kadProtocol is the DHT wire protocol under PC2's prefix.
const kadProtocol = protocol.ID(ProtocolPrefix + "/kad/1.0.0")

// maxMessage bounds a DHT reply we read (records are at most 8 KiB; a reply
// also lists up to 20 peers).
const maxMessage = 1 << 20

// sender speaks kad-dht's wire format (varint-delimited protobuf, one
// request and one reply per stream) so we can ask one peer directly.
type sender struct{ h host.Host }

func (s sender) SendRequest(ctx context.Context, p peer.ID, m *pb.Message) (*pb.Message, error) {
	st, err := s.h.NewStream(ctx, p, kadProtocol)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	} else {
		st.SetDeadline(time.Now().Add(time.Minute))
	}
	if err := pbio.NewDelimitedWriter(st).WriteMsg(m); err != nil {
		st.Reset()
		return nil, err
	}
	resp := new(pb.Message)
	if err := pbio.NewDelimitedReader(st, maxMessage).ReadMsg(resp); err != nil {
		st.Reset()
		return nil, err
	}
	return resp, nil
}

func (s sender) SendMessage(ctx context.Context, p peer.ID, m *pb.Message) error {
	st, err := s.h.NewStream(ctx, p, kadProtocol)
	if err != nil {
		return err
	}
	defer st.Close()
	return pbio.NewDelimitedWriter(st).WriteMsg(m)
}

// PutVerified puts value under key like Put, then asks every peer it was
// sent to what it now serves, so the caller learns whether the network
// accepted the record. It fails with ErrRefused when peers were reached and
// none kept the record.
func (n *Node) PutVerified(ctx context.Context, key string, value []byte) (PutResult, error) {
	var res PutResult
	if _, err := n.validator.Parse(key, value); err != nil {
		return res, fmt.Errorf("put %s: %w", key, err)
	}
	evCtx, cancelEv := context.WithCancel(ctx)
	evCtx, events := routing.RegisterForQueryEvents(evCtx)
	var sent []peer.ID
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			if ev.Type == routing.Value {
				sent = append(sent, ev.ID)
			}
		}
	}()
	err := n.dht.PutValue(evCtx, key, value)
	cancelEv()
	<-done
	if err != nil && !n.storedAlone(err) {
		return res, fmt.Errorf("put %s: %w", key, err)
	}
	res.Sent = len(sent)
	pm, err := pb.NewProtocolMessenger(sender{n.host})
	if err != nil {
		return res, err
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		lastErr error
	)
	for _, p := range sent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			rec, _, err := pm.GetValue(qctx, p, key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				lastErr = err
			case rec == nil:
			case bytes.Equal(rec.GetValue(), value):
				res.Stored++
			default:
				if i, err := n.validator.Namespaced().Select(key, [][]byte{value, rec.GetValue()}); err == nil && i == 1 {
					res.Superseded++
				}
			}
		}()
	}
	wg.Wait()
	if res.Sent > 0 && res.Stored == 0 {
		if res.Superseded > 0 {
			return res, fmt.Errorf("put %s: %w: %d peers hold a newer record", key, ErrRefused, res.Superseded)
		}
		if lastErr != nil {
			return res, fmt.Errorf("put %s: %w (%d peers; last error: %v)", key, ErrRefused, res.Sent, lastErr)
		}
		return res, fmt.Errorf("put %s: %w (%d peers)", key, ErrRefused, res.Sent)
	}
	return res, nil
}
