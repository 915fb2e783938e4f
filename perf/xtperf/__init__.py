"""xtperf: the measurement code shared by perf/run.py (xtsync vs rsync vs tar|nc) and
perf/continuous.py (continuous replication, figures 1 and 2). Python 3.11, stdlib only.

Shared by both drivers:
  procs     child processes: start, wait, kill a group, reap strays, free ports, rm -rf
  procfs    /proc readers: a process's CPU, children, status fields, notify marks; machine jiffies
  machine   machine description and tool versions for the JSON
  stats     pure helpers: percentiles, latency summaries, ratios, median run, scaling
  xtsync    where xtsyncctl is (XTSYNC_BIN); run.py's xtsync runs (served daemons, --once)
run.py:
  report    Result (one tool run), the table, markdown rows, the JSON file
  trees     tree walk, page-cache warm-up, manifest and comparison
  peers     the peers' timed runs: rsync daemon + client, tar | nc
  datagen   deterministic data: random files, mtimes, subsets, the 1%/5% mutation
  workloads the six workloads' data sets (generated once under /var/tmp/xtsync-perf)
  targetfs  where a run's targets live (fresh journaled ext4 on a loop device, or root)
  e2e       one workload: initial passes, measured passes, verification, repetitions
continuous.py:
  basetree  the 100,000-file base tree and the stream's deterministic schedule
  observer  the inotify observer (a forked process) that times versions at the target
  cpugroup  CPU of all a replicator's processes (cgroup v2, or /proc sums) and its sampler
  replicators  the replicators under test: lsyncd (+ rsync daemon) and continuous xtsync
  stream    figure 1 (stream) and figure 2 (idle) runs, and their summary line
"""
import os

PERF_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(PERF_DIR, "out")            # run.py's JSON (git-ignored)
RESULTS_DIR = os.path.join(PERF_DIR, "results")    # continuous.py's default JSON directory
