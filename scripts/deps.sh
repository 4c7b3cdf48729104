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
# the boot partition with fsck.fat and mtools.
declare -A cmd_pkg=(
	[git]=git [make]=make [curl]=curl
	[mksquashfs]=squashfs-tools [mkfs.ext4]=e2fsprogs [syslinux]=syslinux
	[qemu-system-x86_64]=qemu-system-x86 [qemu-system-aarch64]=qemu-system-arm
	[fsck.fat]=dosfstools [mtype]=mtools
)
for c in "${!cmd_pkg[@]}"; do
	have "$c" || need_apt+=("${cmd_pkg[$c]}")
done
file_pkg() { [ -e "$1" ] || need_apt+=("$2"); }
file_pkg /usr/lib/systemd/boot/efi/systemd-bootx64.efi systemd-boot-efi
file_pkg /usr/lib/SYSLINUX/gptmbr.bin syslinux
file_pkg /usr/share/OVMF/OVMF_CODE_4M.fd ovmf
if [ ${#need_apt[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing ${need_apt[*]}; run as root or install them with apt-get" >&2
		exit 1
	fi
	echo "deps: installing ${need_apt[*]} with apt-get"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
echo "deps: downloading Go modules"
go mod download
