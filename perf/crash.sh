#!/usr/bin/env bash
# Issue 3, figure 3: >= 100 kill -9s of a random daemon at random moments while a tree
# of mixed small and large files replicates continuously; after each restart the job
# goes on, at the end the target is identical to the source, the observer never read a
# file that was not a source version, and no protocol violation was logged. This is the
# suite's crash test (tools/xtsyncctl/tests/crash.rs) with its full count of kills.
#   perf/crash.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/xtsync-target}
export XTSYNC_CRASH_KILLS=${1:-100}
[ -n "${2:-}" ] && export XTSYNC_CRASH_SEED=$2
cargo build --workspace --bins --locked
cargo nextest run -p xtsyncctl --test crash --locked --no-capture 2>&1 | grep -E "^(crash test seed|killed:)|PASS|FAIL|panicked"
