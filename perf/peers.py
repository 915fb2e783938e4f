"""The tools: xtsync (daemons up, `xtsyncctl job run` timed; or quickstart --once), rsync
daemon (+ client), tar | nc.

Each runner takes (src, target, tmp, timeout) and returns a measure.Result with wall
time, CPU seconds of all the tool's processes (RUSAGE_CHILDREN delta around the whole
run, daemons included) and bytes on the wire. Only 127.0.0.1 is ever used.
"""
from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import time

from measure import (Result, child_pids, cpu_children, free_port, kill_group, reap_strays, run, start,
                     wait_listen)

XTSYNC_BIN = os.path.abspath(os.environ.get("XTSYNC_BIN", "/var/tmp/xtsync-target/release"))


def xtsyncctl() -> str:
    return os.path.join(XTSYNC_BIN, "xtsyncctl")


def xtsync_available() -> bool:
    return os.access(xtsyncctl(), os.X_OK)


def _finish(res: Result, rc, err: str, timed_out: bool) -> None:
    if timed_out:
        res.status = "timeout"
    elif rc != 0:
        res.status = "error"
        res.notes.append(f"exit {rc}: {err.strip()[-400:]}")


def run_xtsync(src: str, target: str, state: str, cores: int, extra_args: str, timeout: float,
               label: str = "xtsync") -> Result:
    cmd = (f"{shlex.quote(xtsyncctl())} quickstart --source {shlex.quote(src)} --target {shlex.quote(target)}"
           f" --state {shlex.quote(state)} --once --json --cores {cores} {extra_args}").strip()
    res = Result(label, cmd)
    if not xtsync_available():
        res.status = "skipped"
        res.notes.append(f"{xtsyncctl()} not found (set XTSYNC_BIN)")
        return res
    os.makedirs(os.path.dirname(target.rstrip("/")) or "/", exist_ok=True)
    cpu0 = cpu_children()
    rc, out, err, to, wall = run(cmd, timeout)
    res.extra["strays"] = reap_strays()
    res.cpu_s = cpu_children() - cpu0
    res.wall_s = wall
    _finish(res, rc, err, to)
    js = None
    for cand in [out] + out.strip().splitlines()[::-1]:
        try:
            js = json.loads(cand)
            break
        except ValueError:
            continue
    if js is None:
        if res.status == "ok":
            res.status = "error"
        res.notes.append("no JSON object on stdout")
    else:
        res.extra["xtsync"] = js
        res.wire_bytes = js.get("bytes_on_wire")
    return res


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process (all its threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _proc_children(pid: int) -> dict[int, str]:
    """Direct children of pid: {pid: comm}."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                text = f.read()
            comm = text[text.index("(") + 1:text.rindex(")")]
            if int(text.rsplit(")", 1)[1].split()[1]) == pid:
                out[int(d)] = comm
        except (OSError, ValueError, IndexError):
            continue
    return out


def _daemon_name(pid: int, comm: str) -> str:
    """A worker's --name (both workers share their comm), else comm."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        return args[args.index(b"--name") + 1].decode()
    except (OSError, ValueError, IndexError):
        return f"{comm}-{pid}"


def _peak_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


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
                out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
                os.makedirs(out_dir, exist_ok=True)
                with open(os.path.join(out_dir, "serve-failed.log"), "a") as f:
                    f.write(f"=== {' '.join(self.serve)}\n{err}\n")
            except OSError:
                pass
            return False
        self.daemons = _proc_children(self.server.pid)
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
        before = {p: _proc_cpu_s(p) for p in self.daemons}
        cpu0 = cpu_children()
        rc, out, err, to, wall = run(cmd, timeout)
        res.wall_s = wall
        res.cpu_s = cpu_children() - cpu0 + sum(_proc_cpu_s(p) - c for p, c in before.items())
        _finish(res, rc, err, to)
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
            _daemon_name(p, comm): _peak_rss(p) for p, comm in self.daemons.items() if "worker" in comm}
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
        res = Result(label, "", status="skipped")
        res.notes.append(f"{xtsyncctl()} not found (set XTSYNC_BIN)")
        return res
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


RSYNCD_CONF = """\
pid file = {tmp}/rsyncd.pid
log file = {tmp}/rsyncd.log
use chroot = no
uid = root
gid = root
[src]
    path = {src}
    read only = yes
    use chroot = no
"""


def _stat_num(text: str, key: str) -> int | None:
    m = re.search(rf"^{re.escape(key)}:\s*([\d,]+)", text, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def run_rsync(src: str, target: str, tmp: str, flags: str, timeout: float, label: str) -> Result:
    """rsync daemon (child, --no-detach) serving src; client pulls into target."""
    os.makedirs(tmp, exist_ok=True)
    port = free_port(8730)
    conf = os.path.join(tmp, "rsyncd.conf")
    with open(conf, "w") as f:
        f.write(RSYNCD_CONF.format(tmp=tmp, src=src))
    daemon_cmd = f"exec rsync --daemon --no-detach --config={conf} --address=127.0.0.1 --port={port}"
    client = f"rsync {flags} --delete --stats rsync://127.0.0.1:{port}/src/ {shlex.quote(target)}/"
    res = Result(label, client)
    res.extra["daemon"] = daemon_cmd
    os.makedirs(target, exist_ok=True)
    cpu0 = cpu_children()
    d = start(daemon_cmd)
    try:
        if not wait_listen(port):
            res.status = "error"
            res.notes.append("rsync daemon did not listen")
            return res
        rc, out, err, to, wall = run(client, timeout)
        res.wall_s = wall
        _finish(res, rc, err, to)
        # let the daemon's connection process exit (and be reaped by the daemon)
        deadline = time.time() + 10
        while child_pids(d.popen.pid) and time.time() < deadline:
            time.sleep(0.02)
        sent, recv = _stat_num(out, "Total bytes sent"), _stat_num(out, "Total bytes received")
        if sent is not None and recv is not None:
            res.wire_bytes = sent + recv
        res.extra["stats"] = {k: _stat_num(out, k) for k in (
            "Number of files", "Number of regular files transferred", "Total file size",
            "Total transferred file size", "Literal data", "Matched data", "Total bytes sent",
            "Total bytes received")}
    finally:
        kill_group(d.popen, signal.SIGTERM)
        d.wait(15)
        res.extra["strays"] = reap_strays()
        res.cpu_s = cpu_children() - cpu0
    return res


def tar_stream_bytes(src: str, timeout: float) -> int | None:
    rc, out, _, _, _ = run(f"tar -C {shlex.quote(src)} -cf - . | wc -c", timeout)
    return int(out.strip()) if rc == 0 and out.strip().isdigit() else None


def run_tarnc(src: str, target: str, timeout: float, wire: int | None) -> Result:
    port = free_port(8790)
    recv_cmd = f"nc -l 127.0.0.1 {port} | tar -C {shlex.quote(target)} -xf -"
    send_cmd = f"tar -C {shlex.quote(src)} -cf - . | nc -N 127.0.0.1 {port}"
    res = Result("tar|nc", f"{recv_cmd}  &&  {send_cmd}")
    res.wire_bytes = wire
    os.makedirs(target, exist_ok=True)
    cpu0 = cpu_children()
    r = start(recv_cmd)
    try:
        if not wait_listen(port):
            res.status = "error"
            res.notes.append("nc did not listen")
            kill_group(r.popen)
            return res
        t0 = time.monotonic()
        rc, _, err, to, _ = run(send_cmd, timeout)
        _finish(res, rc, err, to)
        rrc, _, rerr, rto, = r.wait(timeout if not to else 5)[:4]
        res.wall_s = time.monotonic() - t0
        if res.status == "ok":
            _finish(res, rrc, rerr, rto)
    finally:
        if r.popen.poll() is None:
            kill_group(r.popen)
            r.popen.wait()
        res.extra["strays"] = reap_strays()
        res.cpu_s = cpu_children() - cpu0
    return res
