package supernode

import (
	"fmt"
	"log/slog"
	"syscall"

	"github.com/pc2/pc2/services/dht"
)

// Open files: each attached node holds a TCP connection (a descriptor),
// and so does each visitor's connection to the gateway, each mapped
// port's listener and client, each TURN allocation. A supernode raises
// its open-file limit to what its configured maximum of attached nodes
// needs; where it cannot (no privilege to raise the hard limit), it takes
// fewer nodes, so that its relay refuses them with a reason instead of
// failing accept() for everyone when the descriptors run out.

// fdReserve are the descriptors kept for everything but the nodes'
// connections: visitors, mapped ports, TURN, the record store's files.
const fdReserve = 4096

// sizeForFDs raises the open-file limit for peers attached nodes with
// raise (raiseFDLimit) and returns how many the limit in force allows
// (peers, or fewer).
func sizeForFDs(peers int, raise func(need uint64) (uint64, error), log *slog.Logger) int {
	need := uint64(dht.Limits{Peers: peers}.Descriptors(dht.ModeServer) + fdReserve)
	got, err := raise(need)
	if got >= need {
		return peers
	}
	fit := dht.PeersFor(int(got) - fdReserve)
	if int(got) <= fdReserve {
		fit = dht.PeersFor(int(got) / 2)
	}
	log.Warn("the open-file limit allows fewer attached nodes than configured: raise it (LimitNOFILE in the service unit)",
		"open_files", got, "needed", need, "max_nodes", peers, "takes", fit, "err", err)
	return min(fit, peers)
}

// raiseFDLimit raises RLIMIT_NOFILE to need, the hard limit too where
// the process may (root, CAP_SYS_RESOURCE), else the soft limit up to the
// hard one; it returns the soft limit in force.
func raiseFDLimit(need uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("open-file limit: %w", err)
	}
	if l.Cur >= need {
		return l.Cur, nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(l.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return need, nil
	}
	up := syscall.Rlimit{Cur: l.Max, Max: l.Max}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up)
	if err != nil {
		return l.Cur, fmt.Errorf("open-file limit: %w", err)
	}
	return l.Max, fmt.Errorf("open-file limit: the hard limit is %d", l.Max)
}
