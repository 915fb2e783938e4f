"""continuous.py's data: the 100,000-file base tree (generated once and reused), the
per-run copies, and the stream's deterministic schedule and contents."""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time

from .procs import rmtree

ROOT = "/var/tmp/xtsync-perf/continuous"
BASE = os.path.join(ROOT, "base")

# Base tree layout: TOPS top directories x SUBS leaf directories x PER_LEAF files.
# A tree of N files = the first ceil(N / (SUBS*PER_LEAF)) top directories.
TOPS, SUBS, PER_LEAF = 25, 40, 100          # 100,000 files, 1,000 leaf dirs
PER_TOP = SUBS * PER_LEAF                   # 4,000
BASE_SEED = 1_000_000_000
STREAM_SEED = 2_000_000_000
T1 = 1_700_000_000                          # whole-second mtime of every base file and directory
BASE_FORMAT = 1

NS = 1_000_000_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def h16(b: bytes) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


def base_file_bytes(g: int) -> bytes:
    r = random.Random(BASE_SEED + g)
    return r.randbytes(r.randint(1024, 16384))


def leaf_rel(top: int, sub: int) -> str:
    return f"t{top:02d}/d{sub:02d}"


def ensure_base() -> dict:
    """Generate /var/tmp/xtsync-perf/continuous/base once (100,000 files, ~0.85 GB of data)."""
    marker = os.path.join(BASE, ".ready")
    try:
        with open(marker) as f:
            info = json.load(f)
        if info.get("format") == BASE_FORMAT:
            return info
    except (OSError, ValueError):
        pass
    st = os.statvfs(os.path.dirname(ROOT) if os.path.isdir(os.path.dirname(ROOT)) else "/var/tmp")
    free = st.f_bavail * st.f_frsize
    if free < 4 * 1024**3:
        sys.exit(f"need ~1.1 GB for the base tree plus ~2 GB per run; only {free / 1024**3:.1f} GiB free")
    log(f"generating the base tree in {BASE} ({TOPS * PER_TOP} files; once) ...")
    rmtree(BASE)
    os.makedirs(BASE)
    t = time.monotonic()
    total = 0
    g = 0
    for top in range(TOPS):
        for sub in range(SUBS):
            d = os.path.join(BASE, leaf_rel(top, sub))
            os.makedirs(d)
            for i in range(PER_LEAF):
                b = base_file_bytes(g)
                p = os.path.join(d, f"f{g:06d}.dat")
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, b)
                os.close(fd)
                os.utime(p, (T1, T1))
                total += len(b)
                g += 1
            os.utime(d, (T1, T1))
        os.utime(os.path.join(BASE, f"t{top:02d}"), (T1, T1))
        log(f"  {g} files ...")
    info = {"format": BASE_FORMAT, "files": g, "bytes": total, "tops": TOPS, "leaf_dirs_per_top": SUBS,
            "files_per_leaf": PER_LEAF, "sizes": "1-16 KiB uniform, random.Random(1e9 + index).randbytes",
            "mtime": T1, "generated_s": round(time.monotonic() - t, 1)}
    with open(marker, "w") as f:
        json.dump(info, f)
    os.sync()
    return info


def tree_tops(files: int) -> int:
    return max(1, min(TOPS, -(-files // PER_TOP)))


def copy_tree(tops: int, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["cp", "-a"] + [os.path.join(BASE, f"t{t:02d}") for t in range(tops)] + [dest + "/"], check=True)
    os.utime(dest, (T1, T1))


# ====================================================================== stream schedule

def make_schedule(rate: int, seconds: float, tops: int, seed: int, new_frac: float = 0.7):
    """Deterministic list of (kind, relpath, size); version k's content = stream_bytes(seed, k, size)."""
    r = random.Random(seed)
    leaves = [leaf_rel(t, s) for t in range(tops) for s in range(SUBS)]
    existing = [f"{leaf_rel(g // PER_TOP, (g % PER_TOP) // PER_LEAF)}/f{g:06d}.dat" for g in range(tops * PER_TOP)]
    ops = []
    for k in range(int(round(rate * seconds))):
        if r.random() < new_frac:
            path = f"{r.choice(leaves)}/n{k:07d}.dat"
            existing.append(path)
            kind = "new"
        else:
            path = r.choice(existing)
            kind = "rewrite"
        ops.append((kind, path, r.randint(4096, 65536)))
    return ops


def stream_bytes(seed: int, k: int, size: int) -> bytes:
    return random.Random(STREAM_SEED + seed * 10_000_000 + k).randbytes(size)
