#!/usr/bin/env bash
# The whole test suite: format, lints, unit and integration tests (the integration
# tests start the real daemons: RocksDB, openraft, rustls and glommio for real), the
# workspace's shape (tools/testkit/tests/layout.rs) and the kernel matrix under qemu.
# Cargo's target dir lives outside the clone so that reruns are incremental.
#
# RocksDB (librocksdb-sys) is compiled once per cold run: clippy runs with the test
# profile (`--profile test`), so its build scripts and their host dependencies are the
# very units the test build uses (under the default dev profile, cargo builds every
# build script again for the tests, and librocksdb-sys compiles RocksDB a second time).
# Every binary the tests start is built by the test build itself: each package that
# ships a binary has integration tests, and cargo builds a package's binaries for its
# integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xtsync-target}"
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)"; }
step "cargo fmt"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --profile test --locked -- -D warnings
step "perf harness unit tests"
python3 -m unittest discover -s perf/tests
step "cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast
# The same replication on Debian's 6.1 (kTLS) and 5.10 (no kTLS) kernels under qemu,
# and on this host, with the debug binaries nextest just built (benches' tls-stream
# too: its integration test makes nextest build it with the same features).
step "kernel matrix"
bash scripts/kernel-matrix.sh
echo "test suite finished in $(( $(date +%s) - start )) s"
