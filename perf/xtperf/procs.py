"""Child processes: start, wait, kill a process group, reap strays; ports; rm -rf.

All tool processes are started as children of the harness; run.py also makes the harness
a "child subreaper" (prctl PR_SET_CHILD_SUBREAPER) so that any process a tool double-forks
or orphans is re-parented to the harness and reaped here, which puts its CPU time into
RUSAGE_CHILDREN as well.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

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


def kill_group(p: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


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


def run(cmd: str, timeout: float, env: dict | None = None) -> tuple[int | None, str, str, bool, float]:
    """Runs a shell command line in its own process group: (rc, stdout, stderr, timed out, wall s)."""
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


def free_port(start_at: int = 8730, span: int = 200) -> int:
    """The first port from start_at on that 127.0.0.1 can bind (as the daemons do, with
    SO_REUSEADDR)."""
    for port in range(start_at, start_at + span):
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


def rmtree(p: str) -> bool:
    """rm -rf --one-file-system p; False if there was nothing to remove."""
    if not os.path.lexists(p):
        return False
    subprocess.run(["rm", "-rf", "--one-file-system", p], check=False)
    return True
