#!/usr/bin/env bash
# The kernel matrix: the real replication (`xtsyncctl quickstart --once`, a coordinator
# and two workers on loopback) on three kernels, each followed by an independent
# comparison of source and target (type, mode, size, link count, mtime, SHA-256, link
# target of every path):
#   - Debian bookworm's current 6.1 kernel under qemu (TCG): kTLS as a module, which the
#     guest loads (gf128mul ghash-generic ctr gcm seqiv cryptd crypto_simd aesni-intel
#     tls); the data plane must use kernel TLS;
#   - Debian bullseye's current 5.10 kernel under qemu (TCG): no kTLS in that kernel; the
#     data plane must fall back to userspace TLS;
#   - the host kernel, natively.
# Prints one line per kernel, `KERNEL <release> tls=<kernel|userspace|...> result=<pass|fail>`
# (and, on the kernel with kTLS, `KTLS-OFF ...` for the same pass with transfer.ktls off,
# and `KTLS-SENDFILE ... sendfile_bytes=N ...` for it with compression off, where the
# kernel sends every chunk from the file; both targets must be identical; a kTLS pass
# must have sent bytes by sendfile, a userspace one none), and exits non-zero unless every line says pass with
# the expected tls and every target has the same content.
#
# Kernels come from deb.debian.org through a private apt configuration (own sources,
# lists, cache and status under $XTSYNC_KERNEL_CACHE; the host's apt sources are not
# touched) and are cached there, extracted; the apt lists are refreshed at most once a
# day. The guest is a busybox-static initramfs carrying stripped copies of the debug
# binaries of the workspace (built by `cargo nextest run --workspace` in scripts/test.sh)
# and their shared libraries.
#
# Environment:
#   CARGO_TARGET_DIR            where the binaries are (default /var/tmp/xtsync-target; uses debug/)
#   XTSYNC_BIN_DIR              the directory of xtsyncctl, xtsync-worker, xtsync-coordinator
#                               (default $CARGO_TARGET_DIR/debug)
#   XTSYNC_KERNEL_CACHE         kernel and apt cache (default /var/tmp/xtsync-kernels)
#   XTSYNC_KMATRIX_KERNELS      which guests to boot (default "6.1 5.10"; "" for none)
#   XTSYNC_KMATRIX_HOST         1 (default) runs the host leg, 0 skips it
#   XTSYNC_KMATRIX_TIMEOUT      seconds per qemu run (default 600)
#   XTSYNC_KMATRIX_SMP          guest CPUs (default 1)
#   XTSYNC_KMATRIX_KEEP         1 keeps the run directory (logs, initramfs) after a pass
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${XTSYNC_KERNEL_CACHE:-/var/tmp/xtsync-kernels}
BIN_DIR=${XTSYNC_BIN_DIR:-${CARGO_TARGET_DIR:-/var/tmp/xtsync-target}/debug}
KERNELS=${XTSYNC_KMATRIX_KERNELS-6.1 5.10}
RUN_HOST=${XTSYNC_KMATRIX_HOST:-1}
QEMU_TIMEOUT=${XTSYNC_KMATRIX_TIMEOUT:-600}
SMP=${XTSYNC_KMATRIX_SMP:-1}
MIRROR=http://deb.debian.org
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# The modules kTLS needs, in load order (each one's modules.dep dependencies go first).
KTLS_MODULES=(gf128mul ghash-generic ctr gcm seqiv cryptd crypto_simd aesni-intel tls)
BINARIES=(xtsyncctl xtsync-worker xtsync-coordinator tls-stream)
M=XTSYNC-KMATRIX # marker prefix of the lines the guest prints for us

log() { echo "kernel-matrix: $*" >&2; }
die() { log "$*"; exit 1; }

# --- tools -------------------------------------------------------------------------

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
PATH=$PATH:/sbin:/usr/sbin
command -v depmod >/dev/null 2>&1 || need+=(kmod)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

for b in "${BINARIES[@]}"; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing (build the workspace: cargo build --workspace)"
done
KTLS_ARGS="--ktls auto"

mkdir -p "$CACHE"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/xtsync-kmatrix.XXXXXX")
trap 'rc=$?; [ "$rc" = 0 ] || log "failed (exit $rc); logs in $RUN"' EXIT

# --- kernels -----------------------------------------------------------------------

# apt_private SUITE ARGS...: apt with its own sources, lists, cache and (empty) status
# under $CACHE/apt-SUITE; the host's apt configuration of sources and pins is not used.
apt_private() {
  local suite=$1 cmd=$2 d="$CACHE/apt-$1"
  shift 2
  "$cmd" -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts="$d/sources.list.d" \
    -o Dir::Etc::Preferences="$d/preferences" -o Dir::Etc::PreferencesParts="$d/preferences.d" \
    -o Dir::State::Lists="$d/lists" -o Dir::State::status="$d/status" -o Dir::Cache="$d/cache" \
    -o APT::Sandbox::User=root -o Acquire::Languages=none -o Acquire::Retries=3 "$@"
}

# fetch_kernel SUITE SERIES: the current linux-image-SERIES.*-amd64 of SUITE, extracted
# to $CACHE/kernels/PACKAGE_VERSION (vmlinuz, modules.dep, the crypto and tls modules);
# prints that directory.
fetch_kernel() {
  local suite=$1 series=$2 d="$CACHE/apt-$1"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/sources.list.d" "$d/preferences.d"
  [ -e "$d/status" ] || : >"$d/status"
  printf 'deb [signed-by=%s] %s/debian %s main\ndeb [signed-by=%s] %s/debian-security %s-security main\n' \
    "$KEYRING" "$MIRROR" "$suite" "$KEYRING" "$MIRROR" "$suite" >"$d/sources.list.new"
  cmp -s "$d/sources.list.new" "$d/sources.list" || rm -f "$d/lists.stamp"
  mv "$d/sources.list.new" "$d/sources.list"
  # The lists are refreshed at most once a day (and whenever the sources changed).
  if [ -z "$(find "$d" -maxdepth 1 -name lists.stamp -mmin -1440)" ]; then
    if apt_private "$suite" apt-get update -qq -o APT::Update::Error-Mode=any >"$d/update.log" 2>&1; then
      touch "$d/lists.stamp"
    else
      log "apt-get update for $suite failed (see $d/update.log); trying the cached lists and kernels"
    fi
  fi
  local pkg="" version="" dir
  pkg=$(apt_private "$suite" apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
  if [ -n "$pkg" ]; then
    version=$(apt_private "$suite" apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }') || true
  fi
  if [ -z "$pkg" ] || [ -z "$version" ] || [[ $pkg != linux-image-"$series".* ]]; then
    # The mirror is unreachable and nothing is known: use the newest cached kernel.
    dir=$(find "$CACHE/kernels" -maxdepth 1 -name "linux-image-$series.*" -exec test -e '{}/.done' ';' -print 2>/dev/null |
      sort -V | tail -n 1) || true
    [ -n "$dir" ] || die "cannot resolve linux-image-$series.*-amd64 in $suite (got '$pkg' '$version')"
    log "using the cached $(basename "$dir")"
    echo "$dir"
    return
  fi
  dir="$CACHE/kernels/${pkg}_$version"
  if [ ! -e "$dir/.done" ]; then
    log "downloading $pkg $version ($suite)"
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && apt_private "$suite" apt-get download -qq "$pkg=$version" >/dev/null)
    local deb
    deb=$(echo "$dir.tmp"/*.deb)
    # dpkg-deb -x of only what the guest needs: vmlinuz, modules.dep/.builtin and the
    # module directories of the kTLS chain.
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir.tmp" --wildcards \
      './boot/vmlinuz-*' './lib/modules/*/modules.dep' './lib/modules/*/modules.builtin' \
      './lib/modules/*/kernel/crypto/*' './lib/modules/*/kernel/arch/x86/crypto/*' \
      './lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/net/tls/*' 2>/dev/null || true
    rm -f "$deb"
    [ -n "$(find "$dir.tmp/boot" -name 'vmlinuz-*' 2>/dev/null)" ] || die "no vmlinuz in $pkg $version"
    echo "$pkg $version $suite" >"$dir.tmp/package"
    touch "$dir.tmp/.done"
    mv "$dir.tmp" "$dir"
    # Older versions of this series are not needed any more.
    find "$CACHE/kernels" -mindepth 1 -maxdepth 1 -name "linux-image-$series.*" ! -path "$dir" -exec rm -rf {} +
  fi
  # The package does not ship modules.dep (its postinst runs depmod): make it for the
  # extracted modules.
  if [ ! -s "$(echo "$dir"/lib/modules/*)/modules.dep" ]; then
    # (It warns about the files not extracted: modules.order, modules.builtin.modinfo.)
    depmod -b "$dir" "$(basename "$(echo "$dir"/lib/modules/*)")" 2>/dev/null || true
    [ -s "$(echo "$dir"/lib/modules/*)/modules.dep" ] || die "depmod made no modules.dep in $dir"
  fi
  echo "$dir"
}

# module_chain KDIR NAME...: the .ko paths (relative to lib/modules/REL) to insmod for
# NAME..., dependencies first, each once; names built into the kernel are skipped.
module_chain() {
  local kdir=$1 moddir
  shift
  moddir=$(echo "$kdir"/lib/modules/*)
  local -A seen=()
  local out=()
  visit() {
    local path=$1 dep
    [ -n "${seen[$path]:-}" ] && return
    seen[$path]=1
    # modules.dep: "path: dep1 dep2 ..."
    while read -r dep; do
      [ -z "$dep" ] || visit "$dep"
    done < <(awk -F': *' -v p="$path" '$1 == p { print $2 }' "$moddir/modules.dep" | tr ' ' '\n')
    out+=("$path")
  }
  local name path
  for name in "$@"; do
    path=$(awk -F: -v n="$name" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.(xz|zst|gz))?$/, "", f) } f == n { print $1; exit }' "$moddir/modules.dep")
    if [ -z "$path" ]; then
      if grep -Eq "/$name\.ko" "$moddir/modules.builtin"; then
        log "$(basename "$moddir"): $name is built in"
      else
        log "$(basename "$moddir"): no module $name"
      fi
      continue
    fi
    visit "$path"
  done
  printf '%s\n' "${out[@]}"
}

# --- the test that runs in each guest and on the host --------------------------------

# run.sh BIN_DIR SOURCE WORK_DIR TIMEOUT_S [QUICKSTART_ARGS...]: POSIX sh for busybox and
# the host alike; prints marker lines.
cat >"$RUN/run.sh" <<'EOF'
M=${KMATRIX_MARK:-XTSYNC-KMATRIX}
bin=$1 src=$2 work=$3 limit=$4
shift 4
# One line per path below DIR: path|type|mode|size|links|mtime|sha256 (regular files),
# path|d|mode|mtime (directories), path|l|target (symlinks).
manifest() (
  cd "$1" || exit 1
  find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r p; do
    case $(stat -c %F "$p") in
      "regular file"|"regular empty file")
        echo "$p|f|$(stat -c '%a|%s|%h|%Y' "$p")|$(sha256sum <"$p" | cut -d' ' -f1)" ;;
      directory) echo "$p|d|$(stat -c '%a|%Y' "$p")" ;;
      "symbolic link") echo "$p|l|$(readlink "$p")" ;;
      *) echo "$p|?|$(stat -c '%F|%a' "$p")" ;;
    esac
  done
)
rm -rf "$work/state" "$work/target"
mkdir -p "$work/state"
start=$(cut -d' ' -f1 /proc/uptime)
timeout "$limit" "$bin/xtsyncctl" quickstart --source "$src" --target "$work/target" \
  --state "$work/state" --once --json --cores 1 "$@" >"$work/qs.out" 2>"$work/qs.err"
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
echo "$M-QS-TIME $start $end"
sed "s/^/$M-QS-STDOUT /" "$work/qs.out"
sed "s/^/$M-QS-STDERR /" "$work/qs.err"
echo "$M-QS-RC $rc"
if [ "$rc" -ne 0 ]; then
  for f in "$work"/state/logs/*.log; do
    [ -e "$f" ] || continue
    tail -n 40 "$f" | sed "s|^|$M-LOG $(basename "$f"): |"
  done
fi
manifest "$src" >"$work/source.manifest"
manifest "$work/target" >"$work/target.manifest" 2>/dev/null
n=$(wc -l <"$work/source.manifest")
# Content digest (no mtimes): the same tree must come out on every kernel.
digest=$(sed 's/^\(.*|f|[^|]*|[^|]*|[^|]*\)|[^|]*|\(.*\)$/\1|\2/; s/^\(.*|d|[^|]*\)|.*$/\1/' "$work/target.manifest" |
  sha256sum | cut -d' ' -f1)
if [ "$n" -gt 0 ] && cmp -s "$work/source.manifest" "$work/target.manifest"; then
  echo "$M-COMPARE identical entries=$n digest=$digest"
else
  echo "$M-COMPARE different entries=$n"
  diff "$work/source.manifest" "$work/target.manifest" | head -n 40 | sed "s/^/$M-DIFF /"
fi
EOF

# The guest's /init.
cat >"$RUN/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /work /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o size=1200m tmpfs /work
mount -t tmpfs tmpfs /tmp
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
M=XTSYNC-KMATRIX
. /kmatrix/env
echo "$M-BOOTED $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $MODULES; do
  if err=$(insmod "/kmatrix/modules/$m" 2>&1); then
    echo "$M-MODULE $m loaded"
  else
    echo "$M-MODULE $m FAILED: $err"
  fi
done
sed "s/^/$M-PROC-MODULES /" /proc/modules
if [ -e /proc/net/tls_stat ]; then
  sed "s/^/$M-TLS-STAT-BEFORE /" /proc/net/tls_stat
else
  echo "$M-TLS-STAT-BEFORE absent"
fi
ip link set lo up
ulimit -l unlimited
ulimit -n 65536
sh /kmatrix/run.sh /kmatrix/bin /tree /work "$INNER_TIMEOUT" $KTLS_ARGS
if [ -e /proc/net/tls_stat ]; then
  sed "s/^/$M-TLS-STAT /" /proc/net/tls_stat
  # Where the kernel has TLS, the same pass with kTLS switched off must give the same
  # target (the host compares the digests).
  KMATRIX_MARK=$M-OFF sh /kmatrix/run.sh /kmatrix/bin /tree /work/off "$INNER_TIMEOUT" --ktls off
  # Compression off: the source keeps no chunk bytes and the kernel sends every wanted
  # chunk from the file (sendfile through kTLS).
  KMATRIX_MARK=$M-RAW sh /kmatrix/run.sh /kmatrix/bin /tree /work/raw "$INNER_TIMEOUT" $KTLS_ARGS --compression never
  # A longer stream through the worker's session code with kTLS required: 2 sessions
  # of 48 MiB each way, byte counts checked by the bench (timings mean nothing here).
  if out=$(timeout "$INNER_TIMEOUT" /kmatrix/bin/tls-stream --sessions 2 --gib-per-session 0.046875 --ktls on --verify 2>&1); then
    echo "$M-STREAM ok $(echo "$out" | grep '^tls-stream')"
  else
    echo "$M-STREAM failed $(echo "$out" | tail -n 3 | tr '\n' ' ')"
  fi
else
  echo "$M-TLS-STAT absent"
fi
echo "$M-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
EOF

# --- the source tree ------------------------------------------------------------------

make_tree() {
  local t=$1 i
  mkdir -p "$t/docs/notes" "$t/data/blobs/deep" "$t/empty" "$t/private"
  for i in $(seq 1 12); do
    seq "$i" 300 >"$t/docs/note-$i.txt"
    truncate -s $((i * 211)) "$t/docs/note-$i.txt"
  done
  for i in 1 2 3; do head -c $((i * 4000 + 17)) /dev/urandom >"$t/docs/notes/r$i.bin"; done
  head -c 1048576 /dev/urandom >"$t/data/one-mib.bin"
  head -c 3145728 /dev/urandom >"$t/data/blobs/three-mib.bin"
  # 2 MiB of compressible text (no `yes | head`: SIGPIPE under pipefail).
  seq 1 45000 | sed 's/^/xtsync kernel matrix: compressible line /' >"$t/data/blobs/deep/text.txt"
  : >"$t/data/zero-length"
  truncate -s 4M "$t/data/sparse.img"
  head -c 65536 /dev/urandom | dd of="$t/data/sparse.img" bs=65536 seek=20 conv=notrunc status=none
  echo secret >"$t/private/key"
  chmod 600 "$t/private/key"
  chmod 700 "$t/private"
  ln -s blobs/three-mib.bin "$t/data/link-to-three"
  ln -s ../nowhere "$t/docs/dangling"
  ln "$t/docs/note-3.txt" "$t/data/hardlink-to-note-3"
  find "$t" -exec touch -h -d '2024-01-02 03:04:05' {} +
}
make_tree "$RUN/tree"

# --- result parsing -----------------------------------------------------------------

# verdict NAME RELEASE LOG EXPECTED_TLS...: prints the KERNEL line; returns 1 on fail.
FAILED=0
DIGESTS=()
verdict() {
  local name=$1 release=$2 logf=$3 label=${VERDICT_LABEL:-KERNEL} guest_mark=$M M=${VERDICT_MARK:-$M}
  shift 3
  local rc compare json tls ok=1 why=()
  rc=$(tr -d '\r' <"$logf" | sed -n "s/^$M-QS-RC //p" | tail -n 1)
  compare=$(tr -d '\r' <"$logf" | sed -n "s/^$M-COMPARE //p" | tail -n 1)
  json=$(tr -d '\r' <"$logf" | sed -n "s/^$M-QS-STDOUT \({.*\)/\1/p" | tail -n 1)
  tls=$(echo "$json" | sed -n 's/.*"data_tls" *: *"\([a-z]*\)".*/\1/p')
  [ -n "$tls" ] || tls=unknown
  [ "$rc" = 0 ] || { ok=0; why+=("quickstart exit status ${rc:-none}"); }
  [[ $compare == identical* ]] || { ok=0; why+=("trees ${compare:-not compared}"); }
  if [ "$tls" = kernel ] && [ "$name" != host ]; then
    # Cross-check with the kernel's own counters (printed once per guest): kTLS
    # sockets were really set up.
    local tx
    tx=$(tr -d '\r' <"$logf" | awk -v m="$guest_mark-TLS-STAT" '$1 == m && $2 == "TlsTxSw" { print $3 }')
    [ "${tx:-0}" -gt 0 ] || { ok=0; why+=("data_tls=kernel but TlsTxSw=${tx:-absent}"); }
  fi
  # Raw chunks on a kernel-TLS session go by sendfile; never under rustls.
  local sendfile
  sendfile=$(echo "$json" | sed -n 's/.*"data_sendfile_bytes" *: *\([0-9]*\).*/\1/p')
  case $tls in
    kernel) [ "${sendfile:-0}" -gt 0 ] || { ok=0; why+=("data_tls=kernel but data_sendfile_bytes=${sendfile:-absent}"); } ;;
    userspace) [ "${sendfile:-0}" = 0 ] || { ok=0; why+=("data_tls=userspace but data_sendfile_bytes=$sendfile"); } ;;
  esac
  local e match=0
  for e in "$@"; do [ "$tls" = "$e" ] && match=1; done
  [ "$match" = 1 ] || { ok=0; why+=("tls=$tls, expected $*"); }
  [[ $compare == identical* ]] && DIGESTS+=("$name ${compare##*digest=}")
  local result=pass
  [ "$ok" = 1 ] || { result=fail; FAILED=1; }
  if [ -n "${VERDICT_SENDFILE:-}" ]; then
    echo "$label $release tls=$tls sendfile_bytes=${sendfile:-0} result=$result"
  else
    echo "$label $release tls=$tls result=$result"
  fi
  log "$name: trees ${compare:-not compared}"
  if [ "$ok" != 1 ]; then
    log "$name: FAILED: $(printf '%s; ' "${why[@]}" | sed 's/; $//')"
    # What CI needs to see without the log file: the quickstart's errors, the daemons'
    # last lines, the differences, failed modules.
    tr -d '\r' <"$logf" | grep -E "^$M-(QS-STDERR|LOG|DIFF|MODULE .* FAILED)" | head -n 150 | sed "s/^/  $name: /" >&2 || true
    log "$name: full log: $logf"
  fi
}

# --- host leg --------------------------------------------------------------------------

if [ "$RUN_HOST" = 1 ]; then
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # KTLS_ARGS is a list of words
  sh "$RUN/run.sh" "$BIN_DIR" "$RUN/tree" "$RUN/host" 300 $KTLS_ARGS >"$RUN/host.log" 2>&1 ||
    log "host: run.sh exited $?"
  log "host: $(uname -r) in $(echo "$t0 $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }') s"
  verdict host "$(uname -r)" "$RUN/host.log" kernel userspace
fi

# --- guests ------------------------------------------------------------------------------

if [ -n "$KERNELS" ]; then
  # The common part of every initramfs: busybox, the binaries (stripped), their
  # libraries and loader, /init, run.sh and the tree.
  root="$RUN/root"
  mkdir -p "$root/bin" "$root/kmatrix/bin" "$root/root"
  cp /bin/busybox "$root/bin/busybox"
  install -m 755 "$RUN/init" "$root/init"
  cp "$RUN/run.sh" "$root/kmatrix/run.sh"
  cp -a "$RUN/tree" "$root/tree"
  for b in "${BINARIES[@]}"; do
    strip -o "$root/kmatrix/bin/$b" "$BIN_DIR/$b"
    ldd "$BIN_DIR/$b" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'
  done | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$RUN/base.cpio"
  log "initramfs: $(du -m "$RUN/base.cpio" | cut -f1) MiB common part"
fi

for series in $KERNELS; do
  case $series in
    6.1) suite=bookworm want_tls=kernel ;;
    5.10) suite=bullseye want_tls=userspace ;;
    *) die "unknown kernel series $series (6.1 or 5.10)" ;;
  esac
  kdir=$(
    exec 9>"$CACHE/lock"
    flock 9
    fetch_kernel "$suite" "$series"
  )
  release=$(basename "$(echo "$kdir"/lib/modules/*)")
  log "$series: $(cat "$kdir/package") ($release)"
  over="$RUN/over-$series"
  mkdir -p "$over/kmatrix/modules"
  mods=()
  if [ -n "$(find "$kdir/lib/modules" -name 'tls.ko*' -print -quit)" ]; then
    while read -r rel; do
      [ -n "$rel" ] || continue
      src="$kdir/lib/modules/$release/$rel"
      name=$(basename "$rel")
      case $name in
        *.ko.xz) xz -dc "$src" >"$over/kmatrix/modules/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -qdc "$src" >"$over/kmatrix/modules/${name%.zst}"; name=${name%.zst} ;;
        *.ko.gz) gzip -dc "$src" >"$over/kmatrix/modules/${name%.gz}"; name=${name%.gz} ;;
        *) cp "$src" "$over/kmatrix/modules/$name" ;;
      esac
      mods+=("$name")
    done < <(module_chain "$kdir" "${KTLS_MODULES[@]}")
  else
    log "$series: this kernel has no tls module: nothing to load"
  fi
  {
    echo "MODULES='${mods[*]}'"
    echo "KTLS_ARGS='$KTLS_ARGS'"
    echo "INNER_TIMEOUT=$((QEMU_TIMEOUT > 120 ? QEMU_TIMEOUT - 90 : QEMU_TIMEOUT / 2))"
  } >"$over/kmatrix/env"
  (cd "$over" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$RUN/over-$series.cpio"
  # The kernel unpacks concatenated newc archives one after the other.
  cat "$RUN/base.cpio" "$RUN/over-$series.cpio" >"$RUN/initrd-$series.cpio"
  console="$RUN/console-$series.log"
  : >"$console"
  t0=$(date +%s.%N)
  timeout "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp "$SMP" -m 2048 \
    -nodefaults -display none -no-reboot -monitor none -serial "file:$console" \
    -kernel "$(echo "$kdir"/boot/vmlinuz-*)" -initrd "$RUN/initrd-$series.cpio" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off random.trust_cpu=on" \
    </dev/null >"$RUN/qemu-$series.log" 2>&1 || {
    qrc=$?
    if [ "$qrc" = 124 ]; then
      log "$series: qemu killed after $QEMU_TIMEOUT s (XTSYNC_KMATRIX_TIMEOUT)"
    else
      log "$series: qemu exited $qrc (see $RUN/qemu-$series.log)"
    fi
  }
  t1=$(date +%s.%N)
  tr -d '\r' <"$console" | sed -n "s/^$M-MODULE /$series: module /p" | while read -r l; do log "$l"; done
  booted=$(tr -d '\r' <"$console" | sed -n "s/^$M-BOOTED [^ ]* uptime=//p")
  qs=$(tr -d '\r' <"$console" | sed -n "s/^$M-QS-TIME //p" | awk '{ printf "%.1f", $2 - $1 }')
  log "$series: $(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }') s in qemu (guest booted at ${booted:-?} s, quickstart took ${qs:-?} s)"
  log "$series: /proc/net/tls_stat after the pass: $(tr -d '\r' <"$console" |
    awk -v m="$M-TLS-STAT" '$1 == m { s = s (s ? " " : "") ($2 == "absent" ? "absent" : $2 "=" $3) } END { print s ? s : "?" }')"
  guest_release=$(tr -d '\r' <"$console" | sed -n "s/^$M-BOOTED \([^ ]*\) .*/\1/p")
  verdict "$series" "${guest_release:-$release}" "$console" "$want_tls"
  if [ "$want_tls" = kernel ]; then
    # The same kernel with transfer.ktls off: rustls in user space, identical target.
    VERDICT_LABEL=KTLS-OFF VERDICT_MARK=$M-OFF verdict "$series-ktls-off" "${guest_release:-$release}" "$console" userspace
    # Compression off: chunks sent from the files by the kernel, identical target.
    VERDICT_LABEL=KTLS-SENDFILE VERDICT_MARK=$M-RAW VERDICT_SENDFILE=1 \
      verdict "$series-sendfile" "${guest_release:-$release}" "$console" kernel
    stream=$(tr -d '\r' <"$console" | sed -n "s/^$M-STREAM //p" | tail -n 1)
    log "$series: kTLS stream: ${stream:-missing}"
    if [[ $stream != ok*path=kernel* ]]; then
      log "$series: FAILED: the kTLS stream did not complete on the kernel path"
      FAILED=1
    fi
  fi
done

# Every kernel must have produced the same target (contents, modes, links; not mtimes).
if [ "${#DIGESTS[@]}" -gt 1 ] && [ "$(printf '%s\n' "${DIGESTS[@]}" | awk '{ print $2 }' | sort -u | wc -l)" -ne 1 ]; then
  log "the targets differ between kernels: $(printf '%s; ' "${DIGESTS[@]}")"
  FAILED=1
fi

if [ "$FAILED" = 0 ] && [ "${XTSYNC_KMATRIX_KEEP:-0}" != 1 ]; then
  rm -rf "$RUN"
elif [ "$FAILED" = 0 ]; then
  log "logs in $RUN"
fi
exit "$FAILED"
