#!/usr/bin/env bash
# Issue 3, figure 4: a network cut in the middle of a large transfer between network
# namespaces (the target site behind a veth link that goes down), completion without
# restarting the file from zero. The suite's test (tools/xtsyncctl/tests/netcut.rs) with
# the figure's size and cut: 2 GiB, 30 s (the suite runs 400 MiB and 35 s).
#   perf/netcut.sh [MIB] [CUT_S]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/xtsync-target}
export XTSYNC_NETCUT_MIB=${1:-2048} XTSYNC_NETCUT_CUT_S=${2:-30}
cargo build --workspace --bins --locked
cargo nextest run -p xtsyncctl --test netcut --locked --no-capture 2>&1 | grep -E "^netcut |PASS|FAIL|panicked"
