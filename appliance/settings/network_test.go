package settings

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/services/netconf"
	"github.com/pc2/pc2/services/wifi"
)

// fullFile sets every field the settings have.
const fullFile = `{
  "hostname": "box",
  "profile": "personal",
  "supernodes": ["/ip4/10.0.2.2/tcp/8090/p2p/x"],
  "domains": [{"domain": "ela.city", "operator": "did:boson:x"}],
  "public_url": "https://alice.ela.city",
  "name_services": [{"domain": "ela.city"}, {"domain": "pc2.test", "api": "http://10.0.2.2:8080"}],
  "quota": 1000000,
  "listen": ["/ip4/0.0.0.0/tcp/8090"],
  "network": {"interfaces": [
    {"name": "eth0", "mode": "static", "addresses": ["192.168.1.10/24", "2001:db8::10/64"],
     "gateway4": "192.168.1.1", "gateway6": "fe80::1",
     "routes": [{"to": "10.20.0.0/16", "via": "192.168.1.254", "metric": 100}, {"to": "fd00:1::/48"}],
     "dns": ["192.168.1.1", "2001:db8::53"], "search": ["home.example"], "mtu": 1500},
    {"name": "eth1", "mode": "dhcp", "mtu": 9000}
  ]},
  "wifi": {"ssid": "home", "passphrase": "secret passphrase"},
  "admin_password_hash": "$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$F1jG2CV3/Nr+yRuIsPKw0J9r4s7cJHBU",
  "gateway": {"https": true, "acme_ca": "https://ca.test/dir", "acme_ca_root": "PEM", "acme_email": "ops@ela.city",
    "name_policy": "invite", "invites": ["welcome-1234"], "allow": ["did:boson:y"]},
  "reset_button": "GPIO17",
  "update": {"url": "https://updates.test/", "channel": "beta", "interval": "1h0m0s", "window": "02:00-05:00", "health_timeout": "2m0s"}
}`

// TestFullFile reads a file with every field set: it encodes back to the
// same JSON, and its network and Wi-Fi parts convert to the configs
// netconf and wifi got when the settings held their types directly.
func TestFullFile(t *testing.T) {
	s, err := Parse([]byte(fullFile))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	var in, out any
	json.Unmarshal([]byte(fullFile), &in)
	b = bytes.TrimSpace(b)
	json.Unmarshal(b, &out)
	if !reflect.DeepEqual(in, out) {
		t.Errorf("encoded back:\n%s\nwant the fields of\n%s", b, fullFile)
	}

	wantNet := &netconf.Config{Interfaces: []netconf.Interface{
		{Name: "eth0", Mode: netconf.ModeStatic, Addresses: []string{"192.168.1.10/24", "2001:db8::10/64"},
			Gateway4: "192.168.1.1", Gateway6: "fe80::1",
			Routes: []netconf.Route{{To: "10.20.0.0/16", Via: "192.168.1.254", Metric: 100}, {To: "fd00:1::/48"}},
			DNS:    []string{"192.168.1.1", "2001:db8::53"}, Search: []string{"home.example"}, MTU: 1500},
		{Name: "eth1", Mode: netconf.ModeDHCP, MTU: 9000},
	}}
	if got := s.Network.Config(); !reflect.DeepEqual(got, wantNet) {
		t.Errorf("netconf config\n got %+v\nwant %+v", got, wantNet)
	}
	// What the settings held before they had their own types.
	var old struct {
		Network *netconf.Config `json:"network"`
		WiFi    *wifi.Config    `json:"wifi"`
	}
	if err := json.Unmarshal([]byte(fullFile), &old); err != nil {
		t.Fatal(err)
	}
	if got := s.Network.Config(); !reflect.DeepEqual(got, old.Network) {
		t.Errorf("netconf config\n got %+v\nwant %+v (the file read as netconf's)", got, old.Network)
	}
	wantWiFi := wifi.Config{SSID: "home", Passphrase: "secret passphrase"}
	if got := s.WiFi.Config(); got != wantWiFi || got != *old.WiFi {
		t.Errorf("wifi config %+v, want %+v", got, wantWiFi)
	}

	wantUpdate := Update{URL: "https://updates.test/", Channel: ChannelBeta, Interval: config.Duration(time.Hour),
		Window: "02:00-05:00", HealthTimeout: config.Duration(2 * time.Minute)}
	if *s.Update != wantUpdate {
		t.Errorf("update %+v, want %+v", *s.Update, wantUpdate)
	}
	if s.DHCPOn("eth0") {
		t.Error("DHCPOn(eth0) with a static eth0")
	}
}

// TestNoNetwork: without network settings netconf gets nil (DHCP on the
// first Ethernet interface), as before, and eth0 uses DHCP.
func TestNoNetwork(t *testing.T) {
	s := &Settings{Profile: Personal}
	if c := s.Network.Config(); c != nil {
		t.Errorf("no network settings: netconf config %+v, want nil", c)
	}
	if !s.DHCPOn("eth0") {
		t.Error("no network settings: eth0 without DHCP")
	}
	s.Network = &Network{Interfaces: []Interface{{Name: "eth1", Mode: ModeStatic, Addresses: []string{"10.0.0.2/24"}}}}
	if !s.DHCPOn("eth0") {
		t.Error("static eth1: eth0 without DHCP")
	}
	if s.DHCPOn("eth1") || !s.DHCPOn("usb0") {
		t.Error("static eth1: DHCP on eth1, or none on usb0")
	}
	s.Network.Interfaces[0].Name = ""
	if s.DHCPOn("eth0") {
		t.Error("static first Ethernet interface: eth0 with DHCP")
	}
	if !s.DHCPOn("usb0") {
		t.Error("static first Ethernet interface: usb0 without DHCP")
	}
}
