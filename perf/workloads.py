"""Deterministic workload data, generated once under /var/tmp/xtsync-perf/ and reused.

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
KERNEL_TARBALL = "/usr/src/linux-source-6.1.tar.xz"
KERNEL_PKG = "linux-source-6.1"
MIN_TREE_FILES = 70_000
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


def _lines(rng: random.Random, n: int) -> list[bytes]:
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
            lines[-1:] = _lines(rng, rng.randint(1, 10)) + [lines[-1]]
        else:
            at = rng.randint(len(lines) // 3, max(len(lines) // 3, 2 * len(lines) // 3))
            if op == "insert":
                lines[at:at] = _lines(rng, rng.randint(1, 5))
            else:
                k = rng.randint(1, 3)
                lines[at:at + k] = _lines(rng, k)
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
            f.write(b"\n".join(_lines(rng, rng.randint(10, 400))) + b"\n")
        os.chmod(p, 0o644)
        os.utime(p, (T2, T2))
        touched_dirs.add(d)
    for d in touched_dirs:
        os.utime(os.path.join(root, d) if d else root, (T2, T2))
    return {"modified": len(mod), "edit_ops": ops, "renamed": len(ren), "moved_to_sibling_dir": moved,
            "deleted": n_del, "new": n_new, "seed": seed}


# ---------------------------------------------------------------- workloads

def base(quick: bool) -> str:
    return os.path.join(DATA_ROOT, "quick" if quick else "full")


def kernel_tree() -> str:
    """The extracted kernel source (full tree workload source)."""
    d = os.path.join(DATA_ROOT, "full", "tree")
    src = os.path.join(d, "src")
    info = ready(d)
    if info and not info.get("mtimes_normalised"):
        info["mtimes_normalised"] = normalise_mtimes(src)
        mark(d, info)
    if info:
        return src
    os.makedirs(d, exist_ok=True)
    if not os.path.isdir(src):
        if not os.path.exists(KERNEL_TARBALL):
            log(f"installing {KERNEL_PKG} (apt-get) ...")
            sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y {KERNEL_PKG} >/dev/null")
        part = src + ".partial"
        shutil.rmtree(part, ignore_errors=True)
        os.makedirs(part)
        log(f"extracting {KERNEL_TARBALL} (once) ...")
        sh(f"nice -n 10 tar -C '{part}' -xJf {KERNEL_TARBALL} --strip-components=1")
        os.rename(part, src)
    st = tree_stats(src)
    extra = []
    while st["files"] < MIN_TREE_FILES:  # top up with copies of Documentation/
        k = len(extra) + 1
        dst = os.path.join(src, f"zz-extra-copy-{k}")
        sh(f"cp -a '{src}/Documentation' '{dst}'")
        extra.append(dst)
        st = tree_stats(src)
    st["mtimes_normalised"] = normalise_mtimes(src)
    st["origin"] = os.path.basename(KERNEL_TARBALL)
    st["extra_copies"] = extra
    mark(d, st)
    return src


def w_large(quick: bool) -> Data:
    d = os.path.join(base(quick), "large")
    src = os.path.join(d, "src")
    info = ready(d, GENERATOR_RANDOM)
    if not info:
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(src)
        size = (512 * MiB) // (20 if quick else 1)
        log(f"large: 8 x {size} bytes of AES-CTR keystream ...")
        for i in range(8):
            random_file(os.path.join(src, f"blob-{i}.bin"), size, i)
        fix_dir_times(src, T1)
        info = mark(d, tree_stats(src), GENERATOR_RANDOM)
    return Data("large", src, src, False, info=info)


def w_tree(quick: bool) -> Data:
    if not quick:
        d = os.path.join(base(False), "tree")
        src = kernel_tree()
        return Data("tree", src, src, False, info=ready(d))
    d = os.path.join(base(True), "tree")
    src = os.path.join(d, "src")
    info = ready(d)
    if not info:
        k = kernel_tree()
        shutil.rmtree(d, ignore_errors=True)
        log("quick tree: 1/20 of the kernel tree's files ...")
        copy_subset(k, src, one_in(20))
        info = mark(d, {**tree_stats(src), "origin": "1/20 of full tree (sha1(path) % 20 == 0)"})
    return Data("tree", src, src, False, info=info)


def w_nochange(quick: bool) -> Data:
    t = w_tree(quick)
    return Data("nochange", t.v1, t.v1, True, info=t.info)


def w_change1pct(quick: bool) -> Data:
    t = w_tree(quick)
    d = os.path.join(base(quick), "change1pct")
    v2 = os.path.join(d, "v2")
    info = ready(d)
    if not info:
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        log("change1pct: copying tree and mutating (seed 42) ...")
        sh(f"cp -a '{t.v1}' '{v2}'")
        n = t.info["files"]
        m = mutate(v2, 42, 0.01, 0.001, n_new=max(2, n // 4000), n_del=max(2, n // 4000))
        info = mark(d, {**tree_stats(v2), "mutation": m})
    n = t.info["files"]
    # The same mutation (same seed, same tree), applied to the run's own copy of v1.
    edit = lambda live: mutate(live, 42, 0.01, 0.001, n_new=max(2, n // 4000), n_del=max(2, n // 4000))  # noqa: E731
    return Data("change1pct", t.v1, v2, True, info={"v1": t.info, "v2": info}, mutate_live=edit)


def _mkimage(dirpath: str, img: str, size: str, uuid: str) -> None:
    # deterministic: fixed UUID, hash seed and clock
    sh(f"mke2fs -q -F -t ext4 -U {uuid} -E hash_seed={uuid} -d '{dirpath}' '{img}' {size}",
       env={"E2FSPROGS_FAKE_TIME": str(T1)})


def w_image(quick: bool) -> Data:
    d = os.path.join(base(quick), "image")
    info = ready(d, GENERATOR_RANDOM)
    v1, v2 = os.path.join(d, "v1"), os.path.join(d, "v2")
    if not info:
        if not shutil.which("mke2fs"):
            raise RuntimeError("mke2fs missing (apt-get install e2fsprogs)")
        k = kernel_tree()
        shutil.rmtree(d, ignore_errors=True)
        dir1, dir2 = os.path.join(d, "dir1"), os.path.join(d, "dir2")
        os.makedirs(dir1)
        subdirs = ("drivers", "arch", "Documentation")
        frac = 20 if quick else 1
        log(f"image: content = kernel {subdirs} (1/{frac}) + 7 blobs ...")
        for sd in subdirs:
            copy_subset(os.path.join(k, sd), os.path.join(dir1, sd), one_in(frac))
        blob = 64 * MiB // frac
        os.makedirs(os.path.join(dir1, "blobs"))
        for i in range(7):
            random_file(os.path.join(dir1, "blobs", f"blob-{i}.bin"), blob, 100 + i)
        fix_dir_times(os.path.join(dir1, "blobs"), T1)
        os.utime(dir1, (T1, T1))
        sh(f"cp -a '{dir1}' '{dir2}'")
        n = tree_stats(dir2)["files"]
        m = mutate(dir2, 43, 0.05, 0.0, n_new=max(5, n // 500), n_del=max(2, n // 2000))
        # larger files: blob-1 rewritten in the middle (1/8), blob-2 fully rewritten, one new blob
        bd = os.path.join(dir2, "blobs")
        tmp = os.path.join(d, "tmp.bin")
        random_file(tmp, blob // 8, 200)
        with open(os.path.join(bd, "blob-1.bin"), "r+b") as f, open(tmp, "rb") as g:
            f.seek(blob // 2)
            f.write(g.read())
        os.unlink(tmp)
        random_file(os.path.join(bd, "blob-2.bin"), blob, 201)
        random_file(os.path.join(bd, "blob-new.bin"), blob // 2, 202)
        for p in ("blob-1.bin", "blob-2.bin", "blob-new.bin", ""):
            os.utime(os.path.join(bd, p) if p else bd, (T2, T2))
        m["blobs"] = "blob-1 middle 1/8 rewritten, blob-2 rewritten, blob-new added"
        size = "128M" if quick else "2G"
        for dd, vd, uuid in ((dir1, v1, "5a1e0000-0000-4000-8000-000000000001"),
                             (dir2, v2, "5a1e0000-0000-4000-8000-000000000002")):
            os.makedirs(vd)
            img = os.path.join(vd, "disk.img")
            log(f"image: mke2fs -d {dd} -> {img} ({size}) ...")
            _mkimage(dd, img, size, uuid)
            os.chmod(img, 0o644)
            os.utime(img, (T1, T1) if vd == v1 else (T2, T2))
            os.utime(vd, (T1, T1) if vd == v1 else (T2, T2))
        info = mark(d, {"content_v1": tree_stats(dir1), "content_v2": tree_stats(dir2), "mutation": m,
                        "image_size": size, "image_bytes": os.path.getsize(os.path.join(v2, "disk.img")),
                        "allocated_v2": os.stat(os.path.join(v2, "disk.img")).st_blocks * 512},
                    GENERATOR_RANDOM)
    return Data("image", v1, v2, True, info=info)


def w_tmpfs(quick: bool) -> Data:
    d = os.path.join(base(quick), "tmpfs")
    src = os.path.join(d, "src")
    info = ready(d, GENERATOR_RANDOM)
    if not info:
        shutil.rmtree(d, ignore_errors=True)
        frac = 20 if quick else 1
        os.makedirs(os.path.join(src, "big"))
        log("tmpfs: 4 x 512 MiB (/20 quick) + 20,000 (/20 quick) small files ...")
        for i in range(4):
            random_file(os.path.join(src, "big", f"blob-{i}.bin"), 512 * MiB // frac, 300 + i)
        rng = random.Random(44)
        nsmall = 20_000 // frac
        for i in range(nsmall):
            sd = os.path.join(src, "small", f"d{i // 200:03d}")
            if i % 200 == 0:
                os.makedirs(sd)
            p = os.path.join(sd, f"f{i:05d}.dat")
            size = rng.randint(100, 16384)
            with open(p, "wb") as f:
                # half text-like (compressible), half random
                f.write(rng.randbytes(size) if i % 2 else b"".join(_lines(rng, size // 60 + 1))[:size])
            os.chmod(p, 0o644)
            os.utime(p, (T1, T1))
        fix_dir_times(src, T1)
        info = mark(d, tree_stats(src), GENERATOR_RANDOM)
    return Data("tmpfs", src, src, False, tmpfs=True, info=info)


WORKLOADS = {"large": w_large, "tree": w_tree, "nochange": w_nochange, "change1pct": w_change1pct,
             "image": w_image, "tmpfs": w_tmpfs}
