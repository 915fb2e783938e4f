#!/usr/bin/env bash
# Installs what building and testing xtsync needs on Debian 12 (run as root, or with
# sudo available). Idempotent and quick when everything is already there.
#   libclang-dev, clang : bindgen for the RocksDB build (librocksdb-sys)
#   rsync, netcat-openbsd, e2fsprogs : the peers and workloads of perf/
#   testssl.sh (and openssl) : the TLS scan of tools/xtsyncctl/tests/tls_scan.rs
#   cargo-nextest : the test runner (from crates.io when missing)
set -euo pipefail

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v mke2fs >/dev/null 2>&1 || need+=(e2fsprogs)
command -v testssl >/dev/null 2>&1 || need+=(testssl.sh)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
