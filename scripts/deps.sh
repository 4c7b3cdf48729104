#!/usr/bin/env bash
# Installs what the build and tests need on a Debian machine, if missing,
# and says what it does. Usage: scripts/deps.sh [test|run]
set -euo pipefail
need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

export PATH=$PATH:/usr/local/go/bin
# go.mod asks for Go 1.26; any Go >= 1.21 fetches that toolchain itself
# through the module proxy (GOTOOLCHAIN=auto).
if ! have go; then
	echo "deps: Go is not installed. PC2 needs Go 1.26 (https://go.dev/dl), or any Go >= 1.21, which downloads it; Debian 12's golang package (1.19) is too old." >&2
	exit 1
fi
gov=$(GOTOOLCHAIN=local go env GOVERSION | sed 's/^go//')
case $gov in
1.2[1-9]* | 1.[3-9][0-9]* | [2-9].*) ;;
*) echo "deps: Go $gov is too old; PC2 needs Go >= 1.21 (which fetches Go 1.26 itself)" >&2; exit 1 ;;
esac
# command -> Debian package. Image building: mksquashfs, mkfs.ext4, the
# systemd-boot EFI binary, syslinux (installer and gptmbr.bin, for BIOS
# boot of the x86 image; it pulls in mtools). QEMU tier: qemu (x86 and
# arm64; SeaBIOS comes with qemu-system-x86) and OVMF. fat16's tests check
# the boot partition with fsck.fat and mtools. services/turn's interop test
# runs coturn's TURN client, turnutils_uclient. internal/testing/nattest's NAT
# routers masquerade with nft. The gateway benchmark (make bench-gateway)
# loads with wrk and compares with nginx; the real path (make
# bench-realpath) sends raw TCP through the relay with iperf3. The personal cloud's browser
# end-to-end tests drive headless Chromium through chromedp
# (internal/testing/browsertest); its WebDAV server is checked with litmus.
# Backups must stay readable by stock restic: services/backup's test
# restores a PC2 repository with Debian's restic package. The appliance's
# mDNS announcements are checked with avahi's clients against a private
# avahi-daemon and D-Bus in a network namespace (internal/testing/avahitest).
declare -A cmd_pkg=(
	[git]=git [make]=make [curl]=curl
	[mksquashfs]=squashfs-tools [mkfs.ext4]=e2fsprogs [syslinux]=syslinux
	[qemu-system-x86_64]=qemu-system-x86 [qemu-system-aarch64]=qemu-system-arm
	[qemu-img]=qemu-utils
	[fsck.fat]=dosfstools [mtype]=mtools
	[turnutils_uclient]=coturn
	[nft]=nftables
	[wrk]=wrk
	[iperf3]=iperf3
	[chromium]=chromium [litmus]=litmus
	[restic]=restic
	[avahi-daemon]=avahi-daemon [avahi-resolve]=avahi-utils [dbus-daemon]=dbus
)
for c in "${!cmd_pkg[@]}"; do
	have "$c" || need_apt+=("${cmd_pkg[$c]}")
done
file_pkg() { [ -e "$1" ] || need_apt+=("$2"); }
file_pkg /usr/lib/systemd/boot/efi/systemd-bootx64.efi systemd-boot-efi
file_pkg /usr/lib/SYSLINUX/gptmbr.bin syslinux
file_pkg /usr/share/OVMF/OVMF_CODE_4M.fd ovmf
file_pkg /usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring
file_pkg /usr/sbin/nginx nginx # not in a non-root user's PATH
# The device's DHCP client is tested against dnsmasq in a network namespace
# (internal/testing/dhcptest).
file_pkg /usr/sbin/dnsmasq dnsmasq-base
if [ ${#need_apt[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing ${need_apt[*]}; run as root or install them with apt-get" >&2
		exit 1
	fi
	echo "deps: installing ${need_apt[*]} with apt-get"
	apt-get update -qq
	# The daemons among them (avahi-daemon, nginx, coturn) are started by
	# the tests that need them, in their own namespaces and ports; none
	# is started on the host by the install (Debian's policy-rc.d).
	prc=/usr/sbin/policy-rc.d made_prc=
	if [ ! -e $prc ]; then
		printf '#!/bin/sh\nexit 101\n' >$prc && chmod 755 $prc && made_prc=1
		trap 'rm -f $prc' EXIT
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
	[ -z "$made_prc" ] || rm -f $prc
fi
# Wi-Fi firmware of the rpi image (boards/rpi LinuxFirmware), which package
# image reads from $fw_deb and checks against the same SHA-256. Debian has
# it in the non-free-firmware component, which the host's apt sources need
# not list; adding it there would change what every apt-get on the host may
# install, so apt fetches this one pinned .deb through a private sources
# list, lists and cache (still checked against Debian's signed Release
# file), and the SHA-256 pin keeps a changed mirror from slipping other
# firmware in.
fw_dir=/var/cache/pc2
fw_deb=$fw_dir/firmware-brcm80211_20230210-5_all.deb
fw_sha=602b8c2dd176edbb187fe8d0d2ad8fadbfb7885e5fc3425b579c2d36ec72aa19
fw_ok() { echo "$fw_sha  $1" | sha256sum -c --status 2>/dev/null; }
# apt_fetch DIR SUITE COMPONENT PKG...: downloads the packages into DIR
# through a private sources list, lists and cache (still checked against
# Debian's signed Release file); the host's apt configuration is untouched.
apt_fetch() {
	local dir=$1 suite=$2 comp=$3
	shift 3
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	chown _apt "$dir" 2>/dev/null || true # apt downloads as _apt
	printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$suite" "$comp" >"$dir/private.sources"
	local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$dir"
		-o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache")
	apt-get "${opts[@]}" -qq update
	(cd "$dir" && apt-get "${opts[@]}" -qq download "$@")
}
# fetch_tmp: a new temporary directory under $fw_dir, removed at exit.
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT
fetch_tmp() {
	mkdir -p "$fw_dir"
	tmp=$(mktemp -d "$fw_dir/.fetch.XXXXXX")
	tmps+=("$tmp")
}
if fw_ok "$fw_deb"; then
	:
elif [ "$(id -u)" != 0 ]; then
	echo "deps: $fw_deb missing, so rpi images will not build; run scripts/deps.sh as root" >&2
else
	echo "deps: downloading firmware-brcm80211 20230210-5 (Debian bookworm, non-free-firmware) to $fw_dir"
	fetch_tmp
	fw_tmp=$tmp
	apt_fetch "$fw_tmp" bookworm non-free-firmware firmware-brcm80211=20230210-5
	if ! fw_ok "$fw_tmp/${fw_deb##*/}"; then
		echo "deps: the downloaded firmware-brcm80211 20230210-5 does not have SHA-256 $fw_sha" >&2
		exit 1
	fi
	mv "$fw_tmp/${fw_deb##*/}" "$fw_deb"
fi
# QEMU 10 for the raspi4b machine (qemu-tests' Raspberry Pi 4 boot), from
# Debian's bookworm-backports. Installing it would replace the system's
# QEMU 7.2 (qemu-system-common is shared with qemu-system-x86), which the
# other tests and figures are measured with, so only qemu-system-arm and
# its data files are unpacked to $qb (package image/vm's BackportsQEMU);
# the libraries it links are bookworm's and apt installs those by name.
qb=$fw_dir/qemu-backports
if "$qb/usr/bin/qemu-system-aarch64" -machine help 2>/dev/null | grep -q '^raspi4b '; then
	:
elif [ "$(id -u)" != 0 ]; then
	echo "deps: $qb missing, so the raspi4b QEMU test skips; run scripts/deps.sh as root" >&2
else
	echo "deps: downloading qemu-system-arm from Debian bookworm-backports (QEMU 10, for raspi4b) to $qb"
	fetch_tmp
	qb_tmp=$tmp
	apt_fetch "$qb_tmp" bookworm-backports main qemu-system-arm/bookworm-backports qemu-system-data/bookworm-backports
	mkdir "$qb_tmp/root"
	for d in "$qb_tmp"/qemu-system-*.deb; do dpkg-deb -x "$d" "$qb_tmp/root"; done
	libs=$(dpkg-deb -f "$qb_tmp"/qemu-system-arm_*.deb Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g' | grep '^lib' || true)
	missing=()
	for l in $libs; do dpkg -s "$l" >/dev/null 2>&1 || missing+=("$l"); done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "deps: installing ${missing[*]} (libraries of QEMU 10) with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
	fi
	"$qb_tmp/root/usr/bin/qemu-system-aarch64" -machine help | grep -q '^raspi4b ' || {
		echo "deps: the backports QEMU has no raspi4b machine" >&2
		exit 1
	}
	rm -rf "$qb"
	mv "$qb_tmp/root" "$qb"
fi
echo "deps: downloading Go modules"
go mod download
