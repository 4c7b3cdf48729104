//go:build linux

package wifi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	mdwifi "github.com/mdlayher/wifi"
	vnetlink "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelRadio is the Radio of the running kernel: github.com/mdlayher/wifi
// for nl80211, its own generic netlink socket for CONNECT with a PMK (see
// the package comment), rtnetlink for the link state.
type kernelRadio struct {
	c      *mdwifi.Client
	g      *genetlink.Conn
	family genetlink.Family
	h      *vnetlink.Handle
}

// openKernel loads modules (see Options.Modules) and opens nl80211. It
// returns ErrNoNL80211 when the kernel has no nl80211 family.
func openKernel(modules []string, log *slog.Logger) (Radio, error) {
	loadModules(modules, log)
	c, err := mdwifi.New()
	if errors.Is(err, os.ErrNotExist) { // generic netlink: no such family
		return nil, ErrNoNL80211
	}
	if err != nil {
		return nil, fmt.Errorf("wifi: open nl80211: %w", err)
	}
	g, err := genetlink.Dial(nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("wifi: open generic netlink: %w", err)
	}
	// Extended acks carry the kernel's reason for a refused request.
	_ = g.SetOption(netlink.ExtendedAcknowledge, true)
	family, err := g.GetFamily(unix.NL80211_GENL_NAME)
	if err != nil {
		g.Close()
		c.Close()
		return nil, fmt.Errorf("wifi: look up nl80211: %w", err)
	}
	h, err := vnetlink.NewHandle()
	if err != nil {
		g.Close()
		c.Close()
		return nil, fmt.Errorf("wifi: open rtnetlink: %w", err)
	}
	return &kernelRadio{c: c, g: g, family: family, h: h}, nil
}

func (k *kernelRadio) Close() error {
	k.h.Close()
	return errors.Join(k.g.Close(), k.c.Close())
}

func (k *kernelRadio) Interfaces() ([]Interface, error) {
	ifis, err := k.c.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(ifis))
	for _, i := range ifis {
		out = append(out, Interface{
			Index:        i.Index,
			Name:         i.Name,
			HardwareAddr: i.HardwareAddr,
			PHY:          i.PHY,
			Station:      i.Type == mdwifi.InterfaceTypeStation,
		})
	}
	return out, nil
}

func lib(ifc Interface) *mdwifi.Interface {
	return &mdwifi.Interface{Index: ifc.Index, Name: ifc.Name, HardwareAddr: ifc.HardwareAddr, PHY: ifc.PHY, Type: mdwifi.InterfaceTypeStation}
}

func (k *kernelRadio) SetUp(ifc Interface) error {
	l, err := k.h.LinkByIndex(ifc.Index)
	if err != nil {
		return err
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	return k.h.LinkSetUp(l)
}

func (k *kernelRadio) Connect(ifc Interface, ssid string, pmk []byte) error {
	if pmk == nil {
		return k.c.Connect(lib(ifc), ssid)
	}
	data, err := connectPMKAttrs(ifc.Index, ssid, pmk)
	if err != nil {
		return err
	}
	_, err = k.g.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.NL80211_CMD_CONNECT, Version: k.family.Version},
		Data:   data,
	}, k.family.ID, netlink.Request|netlink.Acknowledge)
	if err != nil && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
		// The kernel refuses a PMK when the driver cannot use it. Check
		// only now, so that a PHY listing the library cannot parse does
		// not stand in the way of a driver that can.
		if ok, ferr := k.handshakeOffload(ifc.PHY); ferr == nil && !ok {
			return fmt.Errorf("%w: the driver of %s cannot do the WPA2 handshake itself (no nl80211 4-way handshake offload), and the image has no WPA supplicant: %v", ErrUnsupported, ifc.Name, err)
		}
	}
	return err
}

// IEEE 802.11 suite selectors (OUI 00-0F-AC).
const (
	cipherCCMP = 0x000fac04
	akmPSK     = 0x000fac02
)

// connectPMKAttrs encodes NL80211_CMD_CONNECT for a WPA2-Personal network
// whose 4-way handshake the driver does, given the PMK (nl80211.h, "WPA/WPA2
// EAPOL handshake offload").
func connectPMKAttrs(ifindex int, ssid string, pmk []byte) ([]byte, error) {
	if len(pmk) != 32 {
		return nil, fmt.Errorf("wifi: PMK is %d bytes, want 32", len(pmk))
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifindex))
	ae.Bytes(unix.NL80211_ATTR_SSID, []byte(ssid))
	ae.Uint32(unix.NL80211_ATTR_AUTH_TYPE, unix.NL80211_AUTHTYPE_OPEN_SYSTEM)
	ae.Uint32(unix.NL80211_ATTR_WPA_VERSIONS, unix.NL80211_WPA_VERSION_2)
	ae.Uint32(unix.NL80211_ATTR_CIPHER_SUITE_GROUP, cipherCCMP)
	ae.Uint32(unix.NL80211_ATTR_CIPHER_SUITES_PAIRWISE, cipherCCMP) // a list of one
	ae.Uint32(unix.NL80211_ATTR_AKM_SUITES, akmPSK)                 // a list of one
	ae.Bytes(unix.NL80211_ATTR_PMK, pmk)
	return ae.Encode()
}

// handshakeOffload reports whether the wiphy phy can do the 4-way
// handshake with a PSK itself.
func (k *kernelRadio) handshakeOffload(phy int) (bool, error) {
	phys, err := k.c.PHYs()
	if err != nil {
		return false, err
	}
	for _, p := range phys {
		if p.Index == phy {
			return extFeature(p.Extra[unix.NL80211_ATTR_EXT_FEATURES], unix.NL80211_EXT_FEATURE_4WAY_HANDSHAKE_STA_PSK), nil
		}
	}
	return false, fmt.Errorf("phy%d not found", phy)
}

// extFeature tests bit f of an NL80211_ATTR_EXT_FEATURES bitmap.
func extFeature(bitmap []byte, f int) bool {
	return f/8 < len(bitmap) && bitmap[f/8]&(1<<(f%8)) != 0
}

func (k *kernelRadio) Disconnect(ifc Interface) error {
	return k.c.Disconnect(lib(ifc))
}

func (k *kernelRadio) Link(ifc Interface) (Link, error) {
	bss, err := k.c.BSS(lib(ifc))
	if errors.Is(err, os.ErrNotExist) { // no current BSS
		return Link{}, nil
	}
	if err != nil {
		return Link{}, err
	}
	var stations []*mdwifi.StationInfo
	if bss.Status == mdwifi.BSSStatusAssociated {
		// Some brcmfmac firmware cannot list stations (EOPNOTSUPP); the
		// signal then comes from the BSS entry.
		stations, _ = k.c.StationInfo(lib(ifc))
	}
	return linkOf(bss, stations), nil
}

// linkOf is the Link described by the interface's current BSS and its
// station entries.
func linkOf(bss *mdwifi.BSS, stations []*mdwifi.StationInfo) Link {
	if bss == nil || bss.Status != mdwifi.BSSStatusAssociated {
		return Link{}
	}
	l := Link{
		Connected:    true,
		SSID:         bss.SSID,
		BSSID:        bss.BSSID,
		FrequencyMHz: bss.Frequency,
		SignalDBm:    int(bss.Signal / 100), // mBm
	}
	for _, s := range stations {
		if bytes.Equal(s.HardwareAddr, bss.BSSID) && s.Signal != 0 {
			l.SignalDBm = s.Signal // fresher than the scan entry
		}
	}
	return l
}

func (k *kernelRadio) Scan(ctx context.Context, ifc Interface) ([]Network, error) {
	// The library honours only a deadline, not cancellation.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, scanTimeout)
		defer cancel()
	}
	if err := k.c.Scan(ctx, lib(ifc)); err != nil {
		return nil, err
	}
	aps, err := k.c.AccessPoints(lib(ifc))
	if err != nil {
		return nil, err
	}
	nets := make([]Network, 0, len(aps))
	for _, ap := range aps {
		nets = append(nets, Network{SSID: ap.SSID, BSSID: ap.BSSID, SignalDBm: int(ap.Signal / 100), Security: securityOf(ap.RSN)})
	}
	return nets, nil
}

// securityOf classifies a network by its RSN element.
func securityOf(rsn mdwifi.RSNInfo) Security {
	if !rsn.IsInitialized() {
		return SecurityOpen
	}
	var psk, sae, dot1x bool
	for _, a := range rsn.AKMs {
		switch a {
		case mdwifi.RSNAkmPSK:
			psk = true
		case mdwifi.RSNAkmSAE, mdwifi.RSNAkmFTSAE:
			sae = true
		case mdwifi.RSNAkm8021X, mdwifi.RSNAkmFT8021X, mdwifi.RSNAkm8021XSHA256,
			mdwifi.RSNAkm8021XSuiteB, mdwifi.RSNAkm8021XCNSA, mdwifi.RSNAkmFT8021XSHA384:
			dot1x = true
		}
	}
	switch {
	case psk:
		for _, c := range rsn.PairwiseCiphers {
			if c == mdwifi.RSNCipherCCMP128 {
				return SecurityWPA2
			}
		}
		return SecurityTKIP
	case sae:
		return SecuritySAE
	case dot1x:
		return SecurityEnterprise
	}
	return SecurityOther
}

// loadModules loads kernel modules by path under /lib/modules/<release>/.
// gokrazy has no modprobe and kernel.rpi builds brcmfmac as a module, so
// without this no wlan0 ever appears on a Raspberry Pi.
func loadModules(modules []string, log *slog.Logger) {
	if len(modules) == 0 {
		return
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		log.Warn("wifi: uname", "err", err)
		return
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
	for _, m := range modules {
		start := time.Now()
		loaded, err := loadModule(filepath.Join(dir, m))
		switch {
		case err != nil:
			log.Warn("wifi: load kernel module", "module", m, "err", err)
		case loaded:
			log.Debug("wifi: loaded kernel module", "module", m, "took", time.Since(start))
		}
	}
}

// loadModule loads the module file at path. A missing file (not in this
// image) and a module already loaded are not errors.
func loadModule(path string) (loaded bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	switch err := unix.FinitModule(int(f.Fd()), "", 0); {
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("finit_module %s: %w", path, err)
	}
	return true, nil
}
