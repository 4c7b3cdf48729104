package qemutests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/appliance/device"
	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/echotest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/relayfront"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
	"github.com/pc2/pc2/services/relay/relayserver"
	"github.com/pc2/pc2/services/tunnel"
	"github.com/pc2/pc2/services/turn"
)

// The "abandon ... art" vector of docs/identity.md.
const (
	vectorWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon " +
		"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"
	vectorDID = "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"
)

// hostSupernode runs a supernode on the host's loopback; guests reach it at
// 10.0.2.2 (QEMU user networking). It returns the node and its address as
// the guest must dial it.
func hostSupernode(t testing.TB) (*dht.Node, string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	sn, err := dht.New(context.Background(), dht.Config{
		Key:         key,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Trust:       records.TrustMap{testDomain: testOperatorID()},
		Logger:      slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	addr := sn.Multiaddrs()[0].String()
	return sn, strings.Replace(addr, "/ip4/127.0.0.1/", "/ip4/10.0.2.2/", 1)
}

// guestReachable returns the libp2p listener and announced address of a
// host supernode that guests reach too: a free loopback port, announced
// at 10.0.2.2 (QEMU's user network maps it to the host's loopback).
func guestReachable(t testing.TB) (listen, announce []string) {
	t.Helper()
	port := proc.FreePort(t)
	return []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}, []string{fmt.Sprintf("/ip4/10.0.2.2/tcp/%d", port)}
}

// hostRelay runs the relay on the host supernode sn with its HTTP front on
// loopback, and returns the front's address.
func hostRelay(t *testing.T, sn *dht.Node) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	// STUN/TURN beside it, on loopback: the guest reaches the host's
	// loopback at QEMU's host address, 10.0.2.2, which its URIs name.
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := turn.New(turn.Config{UDP: udp, TCP: tcp, RelayAddress: net.IPv4(10, 0, 2, 2), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	// The host gateway (startHostGateway) forwards to nodes attached here:
	// it lists itself in the domain record, as supernodes do.
	gws, err := dht.NewGatewaySet(dht.GatewaysConfig{Resolve: sn.ResolveDomain, Domains: func() []string { return []string{testDomain} },
		MinRefresh: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relayserver.New(relayserver.Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 40000, PortMax: 60000, Logger: log,
		TURN: supernode.TURNIssuer(ts, 0), Forwarders: gws.Allowed})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(relayfront.Handler(r, log))
	t.Cleanup(func() { front.Close(); r.Close() })
	return front.Listener.Addr().String()
}

// getVia fetches path from the node id through the relay front.
func getVia(t *testing.T, front string, id identity.ID, path string) (int, []byte) {
	t.Helper()
	code, body := relayfront.Do(t, "http://"+front, id, "GET", path, nil)
	return code, []byte(body)
}

// keyPEM returns the key file contents of the words' node key.
func keyPEM(t testing.TB, words string) []byte {
	t.Helper()
	key, err := identity.NodeKeyFromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, key)
}

// buildProfileImage builds the qemu board image for settings, with perm
// files provisioned at build time.
func buildProfileImage(t *testing.T, s settings.Settings, perm map[string]image.PermFile) string {
	t.Helper()
	return buildBoardImage(t, qemu.Board, s, perm)
}

// buildBoardImage builds board's image for settings, with perm files
// provisioned at build time.
func buildBoardImage(t testing.TB, board boards.Board, s settings.Settings, perm map[string]image.PermFile) string {
	t.Helper()
	qemutest.RequireArch(t, board.GOARCH) // building needs the same host tools; skip early
	p, err := profile.Build(&s)
	if err != nil {
		t.Fatal(err)
	}
	p.Files["/etc/gokr-pw.txt"] = []byte("pc2-test-password")
	res, err := image.Build(context.Background(), image.Options{
		Board:           board,
		Programs:        p.Programs,
		External:        p.External,
		ExtraFiles:      p.Files,
		PermFiles:       perm,
		BootFiles:       p.BootFiles,
		SourceDateEpoch: 1700000000,
		Output:          filepath.Join(t.TempDir(), "disk.img"),
		RootSize:        128 * image.MiB,
		PermSize:        64 * image.MiB,
		Logger:          slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Image
}

// waitOnline polls the node's /api/status until it is online.
func waitOnline(t testing.TB, vm *qemutest.VM, deadline time.Duration) personal.Status {
	t.Helper()
	return waitStatus(t, vm, deadline, "online", func(st personal.Status) bool { return st.State == "online" })
}

// waitStatus polls the node's /api/status until ok says yes.
func waitStatus(t testing.TB, vm *qemutest.VM, deadline time.Duration, what string, ok func(personal.Status) bool) personal.Status {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/api/status", vm.HostPort(4200))
	end := time.Now().Add(deadline)
	var st personal.Status
	// A short timeout per request: QEMU's user network holds connections
	// made before the guest has its address, and waiting on such a one
	// adds seconds to the boot time the tests log.
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(end) {
		resp, err := client.Get(url)
		if err == nil {
			st = personal.Status{}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && ok(st) {
				return st
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("node not %s within %v; last status %+v", what, deadline, st)
	return st
}

// TestPersonalImage: the booted x86 personal image serves its status page on
// 4200 with the provisioned DID, and the host resolves the did record the VM
// published through the host's supernode.
func TestPersonalImage(t *testing.T) {
	testPersonalImage(t, qemu.Board)
}

// TestPersonalImageArm64 is TestPersonalImage for the arm64 userland (the
// programs a Raspberry Pi runs) on QEMU's virt machine.
func TestPersonalImageArm64(t *testing.T) {
	vm := testPersonalImage(t, qemuarm64.Board)
	serial := vm.Serial()
	// The init must read the boot slots from the FAT16 boot partition
	// (A/B switches edit it) and mount perm.
	if !strings.Contains(serial, bootSlotsMark) {
		t.Errorf("serial console lacks the init's boot slots line")
	}
	if strings.Contains(serial, "Could not mount permanent storage") {
		t.Error("perm (ext4) was not mounted")
	}
	// The arm64 kernel defaults to transparent huge pages "always"; the
	// init limits them before the services start (they would hold 2 MiB
	// pages of heap each).
	info := deviceInfo(t, fmt.Sprintf("http://127.0.0.1:%d/api/device", vm.HostPort(4200)), testAdminPassword)
	if thp := info.Memory.TransparentHugePages; thp != "madvise" {
		t.Errorf("transparent huge pages %q, want madvise", thp)
	}
}

// testAdminPassword is the admin password of testPersonalImage's images.
const testAdminPassword = "admin password 1"

func testPersonalImage(t *testing.T, board boards.Board) *qemutest.VM {
	sn, guestAddr := hostSupernode(t)
	front := hostRelay(t, sn)
	hash, err := password.Hash(testAdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	img := buildBoardImage(t, board, settings.Settings{Profile: profile.Personal, Hostname: "pc2-personal",
		Supernodes: []string{guestAddr}, PublicURL: "http://alice.pc2.test", AdminPasswordHash: hash},
		map[string]image.PermFile{"pc2/node.key": {Data: keyPEM(t, vectorWords), Mode: 0o600}})

	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, GOARCH: board.GOARCH})
	st := waitOnline(t, vm, 3*time.Minute)
	t.Logf("%s: QEMU start to node online: %v", board.Name, time.Since(vm.Started).Round(100*time.Millisecond))
	if st.DID != vectorDID {
		t.Fatalf("node runs as %s, want the provisioned %s", st.DID, vectorDID)
	}
	if st.NewKey {
		t.Fatalf("node created a key although one was provisioned")
	}
	id, _ := identity.ParseDID(vectorDID)
	rec, err := sn.ResolveDID(context.Background(), id)
	if err != nil {
		t.Fatalf("host resolve: %v", err)
	}
	if len(rec.Services) != 1 || rec.Services[0].Endpoint != "http://alice.pc2.test" {
		t.Fatalf("got services %+v, want the public URL from the settings", rec.Services)
	}
	body := vm.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", vm.HostPort(4200)), time.Minute)
	if !strings.Contains(string(body), vectorDID) {
		t.Fatalf("status page does not show the DID")
	}
	// The backup engine in the image runs on the board.
	info := deviceInfo(t, fmt.Sprintf("http://127.0.0.1:%d/api/device", vm.HostPort(4200)), testAdminPassword)
	if want := "restic " + strings.TrimPrefix(profile.Restic.Version, "v"); !strings.HasPrefix(info.BackupEngine, want) ||
		!strings.Contains(info.BackupEngine, "linux/"+board.GOARCH) {
		t.Errorf("%s: backup engine %q, want %s for linux/%s", board.Name, info.BackupEngine, want, board.GOARCH)
	}
	// The VM sits behind QEMU's user-mode NAT: its status page through the
	// host supernode's relay, and the did record lists that supernode.
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		// Relayed, a stranger's view: online, without network details.
		code, b := getVia(t, front, id, "/api/status")
		if code == http.StatusOK && strings.Contains(string(b), `"state":"online"`) && strings.Contains(string(b), vectorDID) {
			if strings.Contains(string(b), `"mode"`) || strings.Contains(string(b), `"tunnel"`) {
				t.Fatalf("status through the relay shows network details to a stranger: %s", b)
			}
			t.Logf("%s: QEMU start to relayed status page: %v", board.Name, time.Since(vm.Started).Round(100*time.Millisecond))
			break
		}
		if time.Now().After(end) {
			t.Fatalf("status page not reached through the relay: %d %s", code, b)
		}
	}
	// On the local network (the host forwards to the VM, which sees QEMU's
	// private gateway address): relayed, and its STUN check through the
	// host's server saw QEMU's NAT (the host sees the guest's packets come
	// from its loopback).
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		b := vm.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/api/status", vm.HostPort(4200)), time.Minute)
		if strings.Contains(string(b), `"mode":"relayed"`) && strings.Contains(string(b), `"behind_nat":true`) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("local status page does not show the relayed mode and the NAT: %s", b)
		}
	}
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		rec, err := sn.ResolveDID(context.Background(), id)
		if err == nil && len(rec.Supernodes) == 1 && rec.Supernodes[0].ID.String() == mustID(t, sn).String() {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("did record does not list the relay's supernode: %+v %v", rec, err)
		}
	}

	// Its friendly URL: the node's owner claims alice.pc2.test on a
	// gateway on the host (another supernode, which forwards to the one
	// the VM is attached to), and a browser opens https://alice.pc2.test
	// with a certificate from the test's CA, over HTTP/2.
	browser := hostGateway(t, sn)
	key, err := identity.NodeKeyFromMnemonic(vectorWords, "")
	if err != nil {
		t.Fatal(err)
	}
	name := "alice." + testDomain
	if ni, err := (&namesapi.Client{API: "https://" + testDomain, HTTP: browser}).Claim(context.Background(), key, name, ""); err != nil || ni.DID != vectorDID {
		t.Fatalf("claim %s: %+v %v", name, ni, err)
	}
	// Retried like a browser's reload: the gateway may answer before the
	// name's grant and the node's did record have reached it (a 404 or
	// 502 page for a moment).
	var resp *http.Response
	var b []byte
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err = browser.Get("https://" + name + "/api/status")
		if err != nil {
			t.Fatalf("https://%s: %v", name, err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || time.Now().After(end) {
			break
		}
		t.Logf("https://%s: %s, again", name, resp.Status)
	}
	if resp.StatusCode != 200 || !strings.Contains(string(b), vectorDID) || resp.ProtoMajor != 2 {
		t.Fatalf("https://%s: %s %s %.200q", name, resp.Proto, resp.Status, b)
	}
	t.Logf("%s: https://%s served over %s with a certificate for %v", board.Name, name, resp.Proto, resp.TLS.PeerCertificates[0].DNSNames)
	return vm
}

// TestRestartKeepsIdentityAndSettings: the personal image boots into the
// setup wizard (no identity provisioned); the owner completes it over
// HTTP (a new identity confirmed from its words, a password, a name
// claimed at a names API on the host) and uploads a file. The settings
// are then changed in the image in place (what `pc2 image settings`
// does: a new public URL and host name, a static address on eth0); after
// a power cut and a second boot the node has the same DID, name, owner
// session and file, runs with the new settings, and gokrazy's DHCP
// client stays off. The admin API needs the admin password from the
// settings.
func TestRestartKeepsIdentityAndSettings(t *testing.T) {
	sn, guestAddr := hostSupernode(t)
	_, apiPort := startHostGateway(t, sn, false)
	hash, err := password.Hash("admin password 1")
	if err != nil {
		t.Fatal(err)
	}
	s := settings.Settings{Profile: profile.Personal, Hostname: "first", Supernodes: []string{guestAddr},
		PublicURL: "http://one.pc2.test", AdminPasswordHash: hash,
		// QEMU's user network maps 10.0.2.2 to the host's loopback.
		NameServices: []settings.NameService{{Domain: testDomain, API: fmt.Sprintf("http://10.0.2.2:%d", apiPort)}}}
	img := qemutest.CopyImage(t, buildProfileImage(t, s, nil))

	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
	wiz := waitStatus(t, vm, 3*time.Minute, "in the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	if wiz.DID != "" || wiz.State != "waiting" {
		t.Fatalf("first boot without an identity: %+v", wiz)
	}
	if !strings.Contains(vm.Serial(), "PC2: or from elsewhere with the one-time setup code ") {
		t.Errorf("the setup code is not on the console")
	}
	owner := cloudtest.New(t, fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)), &http.Client{Timeout: time.Minute})
	if r := owner.Get("/"); r.Code != http.StatusSeeOther || r.Location() != "/_/setup" {
		t.Fatalf("/ on first boot: %d %s", r.Code, r.Location())
	}
	words := owner.CreateIdentity()
	owner.Password("owner password 1")
	if r := owner.Claim("carol", ""); r.Code != http.StatusSeeOther {
		t.Fatalf("claim in the wizard: %d %s", r.Code, r.Err())
	}
	if r := owner.Upload("notes.txt", strings.NewReader("kept across restarts")); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	first := waitOnline(t, vm, 3*time.Minute)
	key, _ := identity.NodeKeyFromMnemonic(strings.Join(words, " "), "")
	wantID, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if first.DID != wantID.DID() || first.Name != "carol."+testDomain || first.Setup != "done" {
		t.Fatalf("after the wizard: %+v, want DID %s and the name", first, wantID.DID())
	}
	admin := fmt.Sprintf("http://127.0.0.1:%d/api/device", vm.HostPort(4200))
	for _, pw := range []string{"", "wrong password"} {
		req, _ := http.NewRequest("GET", admin, nil)
		if pw != "" {
			req.SetBasicAuth("admin", pw)
		}
		if code := httpCode(t, req); code != http.StatusUnauthorized {
			t.Fatalf("admin API with password %q: status %d, want 401", pw, code)
		}
	}
	info := deviceInfo(t, admin, "admin password 1")
	if info.Settings.Hostname != "first" || !strings.Contains(info.SettingsSource, settings.BootFile) {
		t.Fatalf("first boot device info %+v", info)
	}
	vm.Stop()

	s.Hostname, s.PublicURL = "second", "http://two.pc2.test"
	s.Network = &settings.Network{Interfaces: []settings.Interface{{Mode: settings.ModeStatic,
		Addresses: []string{"10.0.2.15/24"}, Gateway4: "10.0.2.2", DNS: []string{"10.0.2.3"}}}}
	if err := settings.WriteImage(img, &s); err != nil {
		t.Fatal(err)
	}

	vm = qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
	second := waitOnline(t, vm, 3*time.Minute)
	if second.DID != first.DID || second.Name != first.Name || second.Setup != "done" {
		t.Fatalf("after restart: %+v, want DID %s and name %s kept", second, first.DID, first.Name)
	}
	owner.Base = fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200))
	if r := owner.Get("/_/dl/notes.txt"); r.Code != http.StatusOK || r.Body != "kept across restarts" {
		t.Fatalf("file after restart (same session): %d %q", r.Code, r.Body)
	}
	fresh := cloudtest.New(t, owner.Base, &http.Client{Timeout: time.Minute})
	fresh.Login("owner password 1")
	if r := fresh.Get("/_/"); !strings.Contains(r.Body, "carol."+testDomain) {
		t.Fatalf("dashboard after restart lacks the name: %d", r.Code)
	}
	info = deviceInfo(t, fmt.Sprintf("http://127.0.0.1:%d/api/device", vm.HostPort(4200)), "admin password 1")
	if info.Settings.Hostname != "second" || info.Settings.Network == nil || info.Settings.AdminPasswordHash != "(set)" {
		t.Fatalf("second boot device info %+v", info)
	}
	if !strings.Contains(strings.Join(info.Network.Changes, "\n"), "10.0.2.15/24") {
		t.Errorf("netconf did not add the static address: %+v", info.Network)
	}
	if l, ok := info.Network.Leases["eth0"]; ok {
		t.Errorf("the device leased %s on eth0 although it is static", l.Address)
	}
	// The log on perm survived the power cut: both boots are in it, and
	// the owner's dashboard gives the same.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/device/logs", vm.HostPort(4200)), nil)
	req.SetBasicAuth("admin", "admin password 1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(logs), "msg=\"device starting\""); resp.StatusCode != http.StatusOK || n != 2 ||
		!strings.Contains(string(logs), "msg=\"personal cloud set up\"") {
		t.Fatalf("logs after the restart: %s, %d device starts, want 2 and the first boot's setup:\n%.2000s", resp.Status, n, logs)
	}
	if r := fresh.Get("/_/logs.txt"); r.Code != http.StatusOK || !strings.Contains(r.Body, "personal cloud set up") {
		t.Fatalf("the owner's log download: %d", r.Code)
	}
	id, _ := identity.ParseDID(first.DID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		rec, err := sn.ResolveDID(ctx, id)
		if err == nil && len(rec.Services) == 1 && rec.Services[0].Endpoint == "http://two.pc2.test" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("did record with the new public URL not resolved: %+v, %v", rec, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// deviceInfoJSON is what the tests read of GET /api/device.
type deviceInfoJSON struct {
	Settings       settings.Settings `json:"settings"`
	SettingsSource string            `json:"settings_source"`
	HostName       string            `json:"host_name"`
	Network        struct {
		Changes []string                `json:"changes"`
		Leases  map[string]device.Lease `json:"leases"`
	} `json:"network"`
	Processes    []device.Process `json:"processes"`
	Memory       device.Memory    `json:"memory"`
	BackupEngine string           `json:"backup_engine"`
}

func deviceInfo(t testing.TB, url, pw string) deviceInfoJSON {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.SetBasicAuth("admin", pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info deviceInfoJSON
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin API: status %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info
}

func httpCode(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSupernodeImage: the host publishes a record through the booted
// supernode image and resolves it back, and a node on the host attaches to
// the image's relay, gets its TURN credentials and is reached through a
// mapped port.
func TestSupernodeImage(t *testing.T) {
	// The VM grants and serves names under pc2.test: its perm holds the
	// operator key the settings pin.
	_, opKey, _ := ed25519.GenerateKey(nil)
	opID, _ := identity.IDFromPublicKey(opKey.Public().(ed25519.PublicKey))
	img := buildProfileImage(t, settings.Settings{Profile: profile.Supernode, Hostname: "pc2-supernode",
		Listen: []string{"/ip4/0.0.0.0/tcp/8090"}, Domains: []settings.Domain{{Domain: testDomain, Operator: opID.DID()}}},
		map[string]image.PermFile{"pc2/node.key": {Data: keyPEM(t, vectorWords), Mode: 0o600},
			"pc2/operator.key": {Data: pemOf(t, opKey), Mode: 0o600}})
	// A node on the host attaches to the VM's relay and exposes a TCP
	// service; the relay maps it to the node's preferred port, which is
	// forwarded from the host.
	_, nodeKey, _ := ed25519.GenerateKey(nil)
	nodeID, _ := identity.IDFromPublicKey(nodeKey.Public().(ed25519.PublicKey))
	mapped := relayserver.PreferredPort(nodeID, "echo", 20000, 22000)
	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{8090, 80, mapped}})

	id, _ := identity.ParseDID(vectorDID)
	pid, err := dht.IDToPeer(id)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := dht.ParseAddrInfos([]string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", vm.HostPort(8090), pid)})
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	client, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Bootstrap: boot,
		Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	waitBootstrap(t, client, boot, 3*time.Minute)
	t.Logf("QEMU start to supernode answering: %v", time.Since(vm.Started).Round(100*time.Millisecond))

	_, bob, _ := ed25519.GenerateKey(nil)
	bobID, _ := identity.IDFromPublicKey(bob.Public().(ed25519.PublicKey))
	now := time.Now()
	val, err := records.SignDID(bob, &records.DID{Version: 1, ID: bobID, Seq: 1, IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(),
		Direct: []string{"/ip4/192.0.2.9/tcp/4200"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := client.PutVerified(ctx, records.DIDKey(bobID), val)
	if err != nil || res.Stored != 1 {
		t.Fatalf("publish through the VM: %+v, %v; want stored on 1", res, err)
	}
	// A fresh client resolves it from the VM.
	_, key2, _ := ed25519.GenerateKey(nil)
	reader, err := dht.New(context.Background(), dht.Config{Key: key2, Mode: dht.ModeClient, Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	waitBootstrap(t, reader, boot, time.Minute)
	got, err := reader.ResolveDID(ctx, bobID)
	if err != nil || got.Direct[0] != "/ip4/192.0.2.9/tcp/4200" {
		t.Fatalf("resolve through the VM: %+v, %v", got, err)
	}

	// The relay and TURN of the supernode profile: the host's node
	// attaches, gets TURN credentials for the VM's server on 3478, and a
	// TCP connection to the mapped port reaches its echo service.
	echo := echotest.Start(t)
	nodeHost, err := dht.New(context.Background(), dht.Config{Key: nodeKey, Mode: dht.ModeClient})
	if err != nil {
		t.Fatal(err)
	}
	defer nodeHost.Close()
	tc, err := tunnel.New(tunnel.Config{Host: nodeHost.Host(), Key: nodeKey, Supernodes: boot,
		TCP: map[string]string{"echo": echo}, Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), nil))})
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithCancel(context.Background())
	defer tcancel()
	go tc.Run(tctx)
	// The node's web service, for its name on the VM's gateway.
	web := &http.Server{Handler: echotest.HTTP()}
	go web.Serve(tc.Listener())
	defer web.Close()
	var ls tunnel.LinkStatus
	for end := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if st := tc.Status(); len(st.Supernodes) == 1 && st.Supernodes[0].Attached {
			ls = st.Supernodes[0]
			break
		}
		if time.Now().After(end) {
			t.Fatalf("host node not attached to the VM's relay: %+v", tc.Status())
		}
	}
	if ls.Ports["echo"] != mapped {
		t.Fatalf("mapped port %d, want the preferred %d", ls.Ports["echo"], mapped)
	}
	if ls.TURN == nil || !strings.Contains(strings.Join(ls.TURN.URIs, " "), ":3478?transport=udp") {
		t.Fatalf("TURN from the VM: %+v, want its server on 3478", ls.TURN)
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", vm.HostPort(mapped)), 10*time.Second)
	if err != nil {
		t.Fatalf("mapped port: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "through the VM's relay\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "through the VM's relay\n" {
		t.Fatalf("echo through the mapped port: %q %v", line, err)
	}

	// The VM's gateway: the host node claims bob.pc2.test through the
	// names API on port 80, and the gateway serves it from the relay.
	gw := fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(80))
	name := "bob." + testDomain
	if ni, err := (&namesapi.Client{API: gw}).Claim(ctx, nodeKey, name, ""); err != nil || ni.DID != nodeID.DID() {
		t.Fatalf("claim on the VM's gateway: %+v %v", ni, err)
	}
	req, _ := http.NewRequest("GET", gw+"/hello", nil)
	req.Host = name
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s through the VM's gateway: %v", name, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "hello "+name+" xff=10.0.2.2") {
		t.Fatalf("%s through the VM's gateway: %s %q", name, resp.Status, b)
	}
}

// testDomain is the domain the gateway scenarios serve; testOperator is
// its operator key, which the host's supernodes pin.
const testDomain = "pc2.test"

var testOperator = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func testOperatorID() identity.ID {
	id, _ := identity.IDFromPublicKey(testOperator.Public().(ed25519.PublicKey))
	return id
}

// hostGateway runs a second supernode on the host, joined to sn, with the web gateway for testDomain over
// HTTPS: certificates on demand from a Pebble CA the test starts, the
// operator key, an open name policy. It returns a client that resolves
// every name to that gateway and trusts Pebble's roots, as a browser
// would with wildcard DNS and a public CA.
func hostGateway(t *testing.T, sn *dht.Node) *http.Client {
	c, _ := startHostGateway(t, sn, true)
	return c
}

// startHostGateway runs a gateway supernode for testDomain on the host
// (bootstrapped from sn, holding the operator key, open policy), with
// HTTPS from Pebble or plain HTTP only; it returns a client that reaches
// every name of the domain through it and the port of its HTTP listener.
func startHostGateway(t *testing.T, sn *dht.Node, https bool) (*http.Client, int) {
	t.Helper()
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Without HTTPS no TLS ends anywhere: the domain's record says the
	// gateways terminate, so nodes order no certificates (the image's
	// nodes would ask Let's Encrypt).
	o := gwtest.Options{Domain: testDomain, Operator: testOperator, Bootstrap: []string{sn.Multiaddrs()[0].String()}, HTTPListener: httpLn,
		TLS: "gateway"}
	var pb *pebbletest.Server
	if https {
		if o.HTTPSListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		pb = pebbletest.Start(t, pebbletest.Options{HTTPPort: httpLn.Addr().(*net.TCPAddr).Port, TLSPort: o.HTTPSListener.Addr().(*net.TCPAddr).Port})
		o.ACME = supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}
		o.TLS = ""
	}
	gw := gwtest.Start(t, o)
	httpsLn := o.HTTPSListener
	// It joins sn's DHT in the background: wait for that.
	for end := time.Now().Add(30 * time.Second); sn.DHT().RoutingTable().Size() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the gateway supernode did not join the host supernode's DHT")
		}
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		ln := httpLn
		if _, port, _ := net.SplitHostPort(addr); port != "80" && httpsLn != nil {
			ln = httpsLn
		}
		var d net.Dialer
		return d.DialContext(ctx, network, ln.Addr().String())
	}
	tr := &http.Transport{DialContext: dial, ForceAttemptHTTP2: true}
	if https {
		roots, err := pb.IssuingRoots()
		if err != nil {
			t.Fatal(err)
		}
		// The CA's DNS and the browser's both point every name at the gateway.
		for _, n := range []string{testDomain, "alice." + testDomain} {
			if err := pb.AddA(n, "127.0.0.1"); err != nil {
				t.Fatal(err)
			}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	c := &http.Client{Timeout: time.Minute, Transport: tr}
	t.Cleanup(c.CloseIdleConnections)
	return c, gw.HTTPPort
}

// pemOf is key as the contents of a key file.
func pemOf(t testing.TB, key ed25519.PrivateKey) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := identity.WriteKeyFile(p, key); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitBootstrap(t *testing.T, n *dht.Node, boot []peer.AddrInfo, deadline time.Duration) {
	t.Helper()
	end := time.Now().Add(deadline)
	var err error
	for time.Now().Before(end) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = n.Bootstrap(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("supernode in the VM not reachable within %v: %v", deadline, err)
}

func mustID(t *testing.T, n *dht.Node) identity.ID {
	t.Helper()
	id, err := n.ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
