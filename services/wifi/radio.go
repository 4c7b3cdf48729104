package wifi

import (
	"context"
	"errors"
	"net"
)

// Radio is what Run needs from the kernel: nl80211 for Wi-Fi, rtnetlink
// for the link. The kernel's is the default (Options.Open); tests use a
// fake. Run calls a Radio from one goroutine only. Errors keep the
// kernel's errno, so that errors.Is(err, syscall.EALREADY) works.
type Radio interface {
	// Interfaces lists the wireless interfaces.
	Interfaces() ([]Interface, error)
	// SetUp sets the interface administratively up.
	SetUp(ifc Interface) error
	// Connect asks the driver to join ssid: with pmk, a WPA2-Personal
	// network whose 4-way handshake the driver does itself; with a nil
	// pmk, an open network. It returns once the kernel took the request
	// (EALREADY if an attempt is still running); Link shows the outcome.
	Connect(ifc Interface, ssid string, pmk []byte) error
	// Disconnect leaves the network or abandons a connection attempt
	// (ENOTCONN when there is neither).
	Disconnect(ifc Interface) error
	// Link reports the current association.
	Link(ifc Interface) (Link, error)
	// Scan looks for networks in range. ctx carries a deadline.
	Scan(ctx context.Context, ifc Interface) ([]Network, error)
	// Close releases the Radio's sockets.
	Close() error
}

// Interface is a wireless network interface.
type Interface struct {
	Index        int // 0 for wireless devices without a network interface
	Name         string
	HardwareAddr net.HardwareAddr
	PHY          int  // wiphy index
	Station      bool // in station (client) mode
}

// Link is an interface's association with an access point.
type Link struct {
	Connected    bool
	SSID         string // empty when the driver did not report it
	BSSID        net.HardwareAddr
	FrequencyMHz int
	SignalDBm    int // 0 when unknown
}

// Network is an access point seen in a scan.
type Network struct {
	SSID      string
	BSSID     net.HardwareAddr
	SignalDBm int
	Security  Security
}

// Security is what a network asks of the stations that join it, as far as
// Run can use it.
type Security string

const (
	// SecurityOpen: no RSN element, so open, WEP or WPA1.
	SecurityOpen Security = "open"
	// SecurityWPA2: WPA2-Personal (PSK) with CCMP; also WPA2/WPA3
	// transition mode.
	SecurityWPA2 Security = "wpa2-psk"
	// SecurityTKIP: PSK, but only with the TKIP cipher.
	SecurityTKIP Security = "wpa-tkip"
	// SecuritySAE: WPA3-Personal only.
	SecuritySAE Security = "wpa3-sae"
	// SecurityEnterprise: 802.1X only.
	SecurityEnterprise Security = "enterprise"
	// SecurityOther: anything else.
	SecurityOther Security = "other"
)

// Errors Run reports (wrapped, with details). Run retries after all of
// them except ErrNoNL80211.
var (
	// ErrNoNL80211: the kernel has no nl80211, so no Wi-Fi at all.
	ErrNoNL80211 = errors.New("wifi: the kernel has no nl80211 (no Wi-Fi support)")
	// ErrNotFound: the network was not seen in a scan.
	ErrNotFound = errors.New("wifi: network not found")
	// ErrRejected: the network is in range but joining it failed, most
	// likely because of a wrong passphrase.
	ErrRejected = errors.New("wifi: network did not accept the connection")
	// ErrUnsupported: the network's security mode, or the driver, does not
	// allow what this package can do.
	ErrUnsupported = errors.New("wifi: not supported")
)
