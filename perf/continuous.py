#!/usr/bin/env python3
"""Issue 3, figures 1 and 2: continuous replication — change-to-target latency and CPU.

    python3 perf/continuous.py --tool lsyncd-tuned                 # figure 1 peer (the one that matters)
    python3 perf/continuous.py --tool lsyncd-default               # lsyncd at its defaults (delay 15 s)
    python3 perf/continuous.py --tool lsyncd-fsync                 # tuned + rsync --fsync (durable peer)
    XTSYNC_BIN=/path/to/release python3 perf/continuous.py --tool xtsync [--xtsync-args "..."]
    python3 perf/continuous.py --tool lsyncd-tuned --idle          # figure 2: 100,000 files, nothing changes

Figure 1: a steady stream of RATE file writes per second (default 200/s for 60 s; ~70% new
files, ~30% rewrites of existing ones, 4-64 KiB each, deterministic) into a tree of 80,000
files (800 leaf directories). An inotify observer on every target directory records when each
written version becomes visible at the target with its full content (BLAKE2b); latency =
visible - close() at the source, CLOCK_MONOTONIC on both sides. CPU of the whole replicator
(all its processes, children included) comes from a cgroup v2 it runs in (cpu.stat
usage_usec), or /proc sums when no writable cgroup v2 exists.

Figure 2 (--idle): a 100,000-file tree watched with nothing changing: CPU % over 60 s, RSS
(sum of VmRSS of the replicator's processes), inotify watches held.

Python 3.11, stdlib only. Data under /var/tmp/xtsync-perf/continuous/ (base tree generated once
and reused; per-run source/target copies deleted at the end unless --keep). One JSON per run in
perf/results/<UTC date>/continuous-<tool>[-idle]-<timestamp>.json and one summary line on stdout.
See perf/README-continuous.md.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = "/var/tmp/xtsync-perf/continuous"
BASE = os.path.join(ROOT, "base")
# Where each run's source and target live (--run-root): another filesystem can be
# measured while the base tree stays in ROOT.
RUN_ROOT = ROOT
XTSYNC_BIN = os.path.abspath(os.environ.get("XTSYNC_BIN", "/var/tmp/xtsync-target/release"))

# Base tree layout: TOPS top directories x SUBS leaf directories x PER_LEAF files.
# A tree of N files = the first ceil(N / (SUBS*PER_LEAF)) top directories.
TOPS, SUBS, PER_LEAF = 25, 40, 100          # 100,000 files, 1,000 leaf dirs
PER_TOP = SUBS * PER_LEAF                   # 4,000
BASE_SEED = 1_000_000_000
STREAM_SEED = 2_000_000_000
T1 = 1_700_000_000                          # whole-second mtime of every base file and directory
BASE_FORMAT = 1

NS = 1_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rmtree(p: str) -> None:
    if os.path.lexists(p):
        subprocess.run(["rm", "-rf", "--one-file-system", p], check=False)


def h16(b: bytes) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


# ====================================================================== base tree

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


# ====================================================================== inotify observer

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


# ====================================================================== CPU accounting

def cgroup2_root() -> str | None:
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


def proc_stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def all_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            f = proc_stat_fields(int(e))
            if f:
                kids.setdefault(int(f[1]), []).append(int(e))
    return kids


class CpuGroup:
    """All the replicator's processes: a cgroup v2 when possible (usage_usec counts exited
    children too), else the process trees under the started pids (/proc utime+stime+cutime+cstime)."""

    def __init__(self, name: str):
        self.name = name
        self.roots: list[int] = []
        self.path = None
        self.method = "proc"
        root = cgroup2_root()
        if root and os.geteuid() == 0:
            p = os.path.join(root, f"xtsync-perf-{name}")
            try:
                if os.path.isdir(p):
                    os.rmdir(p)     # stale and empty (fails if it still has processes)
                os.mkdir(p)
                with open(os.path.join(p, "cpu.stat")) as f:
                    if "usage_usec" in f.read():
                        self.path, self.method = p, "cgroup2"
                    else:
                        os.rmdir(p)
            except OSError as e:
                log(f"cgroup v2 at {root} not usable ({e}); falling back to /proc sums")

    def preexec(self):
        path = self.path

        def fn():
            os.setsid()
            if path:
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write("0")
        return fn

    def pids(self) -> list[int]:
        if self.path:
            try:
                with open(os.path.join(self.path, "cgroup.procs")) as f:
                    return [int(x) for x in f.read().split()]
            except OSError:
                return []
        kids = all_children()
        out, todo = [], list(self.roots)
        while todo:
            p = todo.pop()
            if os.path.exists(f"/proc/{p}"):
                out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def usage_s(self) -> float:
        if self.path:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    if line.startswith("usage_usec"):
                        return int(line.split()[1]) / 1e6
        tot = 0
        for p in self.pids():
            f = proc_stat_fields(p)
            if f:
                tot += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return tot / CLK_TCK

    def processes(self) -> list[dict]:
        out = []
        for p in self.pids():
            d = {"pid": p}
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("Name:"):
                            d["name"] = line.split()[1]
                        elif line.startswith("VmRSS:"):
                            d["rss_kib"] = int(line.split()[1])
                d["inotify_watches"], d["fanotify_marks"] = notify_marks(p)
            except OSError:
                continue
            out.append(d)
        return out

    def close(self) -> None:
        if self.path:
            for _ in range(50):
                try:
                    os.rmdir(self.path)
                    return
                except OSError:
                    time.sleep(0.1)
            log(f"warning: could not remove {self.path} (processes left: {self.pids()})")


def notify_marks(pid: int) -> tuple[int, int]:
    """(inotify watches, fanotify marks) held by pid, from /proc/PID/fdinfo."""
    ino = fan = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("inotify wd:"):
                            ino += 1
                        elif line.startswith("fanotify ") and not line.startswith("fanotify flags:"):
                            fan += 1
            except OSError:
                pass
    except OSError:
        pass
    return ino, fan


class Sampler(threading.Thread):
    """Samples the group's CPU seconds (and machine-wide busy jiffies) every `every` s."""

    def __init__(self, cg: CpuGroup, every: float = 0.25):
        super().__init__(daemon=True)
        self.cg, self.every = cg, every
        self.samples: list[tuple[int, float]] = []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.samples.append((time.monotonic_ns(), self.cg.usage_s()))
            except OSError:
                pass
            self.stop_ev.wait(self.every)

    def at(self, t_ns: int) -> float:
        """CPU seconds at t_ns (linear interpolation between samples)."""
        s = self.samples
        if not s:
            return 0.0
        if t_ns <= s[0][0]:
            return s[0][1]
        for (t0, u0), (t1, u1) in zip(s, s[1:]):
            if t0 <= t_ns <= t1:
                return u0 + (u1 - u0) * (t_ns - t0) / max(1, t1 - t0)
        return s[-1][1]


def machine_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def machine() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    fs = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", RUN_ROOT], capture_output=True, text=True)
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu, "mem": mem,
            "python": platform.python_version(), "loadavg": os.getloadavg(), "fs": fs.stdout.strip()}


def version(cmd: str) -> str:
    try:
        out = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10)
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
    except Exception:
        return "?"


def free_port(start_at: int = 8830) -> int:
    for p in range(start_at, start_at + 500):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def wait_listen(port: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# ====================================================================== tools

class ToolError(Exception):
    pass


class Tool:
    """A replicator under test: start() its processes inside `cg`, stop() them all."""
    name = "?"

    def __init__(self, a, run_dir: str, src: str, dst: str, cg: CpuGroup):
        self.a, self.run_dir, self.src, self.dst, self.cg = a, run_dir, src, dst, cg
        self.procs: list[subprocess.Popen] = []
        self.info: dict = {"notes": []}

    def spawn(self, cmd: list[str], logname: str, cwd: str | None = None, env=None) -> subprocess.Popen:
        out = open(os.path.join(self.run_dir, logname), "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=self.cg.preexec(), cwd=cwd or self.run_dir, env=env)
        out.close()
        self.procs.append(p)
        self.cg.roots.append(p.pid)
        return p

    def start(self) -> None:
        raise NotImplementedError

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise ToolError(f"{shlex.join(p.args)} exited with status {p.returncode}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        # anything of ours still in the cgroup (e.g. a daemon's child that changed group)
        if self.cg.path:
            left = self.cg.pids()
            if left:
                kill = os.path.join(self.cg.path, "cgroup.kill")
                if os.path.exists(kill):
                    with open(kill, "w") as f:
                        f.write("1")
                else:
                    for pid in left:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                self.info["notes"].append(f"killed {len(left)} leftover process(es) in the cgroup")

    def log_tail(self, logname: str, n: int = 15) -> str:
        try:
            with open(os.path.join(self.run_dir, logname), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def extra_stats(self) -> dict:
        return {}


RSYNCD_CONF = """\
pid file = {run}/rsyncd.pid
log file = {run}/rsyncd.log
transfer logging = no
use chroot = no
uid = root
gid = root
max connections = 0
[dst]
    path = {dst}
    read only = no
    use chroot = no
"""

LSYNCD_CONF = """\
settings {{
    nodaemon = true,
    insist = true,
    inotifyMode = "CloseWrite",
    maxProcesses = {maxproc},
}}
sync {{
    default.rsync,
    source = "{src}",
    target = "rsync://127.0.0.1:{port}/dst/",
{sync_opts}}}
"""


class Lsyncd(Tool):
    """lsyncd (inotify) -> rsync daemon on 127.0.0.1. Variants:
    tuned:   delay = 0, rsync archive + whole_file, no compression, maxProcesses (default 1)
    default: only source/target (delay 15 s, maxProcesses 1, rsync -lts)
    fsync:   tuned + rsync --fsync (the daemon's receiver fsyncs every file it writes)."""

    def __init__(self, variant: str, *args):
        super().__init__(*args)
        self.variant = variant
        self.name = f"lsyncd-{variant}"

    def start(self) -> None:
        run = self.run_dir
        port = free_port()
        with open(os.path.join(run, "rsyncd.conf"), "w") as f:
            f.write(RSYNCD_CONF.format(run=run, dst=self.dst))
        dcmd = ["rsync", "--daemon", "--no-detach", f"--config={run}/rsyncd.conf", "--address=127.0.0.1",
                f"--port={port}"]
        self.spawn(dcmd, "rsyncd.out")
        if not wait_listen(port):
            raise ToolError("rsync daemon did not listen: " + self.log_tail("rsyncd.out"))
        if self.variant == "default":
            sync_opts, maxproc = "", 1
        else:
            extra = '"--fsync"' if self.variant == "fsync" else ""
            maxproc = self.a.lsyncd_max_processes
            sync_opts = (f"    delay = 0,\n    maxProcesses = {maxproc},\n"
                         f"    rsync = {{ archive = true, compress = false, whole_file = true,"
                         f" _extra = {{ {extra} }} }},\n")
        conf = LSYNCD_CONF.format(run=run, src=self.src, port=port, sync_opts=sync_opts, maxproc=maxproc)
        with open(os.path.join(run, "lsyncd.conf.lua"), "w") as f:
            f.write(conf)
        self.spawn(["lsyncd", "-nodaemon", os.path.join(run, "lsyncd.conf.lua")], "lsyncd.out")
        self.info.update({"rsyncd_cmd": shlex.join(dcmd), "rsyncd_conf": RSYNCD_CONF.format(run=run, dst=self.dst),
                          "lsyncd_conf": conf, "versions": {"lsyncd": version("lsyncd --version"),
                                                            "rsync": version("rsync --version")}})

    def count_batches(self) -> int:
        try:
            with open(os.path.join(self.run_dir, "lsyncd.out"), errors="replace") as f:
                return sum(1 for line in f if "Calling rsync with filter-list" in line)
        except OSError:
            return -1

    def extra_stats(self) -> dict:
        return {"rsync_batches_total": self.count_batches()}


# ---------------------------------------------------------------------------------------------
# xtsync — issue 3 continuous mode.  EDIT HERE when the continuous quickstart lands.
#
# Started as:  $XTSYNC_BIN/xtsyncctl quickstart --source SRC --target DST --state STATE
#                  --coordinator 127.0.0.1:PORT [--xtsync-args ...]          (no --once)
# i.e. "keep replicating until interrupted".  Its processes (xtsyncctl, xtsync-coordinator,
# 2 x xtsync-worker) are all started inside the cgroup (preexec of xtsyncctl; the daemons inherit
# it).  Readiness is generic (a marker file written to the source after start must appear at the
# target with its content).  Stop: SIGINT to xtsyncctl (its ctrl-c path), then SIGTERM/SIGKILL of
# its process group, then cgroup.kill for anything left.
# If xtsyncctl exits before the marker reached the target (or during the stream), the run is
# reported as "continuous mode not available" with the tail of its output.
# ---------------------------------------------------------------------------------------------

class Xtsync(Tool):
    name = "xtsync"

    def xtsyncctl(self) -> str:
        return os.path.join(XTSYNC_BIN, "xtsyncctl")

    def start(self) -> None:
        ctl = self.xtsyncctl()
        if not os.access(ctl, os.X_OK):
            raise ToolError(f"SKIPPED: {ctl} not found (set XTSYNC_BIN to the directory of xtsyncctl)")
        helptext = subprocess.run([ctl, "quickstart", "--help"], capture_output=True, text=True).stdout
        self.info["versions"] = {"xtsyncctl": version(f"{ctl} --version")}
        if "--once" not in helptext:
            self.info["notes"].append("quickstart --help does not mention --once: continuous semantics unknown")
        hl = helptext.splitlines()
        i = next((n for n, line in enumerate(hl) if line.strip().startswith("--once")), None)
        self.info["help_once"] = " ".join(line.strip() for line in hl[i:i + 2]) if i is not None else None
        if "Seconds between passes" in helptext:
            self.info["notes"].append("this build's quickstart without --once repeats full passes every "
                                      "--interval-s seconds (periodic, not event-driven change capture)")
        state = os.path.join(self.run_dir, "xtsync-state")
        port = free_port(7480)
        cmd = [ctl, "quickstart", "--source", self.src, "--target", self.dst, "--state", state,
               "--coordinator", f"127.0.0.1:{port}"] + shlex.split(self.a.xtsync_args)
        self.info["cmd"] = shlex.join(cmd)
        env = dict(os.environ)
        env.pop("XTSYNC_COORDINATOR", None)
        self.ctl = self.spawn(cmd, "xtsyncctl.out", env=env)

    def check_alive(self) -> None:
        rc = self.ctl.poll()
        if rc is not None:
            raise ToolError(f"CONTINUOUS MODE NOT AVAILABLE? xtsyncctl quickstart (without --once) exited with "
                            f"status {rc} instead of replicating until interrupted; its output:\n"
                            + self.error_excerpt())

    def error_excerpt(self) -> str:
        """The output before the first 'Error:' line and a few lines of it (not the whole backtrace)."""
        try:
            with open(os.path.join(self.run_dir, "xtsyncctl.out"), errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return ""
        for i, line in enumerate(lines):
            if line.startswith("Error:"):
                end = next((j for j in range(i, len(lines)) if "Stack backtrace" in lines[j]), i + 8)
                return "".join(lines[max(0, i - 8):min(end, i + 8)])
        return "".join(lines[-15:])

    def stop(self) -> None:
        if self.ctl.poll() is None:
            self.ctl.send_signal(signal.SIGINT)
            try:
                self.ctl.wait(15)
            except subprocess.TimeoutExpired:
                pass
        super().stop()

    def extra_stats(self) -> dict:
        return {"xtsyncctl_output_tail": self.log_tail("xtsyncctl.out", 5)}


def make_tool(a, run_dir, src, dst, cg) -> Tool:
    if a.tool.startswith("lsyncd-"):
        return Lsyncd(a.tool.split("-", 1)[1], a, run_dir, src, dst, cg)
    return Xtsync(a, run_dir, src, dst, cg)


# ====================================================================== measurement

def pct(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 1)) - 1))   # nearest rank
    return sorted_vals[i]


def latency_stats(lat_ms: list[float]) -> dict:
    s = sorted(lat_ms)
    r = lambda v: None if v is None else round(v, 1)  # noqa: E731
    return {"count": len(s), "p50_ms": r(pct(s, .50)), "p90_ms": r(pct(s, .90)), "p99_ms": r(pct(s, .99)),
            "p999_ms": r(pct(s, .999)), "max_ms": r(s[-1] if s else None),
            "mean_ms": r(sum(s) / len(s) if s else None), "min_ms": r(s[0] if s else None)}


def wait_marker(tool: Tool, src: str, dst: str, timeout: float) -> float:
    """Write a marker into the source; wait until it is at the target with its content."""
    t0 = time.monotonic()
    name = f".xtsync-perf-ready-{os.getpid()}-{int(time.time())}"
    body = f"{name}\n".encode()
    with open(os.path.join(src, name), "wb") as f:
        f.write(body)
    while time.monotonic() - t0 < timeout:
        tool.check_alive()
        try:
            with open(os.path.join(dst, name), "rb") as f:
                if f.read() == body:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise ToolError(f"the readiness marker did not reach the target within {timeout:.0f} s")


def wait_quiet(tool: Tool, cg: CpuGroup, timeout: float, window: float = 2.0, below_pct: float = 5.0) -> float:
    """After the marker: wait until the replicator uses < below_pct of a core over `window` s
    (its initial pass may still be running although the marker already arrived)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        tool.check_alive()
        u0 = cg.usage_s()
        time.sleep(window)
        if 100 * (cg.usage_s() - u0) / window < below_pct:
            return time.monotonic() - t0
    raise ToolError(f"the replicator did not become quiet (< {below_pct}% of a core over {window} s) "
                    f"within {timeout:.0f} s after readiness")


def prepare_run(a, files: int) -> tuple[str, str, str, int]:
    info = ensure_base()
    tops = tree_tops(files)
    run_dir = os.path.join(RUN_ROOT, f"run-{os.getpid()}")
    rmtree(run_dir)
    os.makedirs(run_dir)
    src, dst = os.path.join(run_dir, "src"), os.path.join(run_dir, "dst")
    need = 2 * info["bytes"] * tops / TOPS * 1.4
    st = os.statvfs(RUN_ROOT)
    if st.f_bavail * st.f_frsize < need + 2 * 1024**3:
        sys.exit(f"not enough free space for the run copies (~{need / 1024**3:.1f} GiB needed)")
    t = time.monotonic()
    log(f"copying {tops * PER_TOP} files to {src} and {dst} ...")
    copy_tree(tops, src)
    copy_tree(tops, dst)
    os.sync()
    log(f"  copied + synced in {time.monotonic() - t:.0f} s")
    return run_dir, src, dst, tops


def run_stream(a, rec: dict) -> None:
    run_dir, src, dst, tops = prepare_run(a, a.files)
    rec["tree"] = {"files": tops * PER_TOP, "leaf_dirs": tops * SUBS, "dirs": tops * (SUBS + 1),
                   "base": ensure_base(), "source": src, "target": dst}
    t = time.monotonic()
    ops = make_schedule(a.rate, a.seconds, tops, a.seed)
    hashes = [h16(stream_bytes(a.seed, k, size)) for k, (_, _, size) in enumerate(ops)]
    nnew = sum(1 for o in ops if o[0] == "new")
    rec["stream"] = {"rate_per_s": a.rate, "seconds": a.seconds, "versions": len(ops), "new": nnew,
                     "rewrites": len(ops) - nnew, "distinct_paths": len({o[1] for o in ops}),
                     "bytes": sum(o[2] for o in ops), "sizes": "4-64 KiB uniform", "seed": a.seed,
                     "write": "open(O_WRONLY|O_CREAT|O_TRUNC, 0644), write, close in place (no fsync)"}
    log(f"schedule: {len(ops)} versions ({nnew} new, {len(ops) - nnew} rewrites), "
        f"{rec['stream']['bytes'] / 1e6:.0f} MB, prepared in {time.monotonic() - t:.1f} s")
    cg = CpuGroup(a.tool)
    rec["cpu_method"] = cg.method + (f" ({cg.path})" if cg.path else "")
    tool = make_tool(a, run_dir, src, dst, cg)
    obs = None
    try:
        t = time.monotonic()
        log(f"starting {a.tool} ...")
        tool.start()
        rec["tool"] = tool.info
        ready_s = wait_marker(tool, src, dst, a.ready_timeout)
        rec["marker_at_target_s"] = round(ready_s, 2)
        quiet_s = wait_quiet(tool, cg, a.ready_timeout)
        rec["initial_sync_s"] = round(time.monotonic() - t, 2)
        log(f"  ready: marker at the target {ready_s:.1f} s after start, replicator quiet after "
            f"{time.monotonic() - t:.1f} s")
        # observer (separate process: no GIL shared with the generator)
        ctx = mp.get_context("fork")
        pconn, cconn = ctx.Pipe()
        obs = ctx.Process(target=observer_main, args=(cconn, dst, ops, hashes, a.seed), daemon=True)
        obs.start()
        msg = pconn.recv()
        if "error" in msg:
            raise ToolError("observer: " + msg["error"])
        rec["observer_watches"] = msg["watches"]
        sampler = Sampler(cg)
        sampler.start()
        time.sleep(a.settle)
        u0, t0 = cg.usage_s(), time.monotonic_ns()
        time.sleep(min(5.0, a.settle))
        idle_pct = 100 * (cg.usage_s() - u0) / ((time.monotonic_ns() - t0) / NS)
        rec["cpu_pct_before_stream"] = round(idle_pct, 2)
        rec["loadavg_before_stream"] = os.getloadavg()
        log(f"  replicator CPU while idle before the stream: {idle_pct:.2f}% of one core; "
            f"load {os.getloadavg()[0]:.2f}; streaming {len(ops)} versions at {a.rate}/s ...")
        batches0 = tool.extra_stats().get("rsync_batches_total")

        # ---- the stream (main thread)
        close_ns = [0] * len(ops)
        late_ns = [0] * len(ops)
        mj0 = machine_jiffies()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        period = NS / a.rate
        t_start = time.monotonic_ns() + 50_000_000
        nxt = stream_bytes(a.seed, 0, ops[0][2])
        for k, (kind, rel, size) in enumerate(ops):
            data = nxt
            deadline = t_start + int(k * period)
            now = time.monotonic_ns()
            if deadline > now:
                time.sleep((deadline - now) / NS)
            late_ns[k] = time.monotonic_ns() - deadline
            fd = os.open(os.path.join(src, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            mv = memoryview(data)
            while mv:
                mv = mv[os.write(fd, mv):]
            os.close(fd)
            close_ns[k] = time.monotonic_ns()
            if k + 1 < len(ops):
                nxt = stream_bytes(a.seed, k + 1, ops[k + 1][2])
            if k % 1000 == 999:
                tool.check_alive()
        t_end = close_ns[-1]
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        mj1 = machine_jiffies()
        grace = a.grace
        pconn.send({"deadline": t_end + int(grace * NS)})
        log(f"  stream done in {(t_end - t_start) / NS:.2f} s; waiting up to {grace:.0f} s for the target ...")
        res = pconn.recv()
        obs.join(10)
        t_obs_end = time.monotonic_ns()
        sampler.stop_ev.set()
        sampler.join()
        tool.check_alive()
        rec["tool_stats_after"] = tool.extra_stats()

        visible, how, ostats = res["visible"], res["how"], res["stats"]
        lat = [(v - c) / 1e6 for v, c in zip(visible, close_ns) if v >= 0]
        lat_exact = [(v - c) / 1e6 for v, c, h in zip(visible, close_ns, how) if h == 1]
        missing = sum(1 for v in visible if v < 0)
        last_vis = max([v for v in visible if v >= 0], default=t_end)
        # CPU: window from stream start to the moment the last version was seen (or grace end)
        t_drain = max(t_end, last_vis) if missing == 0 else t_obs_end
        cpu_stream = sampler.at(t_end) - sampler.at(t_start)
        cpu_drain = sampler.at(t_drain) - sampler.at(t_start)
        win_drain = (t_drain - t_start) / NS
        win_stream = (t_end - t_start) / NS
        achieved = (len(ops) - 1) / ((t_end - close_ns[0]) / NS) if len(ops) > 1 else 0
        lates = sorted(x / 1e6 for x in late_ns)
        timeline = []
        step = int(5 * NS)
        for b0 in range(t_start, t_end + 1, step):
            sel = sorted((v - c) / 1e6 for v, c in zip(visible, close_ns) if b0 <= c < b0 + step and v >= 0)
            if sel:
                timeline.append({"t_s": round((b0 - t_start) / NS), "n": len(sel), "p50_ms": round(pct(sel, .5), 1),
                                 "p99_ms": round(pct(sel, .99), 1), "max_ms": round(sel[-1], 1)})
        batches = None
        if batches0 is not None and batches0 >= 0:
            batches = rec["tool_stats_after"].get("rsync_batches_total", 0) - batches0
        rec["figures"] = {
            "achieved_rate_per_s": round(achieved, 2),
            "stream_s": round(win_stream, 3),
            "generator_late_ms": {"p50": round(pct(lates, .5), 2), "p99": round(pct(lates, .99), 2),
                                  "max": round(lates[-1], 2)},
            "latency": latency_stats(lat),
            "latency_exact_only": latency_stats(lat_exact),
            "superseded": sum(1 for h in how if h == 2),
            "missing": missing,
            "grace_s": grace,
            "drain_s_after_stream": round((t_drain - t_end) / NS, 3),
            "cpu_pct_of_one_core": round(100 * cpu_drain / win_drain, 2),
            "cpu_s": round(cpu_drain, 3),
            "cpu_window_s": round(win_drain, 3),
            "cpu_window": "stream start -> last version visible at the target (grace end if any missing)",
            "cpu_pct_stream_window_only": round(100 * cpu_stream / win_stream, 2),
            "machine_busy_pct_of_all_cores_during_stream": round(100 * (mj1[0] - mj0[0]) / max(1, mj1[1] - mj0[1]), 1),
            "generator_cpu_s": round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 3),
            "observer": ostats,
            "timeline_5s": timeline,
        }
        if batches is not None:
            rec["figures"]["rsync_batches_during_run"] = batches
        # final check: every touched path at the target equals the source
        touched = sorted({o[1] for o in ops})
        bad = []
        for rel in touched:
            try:
                with open(os.path.join(src, rel), "rb") as f:
                    hs = h16(f.read())
                with open(os.path.join(dst, rel), "rb") as f:
                    hd = h16(f.read())
            except OSError as e:
                bad.append(f"{rel}: {e.strerror}")
                continue
            if hs != hd:
                bad.append(f"{rel}: content differs")
        rec["final_check"] = {"paths": len(touched), "differ": len(bad), "examples": bad[:5]}
        rec["status"] = "ok" if missing == 0 and not bad else "FAIL"
    except ToolError as e:
        msg = str(e)
        rec["status"] = "skipped" if msg.startswith("SKIPPED") else "unavailable" if "NOT AVAILABLE" in msg else "error"
        rec["error"] = msg
        log(f"{rec['status'].upper()}: {msg}")
    finally:
        if obs is not None and obs.is_alive():
            obs.kill()
        rec.setdefault("tool", tool.info)
        rec["processes_at_end"] = cg.processes()
        tool.stop()
        cg.close()
        rec["tool_logs"] = {n: tool.log_tail(n, 8) for n in ("lsyncd.out", "rsyncd.out", "xtsyncctl.out")
                            if os.path.exists(os.path.join(run_dir, n))}
        if not a.keep:
            log(f"removing {run_dir} ...")
            rmtree(run_dir)


def run_idle(a, rec: dict) -> None:
    run_dir, src, dst, tops = prepare_run(a, a.files)
    rec["tree"] = {"files": tops * PER_TOP, "leaf_dirs": tops * SUBS, "dirs": tops * (SUBS + 1) + 1,
                   "base": ensure_base()}
    cg = CpuGroup(a.tool + "-idle")
    rec["cpu_method"] = cg.method + (f" ({cg.path})" if cg.path else "")
    tool = make_tool(a, run_dir, src, dst, cg)
    try:
        t = time.monotonic()
        log(f"starting {a.tool} ...")
        tool.start()
        rec["tool"] = tool.info
        rec["marker_at_target_s"] = round(wait_marker(tool, src, dst, a.ready_timeout), 2)
        wait_quiet(tool, cg, a.ready_timeout)
        rec["initial_sync_s"] = round(time.monotonic() - t, 2)
        log(f"  ready (marker at the target, replicator quiet) {time.monotonic() - t:.1f} s after start; "
            f"settling {a.settle:.0f} s, then {a.idle_seconds:.0f} s idle ...")
        time.sleep(a.settle)
        rec["loadavg_before_window"] = os.getloadavg()
        u0, t0 = cg.usage_s(), time.monotonic_ns()
        rss_max = 0
        procs = []
        end = t0 + int(a.idle_seconds * NS)
        while time.monotonic_ns() < end:
            tool.check_alive()
            procs = cg.processes()
            rss_max = max(rss_max, sum(p.get("rss_kib", 0) for p in procs))
            time.sleep(min(5.0, max(0.0, (end - time.monotonic_ns()) / NS)))
        u1, t1 = cg.usage_s(), time.monotonic_ns()
        procs = cg.processes()
        rss = sum(p.get("rss_kib", 0) for p in procs)
        files = tops * PER_TOP
        rec["figures"] = {
            "idle_window_s": round((t1 - t0) / NS, 2),
            "cpu_s": round(u1 - u0, 4),
            "cpu_pct_of_one_core": round(100 * (u1 - u0) / ((t1 - t0) / NS), 3),
            "rss_kib": rss, "rss_kib_max_sampled": rss_max,
            "rss_bytes_per_watched_file": round(rss * 1024 / files, 1),
            "inotify_watches": sum(p.get("inotify_watches", 0) for p in procs),
            "fanotify_marks": sum(p.get("fanotify_marks", 0) for p in procs),
            "processes": procs,
        }
        rec["status"] = "ok"
    except ToolError as e:
        msg = str(e)
        rec["status"] = "skipped" if msg.startswith("SKIPPED") else "unavailable" if "NOT AVAILABLE" in msg else "error"
        rec["error"] = msg
        log(f"{rec['status'].upper()}: {msg}")
    finally:
        rec.setdefault("tool", tool.info)
        tool.stop()
        cg.close()
        if not a.keep:
            log(f"removing {run_dir} ...")
            rmtree(run_dir)


def summary_line(rec: dict) -> str:
    f = rec.get("figures", {})
    if rec.get("status") not in ("ok", "FAIL") or not f:
        return f"continuous tool={rec['tool_name']}{' idle' if rec['idle'] else ''} status={rec.get('status')}"
    if rec["idle"]:
        return (f"idle tool={rec['tool_name']} files={rec['tree']['files']} window_s={f['idle_window_s']} "
                f"cpu_pct_of_one_core={f['cpu_pct_of_one_core']} rss_mib={f['rss_kib'] / 1024:.1f} "
                f"rss_bytes_per_file={f['rss_bytes_per_watched_file']} inotify_watches={f['inotify_watches']} "
                f"fanotify_marks={f.get('fanotify_marks')} "
                f"status={rec['status']}")
    lat = f["latency"]
    return (f"continuous tool={rec['tool_name']} rate={rec['stream']['rate_per_s']}/s "
            f"achieved={f['achieved_rate_per_s']}/s versions={rec['stream']['versions']} "
            f"p50_ms={lat['p50_ms']} p90_ms={lat['p90_ms']} p99_ms={lat['p99_ms']} max_ms={lat['max_ms']} "
            f"missing={f['missing']} cpu_pct_of_one_core={f['cpu_pct_of_one_core']} "
            f"(stream-only {f['cpu_pct_stream_window_only']}) status={rec['status']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", required=True, choices=["lsyncd-tuned", "lsyncd-default", "lsyncd-fsync", "xtsync"])
    ap.add_argument("--idle", action="store_true", help="figure 2: watched tree, nothing changing")
    ap.add_argument("--rate", type=int, default=200, help="file versions per second (default 200)")
    ap.add_argument("--seconds", type=float, default=60, help="stream length (default 60)")
    ap.add_argument("--files", type=int, default=None,
                    help="tree size, rounded up to a multiple of 4000 (default 80000; --idle 100000)")
    ap.add_argument("--grace", type=float, default=None,
                    help="seconds after the stream before unseen versions count as missing "
                         "(default 10; lsyncd-default 45)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5, help="seconds after readiness before measuring")
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--lsyncd-max-processes", type=int, default=1, help="tuned lsyncd: rsyncs in parallel")
    ap.add_argument("--xtsync-args", default="", help="extra arguments for xtsyncctl quickstart")
    ap.add_argument("--run-root", default=None,
                    help=f"directory (on the filesystem to measure) for each run's source and target (default {ROOT})")
    ap.add_argument("--keep", action="store_true", help="keep the run's source/target/logs")
    ap.add_argument("--out", default=None, help="JSON directory (default perf/results/<UTC date>)")
    a = ap.parse_args()
    if a.files is None:
        a.files = 100_000 if a.idle else 80_000
    if a.grace is None:
        a.grace = 45.0 if a.tool == "lsyncd-default" else 10.0
    if a.tool.startswith("lsyncd") and not (shutil.which("lsyncd") and shutil.which("rsync")):
        print("lsyncd and rsync are needed: apt-get install lsyncd rsync", file=sys.stderr)
        return 2
    if a.tool == "xtsync" and not os.access(os.path.join(XTSYNC_BIN, "xtsyncctl"), os.X_OK):
        print(f"continuous tool=xtsync{' idle' if a.idle else ''} status=skipped "
              f"({os.path.join(XTSYNC_BIN, 'xtsyncctl')} not found; set XTSYNC_BIN)", flush=True)
        return 2
    os.makedirs(ROOT, exist_ok=True)
    if a.run_root:
        global RUN_ROOT
        RUN_ROOT = os.path.abspath(a.run_root)
        os.makedirs(RUN_ROOT, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    tool_name = a.tool + (f"-p{a.lsyncd_max_processes}" if a.tool in ("lsyncd-tuned", "lsyncd-fsync")
                          and a.lsyncd_max_processes != 1 else "")
    rec = {"figure": 2 if a.idle else 1, "tool_name": tool_name, "idle": a.idle,
           "date": now.isoformat(timespec="seconds"), "command": shlex.join([sys.executable] + sys.argv),
           "args": vars(a), "machine": machine()}
    log(f"machine: {json.dumps(rec['machine'])}")
    try:
        (run_idle if a.idle else run_stream)(a, rec)
    except KeyboardInterrupt:
        rec["status"] = "interrupted"
    rec["machine"]["loadavg_after"] = os.getloadavg()
    line = summary_line(rec)
    rec["summary"] = line
    if rec.get("status") != "skipped":
        out = a.out or os.path.join(HERE, "results", now.strftime("%Y-%m-%d"))
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"continuous-{tool_name}{'-idle' if a.idle else ''}-{now.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=1)
        log(f"wrote {path}")
    print(line, flush=True)
    return 0 if rec.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
