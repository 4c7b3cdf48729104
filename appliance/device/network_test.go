package device

import (
	"reflect"
	"testing"

	"github.com/pc2/pc2/appliance/settings"
)

// TestDHCPAlso: eth0 and usb0 get DHCP unless the settings make them
// static (an unnamed static interface is eth0), wlan0 with Wi-Fi.
func TestDHCPAlso(t *testing.T) {
	static := func(name string) settings.Interface {
		return settings.Interface{Name: name, Mode: settings.ModeStatic, Addresses: []string{"10.0.0.2/24"}}
	}
	for _, c := range []struct {
		s    settings.Settings
		want []string
	}{
		{settings.Settings{}, []string{"eth0", "usb0"}},
		{settings.Settings{WiFi: &settings.WiFi{SSID: "home"}}, []string{"eth0", "usb0", "wlan0"}},
		{settings.Settings{Network: &settings.Network{Interfaces: []settings.Interface{static("eth1")}}}, []string{"eth0", "usb0"}},
		{settings.Settings{Network: &settings.Network{Interfaces: []settings.Interface{static("")}}}, []string{"usb0"}},
		{settings.Settings{Network: &settings.Network{Interfaces: []settings.Interface{static("usb0")}}}, []string{"eth0"}},
	} {
		if got := dhcpAlso(&c.s); !reflect.DeepEqual(got, c.want) {
			t.Errorf("dhcpAlso(%+v) = %q, want %q", c.s.Network, got, c.want)
		}
	}
}
