"""The replicators under continuous.py: lsyncd (inotify) -> rsync daemon, in three
variants, and xtsync's continuous quickstart. Each starts its processes inside a
CpuGroup and stops them all."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

from .cpugroup import CpuGroup
from .machine import tool_version as version
from .procs import free_port, wait_listen
from .xtsync import xtsyncctl

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
        port = free_port(8830, span=500)
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

    def start(self) -> None:
        ctl = xtsyncctl()
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
        port = free_port(7480, span=500)
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
