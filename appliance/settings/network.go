package settings

import (
	"github.com/pc2/pc2/services/netconf"
	"github.com/pc2/pc2/services/wifi"
)

// Network is the wired network part of the settings: the interfaces the
// device configures. Interfaces not listed are left alone; no Network at
// all means DHCP on the first Ethernet interface.
//
// The rules for what is valid are netconf's (Check converts and asks it),
// so that the init and the device refuse the same files as netconf would:
// both must agree on whether the boot partition's file or the perm copy is
// used, or the init could set another host name than the device sends.
type Network struct {
	Interfaces []Interface `json:"interfaces,omitempty"`
}

// Interface modes.
const (
	// ModeDHCP (the default): the device's DHCP client (package netconf/keep).
	ModeDHCP = "dhcp"
	// ModeStatic sets the listed addresses, gateways and routes.
	ModeStatic = "static"
)

// Interface configures one network interface.
type Interface struct {
	// Name is the kernel's name, e.g. "eth0"; empty: the first Ethernet
	// interface (at most one interface may leave it empty).
	Name string `json:"name,omitempty"`
	// Mode is ModeDHCP (when empty) or ModeStatic.
	Mode string `json:"mode,omitempty"`
	// Addresses are IPv4 or IPv6 addresses with their prefix length
	// ("192.168.1.10/24", "2001:db8::10/64"); static mode only.
	Addresses []string `json:"addresses,omitempty"`
	// Gateway4 and Gateway6 are the default gateways; static mode only.
	Gateway4 string `json:"gateway4,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	// Routes are extra routes through the interface; static mode only.
	Routes []Route `json:"routes,omitempty"`
	// DNS are name servers and Search the search domains.
	DNS    []string `json:"dns,omitempty"`
	Search []string `json:"search,omitempty"`
	// MTU of the link (0: the kernel's).
	MTU int `json:"mtu,omitempty"`
}

// Route is an extra static route: to a network, via a next hop (empty:
// on-link), with a metric (0: the kernel's default).
type Route struct {
	To     string `json:"to"`
	Via    string `json:"via,omitempty"`
	Metric int    `json:"metric,omitempty"`
}

// Config is n as netconf's config; nil for a nil n, which netconf takes as
// DHCP on the first Ethernet interface.
func (n *Network) Config() *netconf.Config {
	if n == nil {
		return nil
	}
	c := &netconf.Config{}
	for _, in := range n.Interfaces {
		ni := netconf.Interface{Name: in.Name, Mode: netconf.Mode(in.Mode), Addresses: in.Addresses,
			Gateway4: in.Gateway4, Gateway6: in.Gateway6, DNS: in.DNS, Search: in.Search, MTU: in.MTU}
		for _, r := range in.Routes {
			ni.Routes = append(ni.Routes, netconf.Route{To: r.To, Via: r.Via, Metric: r.Metric})
		}
		c.Interfaces = append(c.Interfaces, ni)
	}
	return c
}

// Check reports the first problem netconf sees in n.
func (n *Network) Check() error {
	if n == nil {
		return nil
	}
	return n.Config().Validate()
}

// WiFi are the wireless network settings: the SSID and the WPA2 passphrase
// (or 64 hex digits of the PSK; empty for an open network).
type WiFi struct {
	SSID       string `json:"ssid"`
	Passphrase string `json:"passphrase,omitempty"`
}

// Config is w as the wifi service's config.
func (w WiFi) Config() wifi.Config { return wifi.Config{SSID: w.SSID, Passphrase: w.Passphrase} }

// OtherWiFi are s's further Wi-Fi networks as the wifi service's configs.
func (s *Settings) OtherWiFi() []wifi.Config {
	var out []wifi.Config
	for _, w := range s.WiFiNetworks {
		out = append(out, w.Config())
	}
	return out
}
