"""Trees: a sorted walk, page-cache warm-up, a manifest of every entry, and the
comparison of a target with the source's manifest."""
from __future__ import annotations

import hashlib
import os
import stat


def walk(root: str):
    """Yield (relpath, lstat) for root (as ".") and everything below, sorted per directory."""
    st = os.lstat(root)
    yield ".", st
    stack = [""]
    while stack:
        rel = stack.pop()
        d = os.path.join(root, rel) if rel else root
        with os.scandir(d) as it:
            ents = sorted(it, key=lambda e: e.name)
        for e in ents:
            r = f"{rel}/{e.name}" if rel else e.name
            est = e.stat(follow_symlinks=False)
            yield r, est
            if stat.S_ISDIR(est.st_mode):
                stack.append(r)


def warm(root: str, bufsize: int = 1 << 20) -> tuple[int, int]:
    """Read every regular file once (page-cache warm-up). Returns (files, bytes)."""
    n = b = 0
    buf = bytearray(bufsize)
    for rel, st in walk(root):
        if stat.S_ISREG(st.st_mode):
            n += 1
            with open(os.path.join(root, rel), "rb", buffering=0) as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    b += k
    return n, b


def manifest(root: str, hashes: bool = True) -> dict[str, tuple]:
    """relpath -> (mode, size, mtime_ns, uid, gid, symlink target | content sha1)."""
    m: dict[str, tuple] = {}
    for rel, st in walk(root):
        p = os.path.join(root, rel)
        extra = None
        if stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        elif stat.S_ISREG(st.st_mode) and hashes:
            with open(p, "rb") as f:
                extra = hashlib.file_digest(f, "sha1").hexdigest()
        size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
        m[rel] = (st.st_mode, size, st.st_mtime_ns, st.st_uid, st.st_gid, extra)
    return m


FIELDS = ("mode", "size", "mtime_ns", "uid", "gid", "content")


def diff(src_manifest: dict[str, tuple], tgt_manifest: dict[str, tuple], max_report: int = 8) -> list[str]:
    """What differs between two manifests: missing and extra paths, and each path's first
    differing field; at most max_report lines, then a count."""
    problems: list[str] = []
    for rel, sv in src_manifest.items():
        tv = tgt_manifest.get(rel)
        if tv is None:
            problems.append(f"missing: {rel}")
            continue
        for i, (a, b) in enumerate(zip(sv, tv)):
            if a != b:
                problems.append(f"{FIELDS[i]} differs: {rel} ({a!r} vs {b!r})")
                break
    for rel in tgt_manifest.keys() - src_manifest.keys():
        problems.append(f"extra: {rel}")
    return problems[:max_report] + ([f"... {len(problems)} problems"] if len(problems) > max_report else [])


def compare(src_manifest: dict[str, tuple], target: str, max_report: int = 8) -> tuple[bool, list[str]]:
    """Target equals source? Checks names, type+mode, size, mtime (ns), owner, content/link."""
    try:
        tm = manifest(target)
    except OSError as e:
        return False, [f"cannot walk target: {e}"]
    problems = diff(src_manifest, tm, max_report)
    return not problems, problems
