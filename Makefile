# PC2: see README.md. `make run` and `make test` install what they need.
SHELL := /bin/bash
# /usr/sbin and /sbin: daemons the tests start (avahi-daemon, nginx) live
# there, and not every root shell has them in its PATH.
export PATH := $(PATH):/usr/local/go/bin:/usr/sbin:/sbin
GO ?= go
# Packages whose concurrency matters run under the race detector.
RACE_PKGS := ./provisioning/... ./services/... ./cmd/pc2/cli/ ./appliance/...

.PHONY: all build test lint run run-localnet image-x86 image-rpi bench bench-appliance bench-relay bench-throughput bench-gateway bench-realpath bench-soak bench-cloud bench-backup bench-faults fuzz deps clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(GO) build -o bin/pc2 ./cmd/pc2

lint: deps
	@echo "==> gofmt"; out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@echo "==> go vet"; $(GO) vet ./...
	@echo "==> staticcheck"; $(GO) tool staticcheck ./...

# The whole suite: lint, unit + loopback tests (including the fuzz seed
# corpora), the race detector where it matters, and the local-network smoke
# test of `make run`.
test: lint
	@echo "==> go test (unit, in-process networks, real processes on loopback)"
	$(GO) test -count=1 -timeout 40m ./...
	@echo "==> go test -race"
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)
	@echo "==> make run smoke tests (local network; appliance image in QEMU)"
	PC2_RUN_CHECK=1 PC2_LOCALNET_DIR=$$(mktemp -d) scripts/localnet.sh
	PC2_RUN_CHECK=1 PC2_RUN_DIR=$$(mktemp -d) scripts/run-image.sh

# Build the x86 personal image, boot it in QEMU with a supernode on the host.
run: deps
	scripts/run-image.sh

# Three supernodes and a published identity on loopback, no VM.
run-localnet: deps
	scripts/localnet.sh

image-x86: build
	bin/pc2 image build --board x86 --profile $${PROFILE:-personal} $${SETTINGS:+--settings $$SETTINGS} -o out/pc2-x86.img

image-rpi: build
	bin/pc2 image build --board rpi --profile $${PROFILE:-personal} $${SETTINGS:+--settings $$SETTINGS} -o out/pc2-rpi.img

bench: deps
	$(GO) test -run '^$$' -bench 'SimNetwork|Store' -benchtime 1x -timeout 30m ./services/dht/
	$(GO) test -run '^$$' -bench . -cpu 1 ./services/dht/records/
	$(MAKE) bench-appliance
	$(MAKE) bench-relay
	$(MAKE) bench-throughput
	$(MAKE) bench-gateway
	$(MAKE) bench-realpath
	$(MAKE) bench-soak
	$(MAKE) bench-cloud
	$(MAKE) bench-backup
	$(MAKE) bench-faults

# Issue 3's appliance figures (docs/benchmarks.md, "Appliance"): image sizes,
# boot times and idle memory in QEMU (as root, one VM at a time), cold and
# warm image builds. 15 to 25 minutes; run it on an otherwise idle machine.
bench-appliance: deps
	$(GO) test -run '^$$' -bench Appliance -benchtime 1x -timeout 90m -v ./qemu-tests/

# Issues 4 and 21's relay figures (docs/benchmarks.md, "Relay: 10,000
# attached nodes"): 10,000 tunnel clients attached to one supernode on
# loopback, its memory per node, the latency of streams to the nodes,
# and the attach storm after the supernode restarts. About 4 minutes;
# it needs RLIMIT_NOFILE of about 12,000 per process, 6 GB of RAM and
# an otherwise idle machine (-scale.nodes 2000 for a smaller one).
bench-relay: deps
	$(GO) test -run '^$$' -bench RelayScale -benchtime 1x -timeout 60m -v ./services/tunnel/

# Issue 4's one-stream throughput (docs/benchmarks.md, "Relay: one-stream
# throughput vs frp"): direct TCP, the relay's variants and frp (built once
# from the Go module proxy into ~/.cache/pc2) on loopback, three transfers
# of at least 1 GiB and 3 s per path. About 2 minutes; each transfer
# waits until other processes leave the CPUs idle.
bench-throughput: deps
	$(GO) test -run '^$$' -bench RelayThroughput -benchtime 3x -timeout 30m ./services/tunnel/

# Issues 5 and 18's requests per second (docs/benchmarks.md, "Gateway:
# requests per second vs frp, Caddy and nginx" and "Gateway: end-to-end
# TLS"): wrk (50 and 200 keep-alive connections, 10 s runs, a 13-byte
# answer) straight to a node, through the gateway and relay over HTTP and
# HTTPS (terminated by the gateway, or spliced to the node, which
# terminates TLS itself), through frp's subdomain vhost, Caddy (built once
# from the Go module proxy into ~/.cache/pc2) and nginx, plain and
# terminating TLS; and a TLS handshake per request on the HTTPS paths.
# Three runs per path and load. About 20 minutes (3 more the first time
# Caddy is built); each run waits until other processes leave the CPUs
# idle.
bench-gateway: deps
	$(GO) test -run '^$$' -bench GatewayRPS -benchtime 3x -timeout 90m ./services/gateway/

# Issue 21's real path (docs/benchmarks.md, "The real path"): `pc2
# supernode` and `pc2 node` as processes from their configs, the node
# relayed and serving a 14-byte public file from disk; wrk with 50, 200
# and 1,000 keep-alive connections through the gateway, beside frp's
# vhost, Caddy and nginx proxying to the node's listener, the node's
# listener itself and a bare Go file server; and one stream of raw TCP
# (iperf3) through the relay's mapped port beside frp's tcp proxy with and
# without tcpMux. Three 10 s runs per path and load; about 12 minutes
# (more the first time frp and Caddy are built).
bench-realpath: deps
	$(GO) test -run '^$$' -bench RealPath -benchtime 3x -timeout 60m ./cmd/pc2/

# Issue 21's soak (docs/benchmarks.md, "Soak"): an hour of `pc2
# supernode` with alice's `pc2 node` and 1,000 more nodes, a tenth of
# them flapping each minute, visitors at half the gateway's capacity,
# names claimed and released; writes the samples and the dashboard's
# panels to docs/soak/. -soak.duration etc. for a shorter one.
bench-soak: deps
	$(GO) test -run '^$$' -bench Soak -benchtime 1x -timeout 90m ./cmd/pc2/ -soak.out $(CURDIR)/docs/soak

# Issue 6's personal cloud figures (docs/benchmarks.md, "Personal cloud"):
# 1 GiB uploads and downloads through the cloud's handlers on loopback,
# each paired with the same bytes written straight to the data dir's disk,
# the memory an upload takes, and the weight of the owner's pages. About
# 1 minute; it needs 3 GiB free in $TMPDIR (or /tmp), which must be a disk,
# not tmpfs. Each iteration waits until other processes leave the CPUs and
# the disk idle.
bench-cloud: deps
	$(GO) test -run '^$$' -bench Cloud -benchtime 5x -timeout 30m ./services/cloud/

# Issue 17's backup figures (docs/benchmarks.md, "Backup and restore
# throughput"): 1 GiB of mixed files backed up to a restic REST server on
# loopback, beside plain copies on the same disk; a second backup after
# 1 % changed; a restore. About 1 minute; PC2_BENCH_BACKUP_MB=64 for less.
# The node's memory during a backup on the arm64 image is
# `go test -run '^$$' -bench ApplianceBackupMemory -benchtime 1x ./qemu-tests/`.
bench-backup: deps
	$(GO) test -run '^$$' -bench BackupThroughput -benchtime 1x -timeout 30m -v ./services/backup/

# Issue 21's network faults (docs/benchmarks.md, "Network faults: netem on
# the public segment"): TestGatewayNAT's scenario over HTTP (supernodes A
# and B, alice's node behind NAT relayed by B, the user's client), clean
# and then with 1 % loss, 50 ms delay and 10 ms jitter on the public
# segment of the namespace topology (netem, or nattest's user-space
# emulator on kernels without it): the gateway's p50/p99 over 2,000 GETs,
# reattach after flaps of alice's uplink, failover when B dies. As root;
# about 4 minutes. Other faults: the same go test with -faults.delay,
# -faults.jitter, -faults.loss (and -faults.requests, -faults.flaps).
bench-faults: deps
	$(GO) test -run '^$$' -bench Faults -benchtime 1x -timeout 30m -v ./e2e/

# Short fuzzing runs of every fuzz target (the seed corpora run in `make test`).
# Every fuzz target of a parser of untrusted input, 30 s each (the seed
# corpora also run in `make test`).
FUZZ_TARGETS := \
	FuzzParseDID:./provisioning/identity/ \
	FuzzValidate:./services/dht/records/ \
	FuzzParseClaim:./services/dht/records/ \
	FuzzReadMessage:./services/relay/ \
	FuzzReadTLSHeader:./services/relay/ \
	FuzzReadLine:./services/tunnel/ \
	FuzzReadClaim:./services/gateway/ \
	FuzzSkeletonOf:./services/gateway/ \
	FuzzParseBindingResponse:./services/stun/ \
	FuzzParseUsername:./services/turn/ \
	FuzzVerify:./appliance/update/manifest/ \
	FuzzClean:./services/cloud/files/ \
	FuzzParse:./services/netconf/ \
	FuzzParseMountinfo:./image/flash/ \
	FuzzPeek:./services/gateway/sni/

fuzz: deps
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "==> $${t%%:*} in $${t#*:}"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $${FUZZTIME:-30s} "$${t#*:}"; \
	done

clean:
	rm -rf bin run out
