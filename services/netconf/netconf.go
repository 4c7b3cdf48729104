// Package netconf configures the appliance's network interfaces from the
// device settings and tells other services when the network changes.
//
// Apply makes the kernel match a Config (DHCP or static addresses, IPv6,
// gateways, extra routes, MTU, resolv.conf) and is idempotent: it only
// touches what differs, and removes only what netconf itself added earlier,
// never addresses or routes the kernel or another program set up. Watch
// reports link and address changes; the tunnel client reconnects on them.
// The device's loop (Apply again after link changes, with the leases of
// its DHCP clients) is the subpackage keep.
//
// Everything goes through one netlink handle and namespace, so tests run
// the same code inside a throwaway network namespace.
//
// How netconf recognises its own state:
//   - routes carry the routing protocol number RouteProtocol, so they are
//     found again from the kernel alone, also after a restart;
//   - addresses have no such marker in the kernel (IFA_PROTO exists since
//     Linux 5.18 but the netlink library does not expose it), so netconf
//     remembers the ones it manages, in memory and, when
//     Options.StatePath is set, in a small JSON file.
package netconf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RouteProtocol is the rtnetlink protocol number (rtm_protocol) on every
// route netconf adds. `ip route` shows it as "proto 77". It is unused by
// the protocols listed in iproute2's rt_protos.
const RouteProtocol netlink.RouteProtocol = 77

// DefaultResolvConfPath is where resolv.conf is written when
// Options.ResolvConfPath is empty. On gokrazy /etc is read-only and
// /etc/resolv.conf is a symlink to /tmp/resolv.conf, which gokrazy's init
// at boot points at /proc/net/pnp and netconf writes (static name servers,
// or a lease's).
const DefaultResolvConfPath = "/tmp/resolv.conf"

// Options configures a Manager. The zero value manages the namespace of the
// calling process and writes DefaultResolvConfPath.
type Options struct {
	// Namespace is the network namespace to configure and watch; nil means
	// the namespace of the calling process. The Manager does not close it.
	Namespace *netns.NsHandle

	// Handle, if set, is used for all netlink requests instead of a handle
	// New opens in Namespace. It must point at the same namespace (Watch
	// subscribes in Namespace). The Manager does not close it.
	Handle *netlink.Handle

	// ResolvConfPath is the file written when DNS servers are configured;
	// empty means DefaultResolvConfPath.
	ResolvConfPath string

	// StatePath, if set, is a file where netconf records the addresses it
	// manages, so that a restarted netconf still removes addresses an
	// older configuration added. On gokrazy put it on /perm. Empty keeps
	// that record in memory only.
	StatePath string

	// Logger receives progress and warnings; nil discards them.
	Logger *slog.Logger
}

// Manager applies Configs to one network namespace and watches it.
// Its methods are safe for concurrent use.
type Manager struct {
	h          *netlink.Handle
	ownHandle  bool
	ns         *netns.NsHandle
	resolvConf string
	statePath  string
	log        *slog.Logger

	mu    sync.Mutex // serialises Apply and guards state
	state state
}

// New returns a Manager for opts.
func New(opts Options) (*Manager, error) {
	m := &Manager{
		h:          opts.Handle,
		ns:         opts.Namespace,
		resolvConf: opts.ResolvConfPath,
		statePath:  opts.StatePath,
		log:        opts.Logger,
	}
	if m.resolvConf == "" {
		m.resolvConf = DefaultResolvConfPath
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	st, err := loadState(m.statePath)
	if err != nil {
		return nil, err
	}
	m.state = st
	if m.h == nil {
		var h *netlink.Handle
		if m.ns != nil {
			h, err = netlink.NewHandleAt(*m.ns)
		} else {
			h, err = netlink.NewHandle()
		}
		if err != nil {
			return nil, fmt.Errorf("netconf: open netlink handle: %w", err)
		}
		m.h, m.ownHandle = h, true
	}
	return m, nil
}

// Close releases the netlink handle New opened. Watchers keep running
// until their context ends.
func (m *Manager) Close() error {
	if m.ownHandle {
		m.h.Close()
	}
	return nil
}

// inNamespace runs f on an OS thread switched into the Manager's network
// namespace, for the few settings netlink does not reach (/proc/sys/net is
// resolved in the namespace of the thread that opens it).
func (m *Manager) inNamespace(f func() error) error {
	if m.ns == nil {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(*m.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it exits with this goroutine
			// instead of running other code in the wrong namespace.
			errc <- fmt.Errorf("return to original netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed meanwhile; the library then returns partial results.
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// FirstEthernet returns the name of the Ethernet-like link with the
// lowest index (the interface an unnamed one of a Config is), or "".
func (m *Manager) FirstEthernet() (string, error) { return m.firstEthernet() }

// LinkUp sets the link name up; false when there is no such link.
func (m *Manager) LinkUp(name string) (bool, error) {
	l, err := m.h.LinkByName(name)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return false, nil
		}
		return false, fmt.Errorf("netconf: %s: %w", name, err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		return true, nil
	}
	if err := m.h.LinkSetUp(l); err != nil {
		return true, fmt.Errorf("netconf: set link %s up: %w", name, err)
	}
	return true, nil
}

// LinkExists reports whether the namespace has a link called name.
func (m *Manager) LinkExists(name string) (bool, error) {
	if _, err := m.h.LinkByName(name); err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return false, nil
		}
		return false, fmt.Errorf("netconf: %s: %w", name, err)
	}
	return true, nil
}

// InNamespace runs f on an OS thread in the Manager's network namespace:
// sockets f opens belong to it.
func (m *Manager) InNamespace(f func() error) error { return m.inNamespace(f) }
