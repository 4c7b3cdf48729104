package main

import (
	"testing"

	"github.com/pc2/pc2/internal/testing/deptest"
)

// PID 1 links only what it runs: gokrazy's init, the settings it reads
// before the services start (checked as the device checks them, which
// takes netconf's and wifi's config checks), and the update gate's
// deadline. None of the services themselves (the personal cloud, WebDAV,
// libp2p and the DHT, the relay, the gateway's ACME, TURN) belong in the
// process that must never crash.
func TestInitDeps(t *testing.T) {
	m := deptest.Module
	bad := []string{
		m + "/services/cloud/", m + "/services/cloud",
		m + "/services/dht/", m + "/services/dht",
		m + "/services/relay/", m + "/services/relay",
		m + "/services/tunnel", m + "/services/gateway/", m + "/services/gateway",
		m + "/services/turn", m + "/services/stun",
		m + "/appliance/personal", m + "/appliance/supernode",
		m + "/appliance/device", m + "/appliance/profile",
		m + "/appliance/update/updateapi", m + "/appliance/update/pull",
		"golang.org/x/net/webdav",
		"github.com/libp2p/",
		"github.com/caddyserver/",
		"github.com/pion/",
		// Addresses and DHCP are the device service's.
		m + "/services/dhcp", m + "/services/netconf/keep", "github.com/insomniacslk/",
	}
	for _, d := range deptest.Forbidden(t, "./cmd/pc2-init", bad) {
		t.Errorf("pc2-init links %s", d)
	}
}
