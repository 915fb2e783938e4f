"""CPU of all a replicator's processes (continuous.py): a cgroup v2 it runs in, or sums
over its process trees from /proc; and a sampler thread that reads it every 0.25 s."""
from __future__ import annotations

import os
import threading
import time

from . import procfs
from .basetree import log
from .stats import interpolate

class CpuGroup:
    """All the replicator's processes: a cgroup v2 when possible (usage_usec counts exited
    children too), else the process trees under the started pids (/proc utime+stime+cutime+cstime)."""

    def __init__(self, name: str):
        self.name = name
        self.roots: list[int] = []
        self.path = None
        self.method = "proc"
        root = procfs.cgroup2_root()
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
        kids = procfs.children_by_parent()
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
        ticks = (procfs.cpu_ticks(p, children=True) for p in self.pids())
        return sum(t for t in ticks if t is not None) / procfs.CLK_TCK

    def processes(self) -> list[dict]:
        out = []
        for p in self.pids():
            d = {"pid": p}
            try:
                st = procfs.status(p)
            except OSError:
                continue
            if "Name" in st:
                d["name"] = st["Name"]
            if "VmRSS" in st:
                d["rss_kib"] = int(st["VmRSS"])
            d["inotify_watches"], d["fanotify_marks"] = procfs.notify_marks(p)
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
        return interpolate(self.samples, t_ns)
