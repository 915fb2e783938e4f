"""Deterministic data for run.py's workloads: data sets marked ready, incompressible
files, fixed whole-second mtimes, subsets of a tree, and the edit/rename/add/delete
mutation that makes a v2 from a v1.

Each prepared data set has a marker file (`.ready`, JSON with its description) beside it;
remove the workload's directory to regenerate. Every generated file gets a fixed,
whole-second mtime and mode 0644 so that runs are reproducible and `tar` (GNU format,
whole-second mtimes) can reproduce them exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Optional

DATA_ROOT = os.environ.get("XTSYNC_PERF_DATA", "/var/tmp/xtsync-perf")
T1 = 1_700_000_000  # mtime of generated v1 data
T2 = 1_700_086_400  # mtime of everything a mutation touches
AES_KEY = "000102030405060708090a0b0c0d0e0f"
MiB = 1 << 20


@dataclass
class Data:
    name: str
    v1: str                    # source of the initial pass (== v2 for full copies)
    v2: str                    # source of the measured pass
    incremental: bool          # True: initial pass into the target, then measured pass
    tmpfs: bool = False        # run on /dev/shm (copied there for the run)
    info: dict = field(default_factory=dict)
    # Incremental workloads edited in place: the run copies v1 to its source path, makes
    # the initial passes, then calls this on that path (same inodes for unchanged and
    # edited files, renames as renames) — the v2 directory is only a reference.
    mutate_live: Optional[Callable[[str], dict]] = None


def log(msg: str) -> None:
    print(f"[data] {msg}", flush=True)


def sh(cmd: str, env: dict | None = None) -> None:
    subprocess.run(["/bin/sh", "-c", cmd], check=True, env={**os.environ, **(env or {})})


# Bumped when a generator's output changes, so that data built by an older harness is
# rebuilt instead of measured. 2: `random_file` streams no longer overlap (before, file
# i was file 0 shifted by 16·i bytes, which dedup and rsync found).
GENERATOR_RANDOM = 2


def ready(d: str, generator: int = 1) -> dict | None:
    try:
        with open(os.path.join(d, ".ready")) as f:
            info = json.load(f)
    except OSError:
        return None
    return info if info.get("generator", 1) == generator else None


def mark(d: str, info: dict, generator: int = 1) -> dict:
    info = {**info, "generator": generator} if generator != 1 else info
    with open(os.path.join(d, ".ready"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def tree_stats(root: str) -> dict:
    files = dirs = links = size = 0
    for dp, dns, fns in os.walk(root):
        dirs += 1
        for fn in fns:
            st = os.lstat(os.path.join(dp, fn))
            if stat.S_ISLNK(st.st_mode):
                links += 1
            else:
                files += 1
                size += st.st_size
        for dn in dns:
            if os.path.islink(os.path.join(dp, dn)):
                links += 1
    return {"files": files, "dirs": dirs, "symlinks": links, "bytes": size}


def random_file(path: str, size: int, index: int) -> None:
    """Incompressible, deterministic: AES-128-CTR keystream. The file index is in the
    high 64 bits of the IV: with IV = index, file i+1 would be file i shifted by one
    16-byte block (the counters overlap), which chunk dedup finds."""
    iv = f"{index:016x}{0:016x}"
    if shutil.which("openssl"):
        sh(f"openssl enc -aes-128-ctr -K {AES_KEY} -iv {iv} -nosalt -in /dev/zero 2>/dev/null"
           f" | head -c {size} > '{path}'")
    else:  # slower fallback: BLAKE2b in counter mode
        with open(path, "wb") as f:
            ctr = 0
            left = size
            while left > 0:
                block = b"".join(hashlib.blake2b(f"{index}:{ctr + i}".encode(), digest_size=64).digest()
                                 for i in range(1024))
                ctr += 1024
                f.write(block[:left])
                left -= len(block)
    if os.path.getsize(path) != size:
        raise RuntimeError(f"short random file {path}")
    os.chmod(path, 0o644)
    os.utime(path, (T1, T1))


def fix_dir_times(root: str, t: int) -> None:
    for dp, _, _ in os.walk(root, topdown=False):
        os.utime(dp, (t, t))


def normalise_mtimes(root: str) -> int:
    """Entries without an mtime in the archive got the extraction time: set those to T1."""
    n = 0
    for dp, dns, fns in os.walk(root, topdown=False):
        for p in [os.path.join(dp, x) for x in fns + dns] + [dp]:
            st = os.lstat(p)
            if st.st_mtime_ns % 1_000_000_000:
                os.utime(p, (T1, T1), follow_symlinks=False)
                n += 1
    return n


def copy_subset(src: str, dst: str, keep) -> None:
    """Copy files of src for which keep(relpath) is true, preserving metadata."""
    for dp, dns, fns in os.walk(src):
        rel = os.path.relpath(dp, src)
        for fn in fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]:
            r = os.path.normpath(os.path.join(rel, fn))
            if not keep(r):
                continue
            os.makedirs(os.path.join(dst, rel), exist_ok=True)
            s, d = os.path.join(dp, fn), os.path.join(dst, r)
            if os.path.islink(s):
                os.symlink(os.readlink(s), d)
                os.utime(d, ns=(os.lstat(s).st_atime_ns, os.lstat(s).st_mtime_ns), follow_symlinks=False)
            else:
                shutil.copy2(s, d)
    # directory metadata from the source tree
    for dp, _, _ in os.walk(dst, topdown=False):
        rel = os.path.relpath(dp, dst)
        shutil.copystat(os.path.join(src, rel), dp)


def one_in(n: int):
    return lambda rel: int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % n == 0


# ---------------------------------------------------------------- mutation

WORDS = b"alpha beta gamma delta kernel buffer chunk queue sync state write read flush lock".split()


def text_lines(rng: random.Random, n: int) -> list[bytes]:
    return [b"\t/* perf v2 %016x: " % rng.getrandbits(64) +
            b" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + b" */" for _ in range(n)]


def edit_file(path: str, rng: random.Random) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data[:8192] and len(data) > 256:
        mid = len(data) // 2
        data = data[:mid] + rng.randbytes(64) + data[mid + 64:]
        op = "binary-overwrite"
    else:
        lines = data.split(b"\n")
        op = rng.choices(["insert", "replace", "append"], [50, 30, 20])[0]
        if len(lines) < 4:
            op = "append"
        if op == "append":
            lines[-1:] = text_lines(rng, rng.randint(1, 10)) + [lines[-1]]
        else:
            at = rng.randint(len(lines) // 3, max(len(lines) // 3, 2 * len(lines) // 3))
            if op == "insert":
                lines[at:at] = text_lines(rng, rng.randint(1, 5))
            else:
                k = rng.randint(1, 3)
                lines[at:at + k] = text_lines(rng, k)
        data = b"\n".join(lines)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (T2, T2))
    return op


def mutate(root: str, seed: int, frac_mod: float, frac_ren: float, n_new: int, n_del: int) -> dict:
    rng = random.Random(seed)
    files = []
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            if not os.path.islink(p):
                files.append(os.path.relpath(p, root))
    files.sort()
    touched_dirs: set[str] = set()
    ops: dict[str, int] = {}
    mod = rng.sample(files, max(1, round(len(files) * frac_mod)))
    for r in mod:
        op = edit_file(os.path.join(root, r), rng)
        ops[op] = ops.get(op, 0) + 1
    rest = sorted(set(files) - set(mod))
    ren = rng.sample(rest, max(1, round(len(files) * frac_ren)))
    moved = 0
    for r in ren:
        d, fn = os.path.split(r)
        stem, ext = os.path.splitext(fn)
        newdir = d
        if rng.random() < 0.5 and d:
            parent = os.path.dirname(d)
            sibs = sorted(e.name for e in os.scandir(os.path.join(root, parent))
                          if e.is_dir(follow_symlinks=False) and os.path.join(parent, e.name) != d)
            if sibs:
                newdir = os.path.join(parent, rng.choice(sibs))
                moved += 1
        new = os.path.join(newdir, f"{stem}_renamed{ext}")
        if os.path.lexists(os.path.join(root, new)):
            new = os.path.join(newdir, f"{stem}_renamed_{rng.getrandbits(16):04x}{ext}")
        os.rename(os.path.join(root, r), os.path.join(root, new))
        touched_dirs |= {d, newdir}
    rest2 = sorted(set(rest) - set(ren))
    dele = rng.sample(rest2, n_del)
    for r in dele:
        os.unlink(os.path.join(root, r))
        touched_dirs.add(os.path.dirname(r))
    dirs = sorted({os.path.dirname(f) for f in files})
    for i in range(n_new):
        d = rng.choice(dirs)
        p = os.path.join(root, d, f"perf_new_{i:04d}.c")
        with open(p, "wb") as f:
            f.write(b"\n".join(text_lines(rng, rng.randint(10, 400))) + b"\n")
        os.chmod(p, 0o644)
        os.utime(p, (T2, T2))
        touched_dirs.add(d)
    for d in touched_dirs:
        os.utime(os.path.join(root, d) if d else root, (T2, T2))
    return {"modified": len(mod), "edit_ops": ops, "renamed": len(ren), "moved_to_sibling_dir": moved,
            "deleted": n_del, "new": n_new, "seed": seed}
