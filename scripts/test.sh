#!/usr/bin/env bash
# The whole test suite: format, lints, unit and integration tests (the integration
# tests start the real daemons: RocksDB, openraft, rustls and glommio for real).
# Cargo's target dir lives outside the clone so that reruns are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xtsync-target}"
export CARGO_TERM_COLOR=never
start=$(date +%s)
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
# The same replication on Debian's 6.1 (kTLS) and 5.10 (no kTLS) kernels under qemu,
# and on this host, with the debug binaries nextest just built (benches' tls-stream
# too: its integration test makes nextest build it with the same features).
bash scripts/kernel-matrix.sh
echo "test suite finished in $(( $(date +%s) - start )) s"
