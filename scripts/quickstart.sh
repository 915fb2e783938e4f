#!/usr/bin/env bash
# Builds xtsync and runs `xtsyncctl quickstart` on embedded defaults: a coordinator and
# two workers on loopback replicating a sample tree (or --source DIR) to --target DIR,
# continuously until Ctrl-C, or once with --once. Arguments go to the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xtsync-target}"
cargo build --release --locked -p xtsyncctl -p xtsync-worker -p xtsync-coordinator >&2
exec "$CARGO_TARGET_DIR/release/xtsyncctl" quickstart "$@"
