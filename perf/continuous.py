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
import datetime as dt
import json
import os
import shlex
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xtperf import RESULTS_DIR  # noqa: E402
from xtperf.basetree import ROOT, log  # noqa: E402
from xtperf.machine import machine  # noqa: E402
from xtperf.stream import run_idle, run_stream, summary_line  # noqa: E402
from xtperf.xtsync import xtsyncctl  # noqa: E402


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
    if a.tool == "xtsync" and not os.access(xtsyncctl(), os.X_OK):
        print(f"continuous tool=xtsync{' idle' if a.idle else ''} status=skipped "
              f"({xtsyncctl()} not found; set XTSYNC_BIN)", flush=True)
        return 2
    os.makedirs(ROOT, exist_ok=True)
    # Where each run's source and target live: another filesystem can be measured while
    # the base tree stays in ROOT.
    run_root = os.path.abspath(a.run_root) if a.run_root else ROOT
    os.makedirs(run_root, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    tool_name = a.tool + (f"-p{a.lsyncd_max_processes}" if a.tool in ("lsyncd-tuned", "lsyncd-fsync")
                          and a.lsyncd_max_processes != 1 else "")
    rec = {"figure": 2 if a.idle else 1, "tool_name": tool_name, "idle": a.idle,
           "date": now.isoformat(timespec="seconds"), "command": shlex.join([sys.executable] + sys.argv),
           "args": vars(a), "machine": machine(fs_of=run_root)}
    log(f"machine: {json.dumps(rec['machine'])}")
    try:
        (run_idle if a.idle else run_stream)(a, rec, run_root)
    except KeyboardInterrupt:
        rec["status"] = "interrupted"
    rec["machine"]["loadavg_after"] = os.getloadavg()
    line = summary_line(rec)
    rec["summary"] = line
    if rec.get("status") != "skipped":
        out = a.out or os.path.join(RESULTS_DIR, now.strftime("%Y-%m-%d"))
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"continuous-{tool_name}{'-idle' if a.idle else ''}-{now.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=1)
        log(f"wrote {path}")
    print(line, flush=True)
    return 0 if rec.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
