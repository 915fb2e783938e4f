"""The peers under run.py: rsync (daemon + client) and tar | nc, on 127.0.0.1 only.

Each runner returns a Result with wall time, CPU seconds of all the tool's processes
(RUSAGE_CHILDREN delta around the whole run, daemons included) and bytes on the wire.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import time

from .procs import child_pids, cpu_children, free_port, kill_group, reap_strays, run, start, wait_listen
from .report import Result, finish

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

RSYNC_STATS = ("Number of files", "Number of regular files transferred", "Total file size",
               "Total transferred file size", "Literal data", "Matched data", "Total bytes sent",
               "Total bytes received")


def stat_num(text: str, key: str) -> int | None:
    """The number after `key:` at the start of a line of rsync --stats output."""
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
        finish(res, rc, err, to)
        # let the daemon's connection process exit (and be reaped by the daemon)
        deadline = time.time() + 10
        while child_pids(d.popen.pid) and time.time() < deadline:
            time.sleep(0.02)
        sent, recv = stat_num(out, "Total bytes sent"), stat_num(out, "Total bytes received")
        if sent is not None and recv is not None:
            res.wire_bytes = sent + recv
        res.extra["stats"] = {k: stat_num(out, k) for k in RSYNC_STATS}
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
        finish(res, rc, err, to)
        rrc, _, rerr, rto = r.wait(timeout if not to else 5)
        res.wall_s = time.monotonic() - t0
        if res.status == "ok":
            finish(res, rrc, rerr, rto)
    finally:
        if r.popen.poll() is None:
            kill_group(r.popen)
            r.popen.wait()
        res.extra["strays"] = reap_strays()
        res.cpu_s = cpu_children() - cpu0
    return res
