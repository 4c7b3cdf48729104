# Shared by scripts/localnet.sh and scripts/run-image.sh (sourced).

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# first PATTERN FILE: the first line of FILE containing PATTERN (no pipes:
# under pipefail a reader that stops early kills the writer with SIGPIPE).
first() {
	local line
	while IFS= read -r line; do
		case $line in *"$1"*) echo "$line"; return 0 ;; esac
	done <"$2"
	return 1
}

# Background processes started with `bg_start CMD...` are stopped on exit.
pids=()
bg_start() {
	"$@" &
	pids+=($!)
}
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# wait_file FILE LOG: wait up to 10 s for FILE to be non-empty.
wait_file() {
	for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
	cat "$2" >&2
	echo "$1 did not appear (log above)" >&2
	return 1
}
