"""The observer of continuous.py (figure 1): a forked process with inotify watches on
every target directory, which knows the whole schedule in advance and records when each
version becomes visible at the target with its full content."""
from __future__ import annotations

import ctypes
import os
import resource
import select
import struct
import time

from .basetree import h16

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR, IN_ONLYDIR = 0x4000, 0x8000, 0x40000000, 0x01000000
OBS_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR


def observer_main(conn, target: str, ops, hashes, seed: int) -> None:
    """Child process. Watches every directory under target; resolves versions as they appear.

    For each path with unresolved versions, an event on that name leads to: stat (size must match
    one of the path's unresolved versions), then read + hash. Seeing version j of a path resolves
    j and any earlier unresolved version of the same path (superseded: the replica is at least as
    new). The time recorded is taken right before the content is read (an upper bound of the
    moment it became visible, observer reaction included)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        conn.send({"error": f"inotify_init1: {os.strerror(ctypes.get_errno())}"})
        return
    wds: dict[int, str] = {}

    def add_watch(rel: str) -> None:
        wd = libc.inotify_add_watch(fd, os.path.join(target, rel).encode(), OBS_MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {rel}")
        wds[wd] = rel

    for dirpath, dirnames, _ in os.walk(target):
        add_watch(os.path.relpath(dirpath, target))
    by_path: dict[str, list[int]] = {}
    for k, (_, p, _) in enumerate(ops):
        by_path.setdefault(p, []).append(k)
    ptr = {p: 0 for p in by_path}
    n = len(ops)
    visible = [-1] * n
    how = [0] * n           # 1 exact, 2 superseded
    unresolved = n
    stats = {"events": 0, "checked": 0, "hashed": 0, "overflows": 0, "watches": len(wds), "sweeps": 0}
    conn.send({"ready": True, "watches": len(wds)})

    def check(rel: str) -> None:
        nonlocal unresolved
        lst = by_path.get(rel)
        if lst is None:
            return
        i = ptr[rel]
        if i >= len(lst):
            return
        stats["checked"] += 1
        now = time.monotonic_ns()
        try:
            size = os.stat(os.path.join(target, rel)).st_size
        except OSError:
            return
        cand = [j for j in range(i, len(lst)) if ops[lst[j]][2] == size]
        if not cand:
            return
        try:
            with open(os.path.join(target, rel), "rb") as f:
                data = f.read()
        except OSError:
            return
        stats["hashed"] += 1
        hv = h16(data)
        for j in cand:
            if hashes[lst[j]] == hv:
                for jj in range(i, j + 1):
                    k = lst[jj]
                    visible[k] = now
                    how[k] = 1 if jj == j else 2
                    unresolved -= 1
                ptr[rel] = j + 1
                return

    def sweep() -> None:
        stats["sweeps"] += 1
        for rel, lst in by_path.items():
            if ptr[rel] < len(lst):
                check(rel)

    deadline = None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if conn.poll():
            msg = conn.recv()
            if "deadline" in msg:
                deadline = msg["deadline"]
        if deadline is not None and (unresolved == 0 or time.monotonic_ns() >= deadline):
            break
        if not poller.poll(100):
            continue
        try:
            buf = os.read(fd, 1 << 20)
        except BlockingIOError:
            continue
        off = 0
        while off < len(buf):
            wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, off)
            name = buf[off + 16: off + 16 + ln].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            off += 16 + ln
            stats["events"] += 1
            if mask & IN_Q_OVERFLOW:
                stats["overflows"] += 1
                sweep()
                continue
            if mask & IN_IGNORED:
                wds.pop(wd, None)
                continue
            d = wds.get(wd)
            if d is None or not name:
                continue
            rel = name if d == "." else f"{d}/{name}"
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    try:
                        add_watch(rel)
                        stats["watches"] += 1
                    except OSError:
                        pass
                continue
            check(rel)
    # what is at the target now but was never seen through an event (reported, not counted as seen)
    found_at_end = 0
    before = unresolved
    vis_copy, how_copy = list(visible), list(how)
    sweep()
    found_at_end = before - unresolved
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
    stats["found_only_by_final_sweep"] = found_at_end
    conn.send({"visible": vis_copy, "how": how_copy, "stats": stats})
