#!/usr/bin/env bash
# Starts a local PC2 network on loopback: three supernodes, an operator
# domain, and a published identity with a name. Prints what to try next and
# runs until Ctrl-C. With PC2_RUN_CHECK=1 it resolves everything itself and
# exits (make test runs it that way).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${PC2_LOCALNET_DIR:-$root/run/localnet}
bin=$root/bin/pc2
domain=pc2.test

. scripts/lib.sh

say "building pc2"
mkdir -p "$(dirname "$bin")"
go build -o "$bin" ./cmd/pc2

rm -rf "$work/sn0/addrs" "$work/sn1/addrs" "$work/sn2/addrs"
mkdir -p "$work"

key() { # key FILE -> prints DID, creating the key once
	if [ ! -f "$1" ]; then
		"$bin" identity new --key "$1" >"$1.words" 2>/dev/null
		chmod 600 "$1.words"
	fi
	local out
	out=$("$bin" identity show --key "$1")
	echo "${out%%$'\n'*}"
}

op_did=$(key "$work/operator.key")
boot=""
for i in 0 1 2; do
	d=$work/sn$i
	mkdir -p "$d"
	key "$d/node.key" >/dev/null
	bootjson="[]"
	[ -n "$boot" ] && bootjson="[\"$boot\"]"
	cat >"$d/supernode.json" <<JSON
{
  "key_file": "$d/node.key",
  "listen": ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"],
  "bootstrap": $bootjson,
  "data_dir": "$d/data",
  "allow_private_dials": true,
  "domains": [{"domain": "$domain", "operator": "$op_did"}],
  "addrs_file": "$d/addrs"
}
JSON
	say "starting supernode $i (log: $d/log)"
	bg_start "$bin" supernode --config "$d/supernode.json" >"$d/log" 2>&1
	wait_file "$d/addrs" "$d/log"
	if [ -z "$boot" ]; then boot=$(first /tcp/ "$d/addrs"); fi
done
b1=$(first /quic-v1/ "$work/sn1/addrs")
b2=$(first /tcp/ "$work/sn2/addrs")

alice_did=$(key "$work/alice.key")
say "publishing alice's identity $alice_did"
"$bin" publish --key "$work/alice.key" --bootstrap "$boot" \
	--direct /ip4/127.0.0.1/tcp/4200 --service cloud=http://127.0.0.1:4200 --name "alice.$domain"
"$bin" publish domain --operator-key "$work/operator.key" --domain "$domain" --bootstrap "$b1"
"$bin" publish name --operator-key "$work/operator.key" --key "$work/alice.key" --name "alice.$domain" --bootstrap "$b1"

if [ "${PC2_RUN_CHECK:-}" = 1 ]; then
	say "checking: resolve through supernode 2"
	out=$("$bin" resolve --bootstrap "$b2" "$alice_did")
	[[ $out == *"\"did\": \"$alice_did\""* ]] || { echo "$out"; echo "resolve $alice_did: wrong record" >&2; exit 1; }
	out=$("$bin" resolve --bootstrap "$b1" "alice.$domain")
	[[ $out == *'"status": "active"'* ]] || { echo "$out"; echo "resolve alice.$domain: not active" >&2; exit 1; }
	say "local network OK"
	exit 0
fi

cat <<EOF_MSG

A local PC2 network is running: three supernodes on loopback.
  supernode 0: $boot
  supernode 1: $b1
  supernode 2: $b2
  alice:       $alice_did  (name alice.$domain, words in $work/alice.key.words)

Try:
  $bin resolve --bootstrap $b2 $alice_did
  $bin resolve --bootstrap $boot alice.$domain
  $bin identity new --key /tmp/me.key && $bin publish --key /tmp/me.key --bootstrap $b1

Logs are in $work/sn*/log. Press Ctrl-C to stop.
EOF_MSG
wait
