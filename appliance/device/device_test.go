package device

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/hardware"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/services/announce"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/netconf"
	"github.com/pc2/pc2/services/relay/relayserver"
	"github.com/pc2/pc2/services/wifi"
)

// fakeNetwork records the network settings it was asked to apply, what
// the device announced by mDNS and what it wrote to the console.
type fakeNetwork struct {
	mu        sync.Mutex
	got       []*netconf.Config
	announced []announce.Config
	console   strings.Builder
}

func (f *fakeNetwork) announce(ctx context.Context, cfg announce.Config) error {
	f.mu.Lock()
	f.announced = append(f.announced, cfg)
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (f *fakeNetwork) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.console.Write(p)
}

func (f *fakeNetwork) Run(ctx context.Context, cfg *netconf.Config, _ func()) error {
	f.mu.Lock()
	f.got = append(f.got, cfg)
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (f *fakeNetwork) Status() NetworkStatus {
	return NetworkStatus{Changes: []string{"fake"}}
}

// device runs Run with settings s (from the perm copy: there is no boot
// disk in a test) and returns the base URL of its port and the perm dir.
func device(t *testing.T, s *settings.Settings, reboot func() error) (string, string, *fakeNetwork) {
	t.Helper()
	perm := t.TempDir()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	permFile := filepath.Join(perm, "pc2", "settings.json")
	os.MkdirAll(filepath.Dir(permFile), 0o700)
	if err := os.WriteFile(permFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The supernode profile's STUN/TURN, on loopback instead of 3478.
	turnUDP, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	turnTCP, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turnUDP.Close(); turnTCP.Close() })
	fn := &fakeNetwork{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Logger:         slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
			Paths:          settings.Paths{Disk: filepath.Join(perm, "no-such-disk"), PermFile: permFile},
			Listener:       ln,
			TURNPacketConn: turnUDP,
			TURNListener:   turnTCP,
			Board:          &hardware.Board{Kind: hardware.KindQEMU},
			Network:        fn,
			WiFiRadio: func() (wifi.Radio, error) {
				return nil, fmt.Errorf("test: %w", wifi.ErrNoNL80211)
			},
			PermDir:  perm,
			Reboot:   reboot,
			Announce: fn.announce,
			Console:  fn,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), perm, fn
}

func testSupernode(t *testing.T) string {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	sn, err := dht.New(context.Background(), dht.Config{Key: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relayserver.New(relayserver.Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 40000, PortMax: 60000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); sn.Close() })
	return sn.Multiaddrs()[0].String()
}

// TestPersonalDevice runs the personal profile from settings: the node
// waits in the setup wizard, comes online with the key the wizard made
// under the perm dir, the network settings reach
// the network, and the admin API works only with the admin password.
func TestPersonalDevice(t *testing.T) {
	hash, err := password.Hash("admin password 1")
	if err != nil {
		t.Fatal(err)
	}
	rebooted := make(chan struct{}, 1)
	netcfg := &settings.Network{Interfaces: []settings.Interface{{Mode: settings.ModeStatic, Addresses: []string{"192.0.2.10/24"}}}}
	base, perm, fn := device(t, &settings.Settings{Profile: settings.Personal, Supernodes: []string{testSupernode(t)},
		AdminPasswordHash: hash, Network: netcfg, WiFi: &settings.WiFi{SSID: "home", Passphrase: "secret passphrase"}},
		func() error { rebooted <- struct{}{}; return nil })

	setup := cloudtest.New(t, base, nil)
	setup.CreateIdentity()
	setup.Password("owner password")
	setup.Step("skip", nil) // no name
	testenv.WaitFor(t, 30*time.Second, "node online", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, err := os.Stat(filepath.Join(perm, "pc2", "node.key")); err != nil {
		t.Fatalf("node key not under the perm dir: %v", err)
	}
	fn.mu.Lock()
	if len(fn.got) != 1 || fn.got[0].Interfaces[0].Addresses[0] != "192.0.2.10/24" {
		t.Errorf("network got %+v", fn.got)
	}
	// The device announces its host name and the cloud's port, and the
	// console names that URL with the wizard's setup code.
	host, _ := os.Hostname()
	if len(fn.announced) != 1 || fn.announced[0].HostName != host || fn.announced[0].Port != 4200 {
		t.Errorf("announced %+v, want %s port 4200", fn.announced, host)
	}
	if want := "open http://" + host + ".local:4200 "; !strings.Contains(fn.console.String(), want) {
		t.Errorf("console %q lacks %q", fn.console.String(), want)
	}
	fn.mu.Unlock()

	do := func(method, path, pw string) *http.Response {
		req, _ := http.NewRequest(method, base+path, nil)
		if pw != "" {
			req.SetBasicAuth("admin", pw)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, pw := range []string{"", "admin password 2"} {
		if resp := do("GET", "/api/device", pw); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("password %q: %s", pw, resp.Status)
		}
		if resp := do("POST", "/api/device/reboot", pw); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("reboot with password %q: %s", pw, resp.Status)
		}
	}
	resp := do("GET", "/api/device", "admin password 1")
	var info struct {
		Settings settings.Settings `json:"settings"`
		Problem  string            `json:"settings_problem"`
		Light    string            `json:"status_light"`
		WiFi     *wifi.Status      `json:"wifi"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	if info.Settings.WiFi.Passphrase != "(set)" || info.Settings.AdminPasswordHash != "(set)" || info.Problem == "" ||
		info.WiFi == nil || info.WiFi.Phase != wifi.PhaseNoHardware {
		t.Fatalf("device info %+v", info)
	}
	testenv.WaitFor(t, 30*time.Second, "status light online", func() bool {
		r := do("GET", "/api/device", "admin password 1")
		var i struct {
			Light string `json:"status_light"`
		}
		json.NewDecoder(r.Body).Decode(&i)
		// Relayed, or direct when the relay's dial-back reached the node's
		// port 8090 on this host.
		return i.Light == hardware.StateOnlineRelayed.String() || i.Light == hardware.StateOnlineDirect.String()
	})
	// The log is kept on perm: the admin API and the owner's dashboard
	// give it whole; strangers get nothing.
	if resp := do("GET", "/api/device/logs", "admin password 2"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("logs with a wrong password: %s", resp.Status)
	}
	resp = do("GET", "/api/device/logs", "admin password 1")
	logs, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(logs), "device starting") || !strings.Contains(string(logs), "service=node") {
		t.Fatalf("logs: %s %.300s", resp.Status, logs)
	}
	if onDisk, err := os.ReadFile(filepath.Join(perm, "pc2", "logs", "device.log")); err != nil || !bytes.Equal(onDisk, logs) {
		t.Fatalf("the log on perm (%v) is not what the admin API gave", err)
	}
	if r := setup.Get("/_/logs.txt"); r.Code != http.StatusOK || !strings.Contains(r.Body, "device starting") {
		t.Fatalf("the owner's log download: %d %.200s", r.Code, r.Body)
	}
	if r := cloudtest.New(t, base, nil).Get("/_/logs.txt"); r.Code == http.StatusOK {
		t.Fatal("a stranger downloaded the log")
	}
	select {
	case <-rebooted:
		t.Fatal("rebooted before asked")
	default:
	}
	if resp := do("POST", "/api/device/reboot", "admin password 1"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("reboot: %s", resp.Status)
	}
	select {
	case <-rebooted:
	case <-time.After(5 * time.Second):
		t.Fatal("reboot not called")
	}
}

// TestNoAdminPassword: without an admin password in the settings the admin
// API is closed, whatever is sent.
func TestNoAdminPassword(t *testing.T) {
	base, _, _ := device(t, &settings.Settings{Profile: settings.Personal, Supernodes: []string{testSupernode(t)}}, nil)
	testenv.WaitFor(t, 30*time.Second, "status page", func() bool {
		resp, err := http.Get(base + "/api/status")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	req, _ := http.NewRequest("GET", base+"/api/device", nil)
	req.SetBasicAuth("admin", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("got %s, want 403", resp.Status)
	}
}

// TestNotConfigured: no settings anywhere is config.ErrNotConfigured (exit
// 125 under gokrazy), and broken settings are an error that names them.
func TestNotConfigured(t *testing.T) {
	dir := t.TempDir()
	err := Run(context.Background(), Options{Paths: settings.Paths{Disk: filepath.Join(dir, "none"), PermFile: filepath.Join(dir, "none.json")}})
	if !errors.Is(err, config.ErrNotConfigured) {
		t.Fatalf("got %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"profile":"personal"}`), 0o600)
	err = Run(context.Background(), Options{Paths: settings.Paths{Disk: filepath.Join(dir, "none"), PermFile: bad}})
	if err == nil || !strings.Contains(err.Error(), "needs a supernode, or a name service") {
		t.Fatalf("settings without supernodes: %v", err)
	}
}

// TestFactoryReset wipes perm (keeping lost+found) and reboots, once.
func TestFactoryReset(t *testing.T) {
	perm := t.TempDir()
	for _, p := range []string{"pc2/node.key", "pc2/settings.json", "machine-id", "lost+found/x"} {
		os.MkdirAll(filepath.Join(perm, filepath.Dir(p)), 0o700)
		os.WriteFile(filepath.Join(perm, p), []byte("x"), 0o600)
	}
	reboots := 0
	d := &Device{opts: Options{PermDir: perm, Reboot: func() error { reboots++; return nil }},
		log: slog.New(slog.DiscardHandler), light: hardware.NewLight(nil, hardware.LightConfig{})}
	d.factoryReset()
	d.factoryReset()
	entries, _ := os.ReadDir(perm)
	if len(entries) != 1 || entries[0].Name() != "lost+found" || reboots != 1 {
		t.Fatalf("after reset: %v entries, %d reboots", entries, reboots)
	}
}

// TestProcesses finds this test process with its memory in /proc.
func TestProcesses(t *testing.T) {
	ps := processes("/proc")
	for _, p := range ps {
		if p.PID == os.Getpid() {
			if p.RSSKiB <= 0 || p.Name == "" || p.Command == "" || p.AnonKiB <= 0 || p.FileKiB <= 0 ||
				p.AnonKiB+p.FileKiB > p.RSSKiB || p.PSSKiB <= 0 || p.PSSKiB > p.RSSKiB {
				t.Fatalf("self: %+v", p)
			}
			m := memory("/proc", "/sys")
			if m.TotalKiB <= 0 || m.AvailableKiB <= 0 || m.AvailableKiB > m.TotalKiB {
				t.Fatalf("memory: %+v", m)
			}
			return
		}
	}
	t.Fatalf("this process (%d) not among %d processes", os.Getpid(), len(ps))
}

// TestSupernodeDevice runs the supernode profile: its status port shows
// the addresses once the DHT listens, with the admin API beside it.
func TestSupernodeDevice(t *testing.T) {
	hash, err := password.Hash("admin password 1")
	if err != nil {
		t.Fatal(err)
	}
	base, perm, _ := device(t, &settings.Settings{Profile: settings.Supernode, Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		AdminPasswordHash: hash}, nil)
	var st struct {
		State string   `json:"state"`
		Addrs []string `json:"addrs"`
	}
	testenv.WaitFor(t, 30*time.Second, "supernode online", func() bool {
		resp, err := http.Get(base + "/api/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.State == "online"
	})
	if len(st.Addrs) == 0 || !strings.Contains(st.Addrs[0], "/p2p/") {
		t.Fatalf("status %+v", st)
	}
	if _, err := os.Stat(filepath.Join(perm, "pc2", "supernode", "records")); err != nil {
		t.Fatalf("record store not under perm: %v", err)
	}
	req, _ := http.NewRequest("GET", base+"/api/device", nil)
	req.SetBasicAuth("admin", "admin password 1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin API on a supernode: %s", resp.Status)
	}
}

// TestAdminPasswordGuessing: guessing the admin password is limited as
// owner logins are: after 5 wrong guesses from one address the next
// answer is 429, for the right password too (else guessing on would tell
// a right guess), where it used to be 401 for as many guesses as the
// guesser could send.
func TestAdminPasswordGuessing(t *testing.T) {
	hash, err := password.Hash("admin password 1")
	if err != nil {
		t.Fatal(err)
	}
	base, _, _ := device(t, &settings.Settings{Profile: settings.Personal, Supernodes: []string{testSupernode(t)}, AdminPasswordHash: hash}, nil)
	testenv.WaitFor(t, 30*time.Second, "status page", func() bool {
		resp, err := http.Get(base + "/api/status")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	try := func(pw string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/api/device", nil)
		req.SetBasicAuth("admin", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range password.AttemptsPerClientBurst {
		if code := try(fmt.Sprintf("guess %d", i)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: got %d, want 401", i, code)
		}
	}
	if code := try("guess 99"); code != http.StatusTooManyRequests {
		t.Fatalf("guess after the burst: got %d, want 429", code)
	}
	if code := try("admin password 1"); code != http.StatusTooManyRequests {
		t.Fatalf("right password while limited: got %d, want 429", code)
	}
}
