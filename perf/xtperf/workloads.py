"""The six workloads' data sets, generated once under /var/tmp/xtsync-perf/ (or
$XTSYNC_PERF_DATA) and reused; see perf/README.md, "Workloads"."""
from __future__ import annotations

import os
import random
import shutil

from .datagen import (DATA_ROOT, GENERATOR_RANDOM, T1, T2, Data, MiB, copy_subset, fix_dir_times, log, mark,
                      mutate, normalise_mtimes, one_in, random_file, ready, sh, text_lines, tree_stats)

KERNEL_TARBALL = "/usr/src/linux-source-6.1.tar.xz"
KERNEL_PKG = "linux-source-6.1"
MIN_TREE_FILES = 70_000


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
                f.write(rng.randbytes(size) if i % 2 else b"".join(text_lines(rng, size // 60 + 1))[:size])
            os.chmod(p, 0o644)
            os.utime(p, (T1, T1))
        fix_dir_times(src, T1)
        info = mark(d, tree_stats(src), GENERATOR_RANDOM)
    return Data("tmpfs", src, src, False, tmpfs=True, info=info)


WORKLOADS = {"large": w_large, "tree": w_tree, "nochange": w_nochange, "change1pct": w_change1pct,
             "image": w_image, "tmpfs": w_tmpfs}
