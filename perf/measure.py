"""Process running, resource accounting, cache warming and tree comparison.

All tool processes are started as children of the harness; the harness also makes
itself a "child subreaper" (prctl PR_SET_CHILD_SUBREAPER) so that any process a tool
double-forks or orphans is re-parented to the harness and reaped here, which puts its
CPU time into RUSAGE_CHILDREN as well.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import resource
import shlex
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def child_pids(pid: int | None = None) -> list[int]:
    """Direct children of pid (default: the harness), from /proc."""
    pid = pid or os.getpid()
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def reap_strays(grace: float = 5.0) -> list[int]:
    """Wait for (then kill) descendants left behind by a tool; returns stray pids seen."""
    seen: list[int] = []
    deadline = time.time() + grace
    while True:
        # reap whatever already exited (orphans re-parented to us included)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
        alive = child_pids()
        if not alive:
            return seen
        seen = sorted(set(seen) | set(alive))
        if time.time() > deadline:
            for p in alive:  # processes the harness (indirectly) started
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 5
        time.sleep(0.1)


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@dataclass
class Proc:
    """A started child (shell command line) in its own process group."""
    cmd: str
    popen: subprocess.Popen
    t0: float

    def wait(self, timeout: float) -> tuple[int | None, str, str, bool]:
        timed_out = False
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(self.popen)
            out, err = self.popen.communicate()
        return self.popen.returncode, out or "", err or "", timed_out


def start(cmd: str, env: dict | None = None, stdout=subprocess.PIPE) -> Proc:
    p = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=stdout,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, **(env or {})})
    return Proc(cmd, p, time.monotonic())


def kill_group(p: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def run(cmd: str, timeout: float, env: dict | None = None) -> tuple[int | None, str, str, bool, float]:
    pr = start(cmd, env)
    rc, out, err, to = pr.wait(timeout)
    return rc, out, err, to, time.monotonic() - pr.t0


def sync_time() -> float:
    t = time.monotonic()
    os.sync()
    return time.monotonic() - t


def wait_listen(port: int, timeout: float = 10.0) -> bool:
    """Poll /proc/net/tcp for a LISTEN socket on 127.0.0.1:port (no probe connection)."""
    want = f"0100007F:{port:04X}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(fn) as f:
                    for line in f.readlines()[1:]:
                        parts = line.split()
                        if parts[3] == "0A" and (parts[1] == want or parts[1].endswith(f":{port:04X}")):
                            return True
            except OSError:
                pass
        time.sleep(0.02)
    return False


def free_port(start_at: int = 8730) -> int:
    import socket
    for port in range(start_at, start_at + 200):
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


# ---------------------------------------------------------------- cache and trees

def walk(root: str):
    """Yield (relpath, DirEntry-like lstat) for root and everything below, sorted."""
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


def compare(src_manifest: dict[str, tuple], target: str, max_report: int = 8) -> tuple[bool, list[str]]:
    """Target equals source? Checks names, type+mode, size, mtime (ns), owner, content/link."""
    problems: list[str] = []
    try:
        tm = manifest(target)
    except OSError as e:
        return False, [f"cannot walk target: {e}"]
    names = ("mode", "size", "mtime_ns", "uid", "gid", "content")
    for rel, sv in src_manifest.items():
        tv = tm.get(rel)
        if tv is None:
            problems.append(f"missing: {rel}")
            continue
        for i, (a, b) in enumerate(zip(sv, tv)):
            if a != b:
                problems.append(f"{names[i]} differs: {rel} ({a!r} vs {b!r})")
                break
    for rel in tm.keys() - src_manifest.keys():
        problems.append(f"extra: {rel}")
    return not problems, problems[:max_report] + ([f"... {len(problems)} problems"] if len(problems) > max_report else [])


# ---------------------------------------------------------------- machine

def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu, "mem": mem,
            "python": platform.python_version()}


def tool_version(cmd: str) -> str:
    try:
        out = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


@dataclass
class Result:
    tool: str
    command: str
    status: str = "ok"          # ok | FAIL | timeout | error | skipped
    wall_s: float | None = None
    cpu_s: float | None = None
    sync_s: float | None = None
    wire_bytes: int | None = None
    verify: str = "-"           # PASS | FAIL | -
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
