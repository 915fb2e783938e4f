"""The machine and tool versions, as recorded in every JSON."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess


def machine(fs_of: str | None = None) -> dict:
    """nproc, kernel, cpu, mem, python; with fs_of also the load averages and the
    filesystem under that path (findmnt SOURCE,FSTYPE,OPTIONS), as continuous.py records."""
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
    m = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu, "mem": mem,
         "python": platform.python_version()}
    if fs_of is not None:
        fs = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", fs_of], capture_output=True, text=True)
        m.update({"loadavg": os.getloadavg(), "fs": fs.stdout.strip()})
    return m


def tool_version(cmd: str) -> str:
    """First line of `cmd`'s output (stdout, else stderr), or "?"."""
    try:
        out = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10)
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
    except Exception:
        return "?"
