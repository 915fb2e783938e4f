#!/usr/bin/env python3
"""xtsync end-to-end performance harness: xtsync vs rsync (daemon) vs tar|nc, same run.

    python3 perf/run.py WORKLOAD [--quick] [--cores N] [--xtsync-args "..."] [--markdown]

WORKLOAD: large | tree | nochange | change1pct | image | tmpfs | all.  See perf/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xtperf import OUT_DIR, e2e, report, targetfs, workloads  # noqa: E402
from xtperf.machine import machine  # noqa: E402
from xtperf.procs import become_subreaper  # noqa: E402
from xtperf.xtsync import xtsync_available, xtsyncctl  # noqa: E402

ALL_TOOLS = ("xtsync", "rsync", "rsync-z", "tar")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=list(workloads.WORKLOADS) + ["all"])
    ap.add_argument("--quick", action="store_true", help="~20x smaller data (smoke run)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="passed to xtsync quickstart")
    ap.add_argument("--xtsync-args", default="", help="extra args for xtsyncctl quickstart")
    ap.add_argument("--xtsync-mode", choices=["served", "quickstart"], default="served",
                    help="served: daemons up beforehand, `xtsyncctl job run` timed (default); "
                         "quickstart: `quickstart --once` timed, daemon start-up and verification walk included")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help=f"subset of {','.join(ALL_TOOLS)}")
    ap.add_argument("--timeout", type=float, default=1200, help="per tool run, seconds")
    ap.add_argument("--markdown", action="store_true", help="also print rows for perf/RESULTS.md")
    ap.add_argument("--repeat", type=int, default=1, help="measured runs per tool; the median (by wall) is shown")
    ap.add_argument("--target-fs", dest="target_fs_choice", choices=["auto", "loop", "root"], default="auto",
                    help="loop: targets on a fresh journaled ext4 per workload run; root: on the data "
                         "sets' filesystem (many-file workloads wait out its inode-reuse window); "
                         "auto (default): loop for tree, nochange and change1pct, root for the others")
    ap.add_argument("--keep", action="store_true", help="keep targets and run dir (debugging)")
    a = ap.parse_args()
    become_subreaper()
    targetfs.swap_out()  # recover from an interrupted earlier run
    os.makedirs(OUT_DIR, exist_ok=True)
    m = machine()
    print(f"machine: nproc={m['nproc']} kernel={m['kernel']} cpu={m['cpu']} mem={m['mem']}")
    print(f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    if not xtsync_available():
        print(f"NOTE: {xtsyncctl()} not found: xtsync is skipped (set XTSYNC_BIN)")
    rc = 0
    for name in (list(workloads.WORKLOADS) if a.workload == "all" else [a.workload]):
        rec = e2e.run_workload(name, a)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join(OUT_DIR, f"{name}{'-quick' if a.quick else ''}-{stamp}.json")
        report.write_json(path, rec)
        print()
        print(report.table(rec))
        print("commands:")
        for line in report.commands(rec):
            print(line)
        print(f"json: {path}\n")
        if a.markdown:
            print(report.markdown(rec) + "\n")
        if report.failed(rec):
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
