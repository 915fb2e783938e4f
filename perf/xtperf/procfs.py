"""Readers of /proc: a process's stat fields, CPU ticks, children, status lines, inotify
and fanotify marks; the machine's busy jiffies; where cgroup v2 is mounted."""
from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime,
    [12] stime, [13] cutime, [14] cstime (in clock ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def cpu_ticks(pid: int, children: bool = False) -> int | None:
    """utime + stime of a live process (all its threads), plus its waited-for children's
    with children=True; None if it is gone."""
    f = stat_fields(pid)
    if not f:
        return None
    try:
        return int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    except (IndexError, ValueError):
        return None


def cpu_s(pid: int) -> float:
    """utime + stime of a live process (all its threads), seconds (0.0 if it is gone)."""
    t = cpu_ticks(pid)
    return 0.0 if t is None else t / CLK_TCK


def _table() -> list[tuple[int, int, str]]:
    """(pid, ppid, comm) of every process."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                text = f.read()
            comm = text[text.index("(") + 1:text.rindex(")")]
            out.append((int(d), int(text.rsplit(")", 1)[1].split()[1]), comm))
        except (OSError, ValueError, IndexError):
            continue
    return out


def children(pid: int) -> dict[int, str]:
    """Direct children of pid: {pid: comm}."""
    return {p: comm for p, ppid, comm in _table() if ppid == pid}


def children_by_parent() -> dict[int, list[int]]:
    """{ppid: [pids]} over every process."""
    kids: dict[int, list[int]] = {}
    for p, ppid, _ in _table():
        kids.setdefault(ppid, []).append(p)
    return kids


def cmdline_arg(pid: int, flag: str) -> str | None:
    """The argument after `flag` on pid's command line, if any."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        return args[args.index(flag.encode()) + 1].decode()
    except (OSError, ValueError, IndexError):
        return None


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as {key: first word of the value} (OSError if the process is gone)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            words = value.split()
            if words:
                out[key] = words[0]
    return out


def peak_rss(pid: int) -> int | None:
    """VmHWM in bytes."""
    try:
        v = status(pid).get("VmHWM")
    except OSError:
        return None
    return int(v) * 1024 if v is not None else None


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


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


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
