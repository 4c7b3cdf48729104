// Package wifi joins the appliance to the Wi-Fi network named in the device
// settings (WPA2-Personal or open) and keeps it joined.
//
// # How
//
// Run finds the wireless interface (wlan0, else the first nl80211 station
// interface), sets it up and sends nl80211 CONNECT. For WPA2 the request
// carries the PMK, the 32-byte key PBKDF2 derives from the passphrase, and
// the driver's firmware runs the WPA 4-way handshake itself: nl80211's
// "4-way handshake offload" (NL80211_EXT_FEATURE_4WAY_HANDSHAKE_STA_PSK),
// which the brcmfmac chips of the Raspberry Pi 3B, 3B+, 4 and 5 offer (the
// rpi image ships their firmware from Debian's firmware-brcm80211; the
// Zero 2 W's chip firmware is not in Debian, so it has no Wi-Fi yet).
// That is why the image needs no wpa_supplicant, and also why
// drivers without the offload (most USB dongles) cannot join a WPA2
// network this way: Run then reports ErrUnsupported.
//
// After the request Run polls the association (cfg80211's current BSS) once
// a second until it is up or Options.ConnectTimeout passes. When it is not,
// a scan tells a missing network (ErrNotFound) from one that refused us:
// wrong passphrase, or a security mode the device cannot use (ErrRejected,
// ErrUnsupported). With Options.Others (more networks, in order of
// preference) Run tries the next network at once; when the last one has
// failed too it logs the error and starts again with the first after a
// jittered exponential backoff (services/backoff), so a wrong passphrase
// costs one log line per round, at most about one a minute, never a hot
// loop. A lost connection is rejoined starting with the preferred network.
// While connected it polls every Options.PollInterval; a lost association
// is logged and rejoined at once, or after a backoff when the previous
// one lasted less than a minute (a flapping link). State holds the current
// status for a status page.
//
// Polling rather than nl80211's "mlme" events: brcmfmac reports both
// failures that matter (wrong passphrase, network gone) as the same
// authentication timeout, so the event would add little beyond the scan;
// the library does not expose multicast subscriptions; and two netlink
// dumps every few seconds cost nothing. A drop is noticed within
// PollInterval.
//
// On a board without Wi-Fi, Run logs one line, sets PhaseNoHardware and
// returns nil, so the device carries on. No hardware means the kernel has
// no nl80211 at all, or no station interface appeared within
// Options.HardwareWait (kernel.amd64 builds cfg80211 in, so x86 and QEMU
// images have nl80211 but no interface). A service command can exit with
// gokrazy's status 125 then, so that it is not restarted.
//
// When ctx ends Run leaves the association up: a restarted service finds
// it and adopts it without a drop. A different network is left first.
//
// The Raspberry Pi kernel (kernel.rpi) builds brcmfmac as a module and
// gokrazy has no modprobe, so by default Run loads it (and its vendor
// modules) first, like gokrazy's own wifi program; see Options.Modules.
//
// # Why github.com/mdlayher/wifi
//
// It speaks nl80211 over generic netlink in pure Go (no cgo, no libnl, no
// iw binary), is what gokrazy's wifi program is built on, and is
// maintained. Run uses it for listing interfaces and PHY features,
// CONNECT for open networks, DISCONNECT, the current BSS, station
// statistics and scans. One request is written here, in kernel_linux.go:
// CONNECT with a PMK. The library's ConnectWPAPSK takes only a passphrase
// and derives the PMK itself, so a configured 64-hex-digit PSK cannot be
// passed through it; it also sets NL80211_ATTR_WANT_1X_4WAY_HS, which
// nl80211.h defines for 802.1X offload and which the kernel refuses on
// drivers that offload PSK but not 802.1X. The request sent here carries
// the same attributes otherwise.
//
// # Not covered
//
// WPA3-SAE-only and WPA1/TKIP networks, 802.1X (enterprise), the
// regulatory domain (the firmware's default applies) and addressing: a
// DHCP client for the interface (gokrazy's dhcp -interface=wlan0) or
// netconf does that once the link has carrier. The brcmfmac firmware files
// (/lib/firmware/brcm) must be in the image.
//
// # Testing
//
// Everything that touches the kernel goes through Radio, and the tests
// drive Run with a fake in testing/synctest's virtual time: joining,
// refused and failing connects, drops, roaming, flapping, a replaced
// interface, no hardware, cancellation. The kernel implementation is
// tested here only as far as a machine without Wi-Fi allows: request
// encoding, parsing, and that such a machine counts as "no hardware".
// Joining a real network is untested: the build machines have no Wi-Fi
// hardware and no mac80211_hwsim, and hwsim would not do: it does not
// offload the 4-way handshake, so only a board with brcmfmac tests the
// WPA2 path.
package wifi
