#!/usr/bin/env bash
# make run: builds the x86 personal appliance image, starts a local
# supernode on the host, boots the image in QEMU (TCG, UEFI) and prints what
# to open. Runs until Ctrl-C. With PC2_RUN_CHECK=1 it checks that the node
# came online and published its DID through the host's supernode, then
# exits (make test runs it that way).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${PC2_RUN_DIR:-$root/run/image}
bin=$root/bin/pc2
. scripts/lib.sh

if ! command -v qemu-system-x86_64 >/dev/null; then
	echo "make run needs qemu-system-x86 and ovmf (as root on Debian, scripts/deps.sh installs them)" >&2
	exit 1
fi

say "building pc2"
mkdir -p "$work" "$(dirname "$bin")"
go build -o "$bin" ./cmd/pc2


sn=$work/supernode
mkdir -p "$sn"
[ -f "$sn/node.key" ] || "$bin" identity new --key "$sn/node.key" >"$sn/node.key.words" 2>/dev/null
# The supernode's web gateway serves names under pc2.localhost (browsers
# resolve *.localhost to this machine), granted with a local operator key.
[ -f "$sn/operator.key" ] || "$bin" identity new --key "$sn/operator.key" >"$sn/operator.key.words" 2>/dev/null
operator=$(head -1 "$sn/operator.key.words")
domain=pc2.localhost
gw_port=${PC2_RUN_GATEWAY_PORT:-8080}
if (exec 3<>/dev/tcp/127.0.0.1/"$gw_port") 2>/dev/null; then gw_port=$((20000 + RANDOM % 20000)); fi
# Plain HTTP on the host: the domain's record says its gateways terminate
# TLS ("gateway"), so the image's node orders no certificate.
cat >"$sn/supernode.json" <<JSON
{"key_file": "$sn/node.key", "listen": ["/ip4/127.0.0.1/tcp/0"], "data_dir": "$sn/data", "addrs_file": "$sn/addrs", "allow_private_dials": true,
 "domains": [{"domain": "$domain", "operator": "$operator"}],
 "gateway": {"http_listen": "127.0.0.1:$gw_port", "operator_keys": {"$domain": "$sn/operator.key"}, "tls": {"$domain": "gateway"}}}
JSON
rm -f "$sn/addrs"
say "starting a supernode on the host (log: $sn/log)"
bg_start "$bin" supernode --config "$sn/supernode.json" >"$sn/log" 2>&1
wait_file "$sn/addrs" "$sn/log"
host_addr=$(first /tcp/ "$sn/addrs")
guest_addr=${host_addr/\/ip4\/127.0.0.1\//\/ip4\/10.0.2.2\/}

cat >"$work/settings.json" <<JSON
{"profile": "personal", "hostname": "pc2", "supernodes": ["$guest_addr"],
 "name_services": [{"domain": "$domain", "api": "http://10.0.2.2:$gw_port"}]}
JSON
# The node's key is made here (and provisioned on the image's perm
# partition) so this script can claim the node's name with it.
[ -f "$work/node.key" ] || "$bin" identity new --key "$work/node.key" >"$work/node.key.words" 2>/dev/null
say "building the x86 personal image (first build compiles for a minute)"
"$bin" image build --board x86 --settings "$work/settings.json" --key "$work/node.key" -o "$work/pc2.img"

port=${PC2_RUN_PORT:-4200}
if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then port=$((20000 + RANDOM % 20000)); fi
say "booting it in QEMU (serial console: $work/serial.log)"
bg_start "$bin" image run --image "$work/pc2.img" --forward "4200:$port" >"$work/serial.log" 2>&1

url=http://127.0.0.1:$port
status=""
for _ in $(seq 900); do
	status=$(curl -fsS "$url/api/status" 2>/dev/null || true)
	[[ $status == *'"state":"online"'* ]] && break
	kill -0 "${pids[1]}" 2>/dev/null || { tail -50 "$work/serial.log"; echo "QEMU exited" >&2; exit 1; }
	sleep 0.2
done
[[ $status == *'"state":"online"'* ]] || { tail -50 "$work/serial.log"; echo "node did not come online: $status" >&2; exit 1; }
did=${status#*\"did\":\"}; did=${did%%\"*}

name=${PC2_RUN_NAME:-alice}.$domain
say "claiming $name for the node through the gateway's names API"
"$bin" name claim --key "$work/node.key" --api "http://127.0.0.1:$gw_port" "$name" >/dev/null
friendly=http://$name:$gw_port
for _ in $(seq 150); do
	curl -fsS --resolve "$name:$gw_port:127.0.0.1" "$friendly/api/status" >/dev/null 2>&1 && break
	sleep 0.2
done

if [ "${PC2_RUN_CHECK:-}" = 1 ]; then
	say "checking: the host resolves $did"
	out=$("$bin" resolve --bootstrap "$host_addr" "$did")
	[[ $out == *"\"did\": \"$did\""* ]] || { echo "$out"; echo "resolve failed" >&2; exit 1; }
	say "checking: $friendly reaches the node through the gateway"
	page=$(curl -fsS --resolve "$name:$gw_port:127.0.0.1" "$friendly/api/status")
	[[ $page == *"\"did\":\"$did\""* ]] || { echo "$page"; echo "friendly URL failed" >&2; exit 1; }
	say "checking: the personal cloud opens its setup wizard"
	wiz=$(curl -fsS "$url/_/setup")
	[[ $wiz == *'id="keep"'* ]] || { echo "$wiz" | head -20; echo "setup wizard missing" >&2; exit 1; }
	say "appliance image OK"
	exit 0
fi

cat <<MSG

The PC2 appliance is running in QEMU.
  personal cloud: $url   (first the setup wizard: keep the identity, set the
                 owner password, claim ${name%%.*} at $domain; status as JSON: $url/api/status)
  friendly URL:   $friendly   (through the supernode's web gateway and relay)
  node DID:       $did
  supernode:      $host_addr

Try:
  $bin resolve --bootstrap $host_addr $did
  $bin name show --api http://127.0.0.1:$gw_port $name

Serial console: $work/serial.log. Press Ctrl-C to stop.
(make run-localnet starts a three-supernode network on loopback instead.)
MSG
wait
