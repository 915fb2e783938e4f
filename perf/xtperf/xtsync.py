"""xtsync under run.py: `xtsyncctl quickstart --serve` daemons with a timed `xtsyncctl job
run ID` (the operator's way, default), or a timed `quickstart --once`. Where xtsyncctl is
(XTSYNC_BIN) is also what continuous.py uses."""
from __future__ import annotations

import json
import os
import select
import shlex
import subprocess

from . import OUT_DIR, procfs
from .procs import cpu_children, kill_group, reap_strays, run
from .report import Result, finish

XTSYNC_BIN = os.path.abspath(os.environ.get("XTSYNC_BIN", "/var/tmp/xtsync-target/release"))


def xtsyncctl() -> str:
    return os.path.join(XTSYNC_BIN, "xtsyncctl")


def xtsync_available() -> bool:
    return os.access(xtsyncctl(), os.X_OK)


def skipped(label: str, command: str = "") -> Result:
    res = Result(label, command, status="skipped")
    res.notes.append(f"{xtsyncctl()} not found (set XTSYNC_BIN)")
    return res


def last_json(out: str):
    """The JSON object on stdout: all of it, or its last line that parses; None if none."""
    for cand in [out] + out.strip().splitlines()[::-1]:
        try:
            return json.loads(cand)
        except ValueError:
            continue
    return None


def run_xtsync(src: str, target: str, state: str, cores: int, extra_args: str, timeout: float,
               label: str = "xtsync") -> Result:
    """`xtsyncctl quickstart --once` timed whole (daemon start-up and verification walk included)."""
    cmd = (f"{shlex.quote(xtsyncctl())} quickstart --source {shlex.quote(src)} --target {shlex.quote(target)}"
           f" --state {shlex.quote(state)} --once --json --cores {cores} {extra_args}").strip()
    if not xtsync_available():
        return skipped(label, cmd)
    res = Result(label, cmd)
    os.makedirs(os.path.dirname(target.rstrip("/")) or "/", exist_ok=True)
    cpu0 = cpu_children()
    rc, out, err, to, wall = run(cmd, timeout)
    res.extra["strays"] = reap_strays()
    res.cpu_s = cpu_children() - cpu0
    res.wall_s = wall
    finish(res, rc, err, to)
    js = last_json(out)
    if js is None:
        if res.status == "ok":
            res.status = "error"
        res.notes.append("no JSON object on stdout")
    else:
        res.extra["xtsync"] = js
        res.wire_bytes = js.get("bytes_on_wire")
    return res


def daemon_name(pid: int, comm: str) -> str:
    """A worker's --name (both workers share their comm), else comm-pid."""
    name = procfs.cmdline_arg(pid, "--name")
    return f"{comm}-{pid}" if name is None else name


class XtsyncServer:
    """The coordinator and both workers of `xtsyncctl quickstart --serve`, kept running
    across passes (an initial pass and the measured one, as an operator's daemons)."""

    def __init__(self, src: str, target: str, state: str, cores: int, extra_args: str):
        self.serve = [xtsyncctl(), "quickstart", "--source", src, "--target", target, "--state", state,
                      "--serve", "--json", "--cores", str(cores)] + shlex.split(extra_args)
        self.server: subprocess.Popen | None = None
        self.info: dict = {}
        self.daemons: dict[int, str] = {}
        self.error = ""

    def start(self) -> bool:
        os.makedirs(self.serve[self.serve.index("--target") + 1], exist_ok=True)
        self.server = subprocess.Popen(self.serve, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
        ready, _, _ = select.select([self.server.stdout], [], [], 120)
        line = self.server.stdout.readline() if ready else ""
        try:
            self.info = json.loads(line)
        except ValueError:
            err = self.server.stderr.read() if self.server.poll() is not None else ""
            # The first lines say what failed (a panic's message, an error); keep them
            # and the end, and the whole of it beside the run's JSON.
            head, tail = err[:1500], err[-400:] if len(err) > 1900 else ""
            self.error = f"quickstart --serve did not start: {line.strip()[:200]} {head} {tail}"
            try:
                os.makedirs(OUT_DIR, exist_ok=True)
                with open(os.path.join(OUT_DIR, "serve-failed.log"), "a") as f:
                    f.write(f"=== {' '.join(self.serve)}\n{err}\n")
            except OSError:
                pass
            return False
        self.daemons = procfs.children(self.server.pid)
        return True

    def run_pass(self, label: str, timeout: float) -> Result:
        """Times `xtsyncctl job run`; CPU of the daemons during it plus the client's."""
        res = Result(label, "")
        if not self.info:
            res.status = "error"
            res.notes.append(self.error or "not started")
            return res
        i = self.info
        cmd = (f"{shlex.quote(xtsyncctl())} --coordinator {i['coordinator']} --cert {shlex.quote(i['cert'])}"
               f" --key {shlex.quote(i['key'])} --ca {shlex.quote(i['ca'])} --json job run {i['job_id']}")
        res.command = cmd
        res.extra["daemons"] = " ".join(self.serve)
        before = {p: procfs.cpu_s(p) for p in self.daemons}
        cpu0 = cpu_children()
        rc, out, err, to, wall = run(cmd, timeout)
        res.wall_s = wall
        res.cpu_s = cpu_children() - cpu0 + sum(procfs.cpu_s(p) - c for p, c in before.items())
        finish(res, rc, err, to)
        try:
            run_json = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            run_json = None
        summary = (run_json or {}).get("summary")
        if not summary:
            if res.status == "ok":
                res.status = "error"
            res.notes.append(f"no pass summary: {out.strip()[-300:]}")
            return res
        summary = dict(summary)
        summary["run_id"] = run_json.get("id")
        summary["worker_peak_rss_bytes"] = {
            daemon_name(p, comm): procfs.peak_rss(p) for p, comm in self.daemons.items() if "worker" in comm}
        res.extra["xtsync"] = summary
        res.wire_bytes = summary.get("bytes_on_wire")
        return res

    def stop(self) -> list[int]:
        if self.server is not None:
            try:
                self.server.stdin.close()
                self.server.wait(30)
            except (subprocess.TimeoutExpired, OSError):
                kill_group(self.server)
                self.server.wait(10)
            self.server = None
        return reap_strays()


def run_xtsync_served(src: str, target: str, state: str, cores: int, extra_args: str, timeout: float,
                      label: str = "xtsync", server: XtsyncServer | None = None) -> Result:
    """The operator's way: the coordinator and both workers are already running
    (`xtsyncctl quickstart --serve`, started outside the timed part, as the rsync daemon
    is), and the timed command is `xtsyncctl job run ID`, which starts the pass and
    returns when the coordinator has recorded it succeeded. With `server`, its daemons
    (kept from the initial pass) serve the pass; otherwise fresh ones, stopped after."""
    if not xtsync_available():
        return skipped(label)
    if server is not None:
        return server.run_pass(label, timeout)
    own = XtsyncServer(src, target, state, cores, extra_args)
    try:
        own.start()
        return own.run_pass(label, timeout)
    finally:
        strays = own.stop()
        if strays:
            print(f"  strays after xtsync: {strays}", flush=True)
