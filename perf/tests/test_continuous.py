"""continuous.py's pieces: the deterministic schedule, the inotify observer's resolution
of versions, and the summary line and ratios of stored runs (the JSON later sessions
compare against)."""
import glob
import gzip
import json
import multiprocessing as mp
import os
import signal
import subprocess
import tempfile
import time
import unittest

import _path  # noqa: F401
from xtperf import PERF_DIR, basetree, stats, stream
from xtperf.cpugroup import CpuGroup
from xtperf.observer import observer_main
from xtperf.report import Result


def stored(pattern):
    """A stored result (perf/results/*/NAME.json[.gz]), or None."""
    for p in glob.glob(os.path.join(PERF_DIR, "results", "*", pattern + ".json*")):
        with (gzip.open(p) if p.endswith(".gz") else open(p, "rb")) as f:
            return json.load(f)
    return None


class Schedule(unittest.TestCase):
    def test_deterministic_and_shaped(self):
        ops = basetree.make_schedule(200, 5, 1, 3)
        self.assertEqual(ops, basetree.make_schedule(200, 5, 1, 3))
        self.assertNotEqual(ops, basetree.make_schedule(200, 5, 1, 4))
        self.assertEqual(len(ops), 1000)
        new = [o for o in ops if o[0] == "new"]
        self.assertTrue(0.6 < len(new) / len(ops) < 0.8)
        self.assertTrue(all(4096 <= o[2] <= 65536 for o in ops))
        self.assertTrue(all(o[1].startswith("t00/d") for o in ops))  # one top directory
        k = ops.index(new[0])
        self.assertTrue(new[0][1].endswith(f"/n{k:07d}.dat"))
        rewrites = {o[1] for o in ops if o[0] == "rewrite"}
        self.assertTrue(rewrites <= {o[1] for o in new} | {f"t00/d{(g // 100):02d}/f{g:06d}.dat" for g in range(4000)})

    def test_contents(self):
        self.assertEqual(basetree.stream_bytes(3, 7, 100), basetree.stream_bytes(3, 7, 100))
        self.assertNotEqual(basetree.stream_bytes(3, 7, 100), basetree.stream_bytes(3, 8, 100))
        b = basetree.base_file_bytes(5)
        self.assertTrue(1024 <= len(b) <= 16384)
        self.assertEqual(basetree.tree_tops(80_000), 20)
        self.assertEqual(basetree.tree_tops(80_001), 21)
        self.assertEqual(basetree.tree_tops(1), 1)
        self.assertEqual(basetree.tree_tops(10**7), basetree.TOPS)


class Observer(unittest.TestCase):
    def test_exact_superseded_and_missing(self):
        with tempfile.TemporaryDirectory() as target:
            os.makedirs(os.path.join(target, "t00/d00"))
            ops = [("new", "t00/d00/a", 100), ("rewrite", "t00/d00/a", 200), ("new", "t00/d00/b", 300),
                   ("new", "t00/d00/c", 400)]
            data = [basetree.stream_bytes(1, k, size) for k, (_, _, size) in enumerate(ops)]
            hashes = [basetree.h16(d) for d in data]
            ctx = mp.get_context("fork")
            pconn, cconn = ctx.Pipe()
            obs = ctx.Process(target=observer_main, args=(cconn, target, ops, hashes, 1), daemon=True)
            obs.start()
            self.assertEqual(pconn.recv(), {"ready": True, "watches": 3})
            t0 = time.monotonic_ns()
            for k, rel in ((1, "t00/d00/a"), (2, "t00/d00/b")):      # a's version 0 never appears
                with open(os.path.join(target, rel), "wb") as f:
                    f.write(data[k])
            with open(os.path.join(target, "t00/d00/c"), "wb") as f:  # right size, wrong content
                f.write(b"x" * 400)
            pconn.send({"deadline": time.monotonic_ns() + 1_000_000_000})
            res = pconn.recv()
            obs.join(10)
        self.assertEqual(res["how"], [2, 1, 1, 0])
        vis = res["visible"]
        self.assertEqual(vis[0], vis[1])                 # superseded at the moment its successor was seen
        self.assertTrue(all(v >= t0 for v in vis[:3]))
        self.assertEqual(vis[3], -1)
        self.assertGreaterEqual(res["stats"]["hashed"], 3)
        self.assertEqual(res["stats"]["found_only_by_final_sweep"], 0)


class ProcFallback(unittest.TestCase):
    def test_process_tree_without_a_cgroup(self):
        cg = CpuGroup.__new__(CpuGroup)     # the /proc path, as without a writable cgroup v2
        cg.name, cg.roots, cg.path, cg.method = "test", [], None, "proc"
        p = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
        try:
            cg.roots.append(p.pid)
            deadline = time.monotonic() + 5
            while len(cg.pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            procs = cg.processes()
            self.assertEqual(sorted(x["name"] for x in procs), ["sh", "sleep"])
            self.assertTrue(all(x["rss_kib"] > 0 and x["inotify_watches"] == 0 for x in procs))
            self.assertGreaterEqual(cg.usage_s(), 0.0)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class StoredRuns(unittest.TestCase):
    """Recomputes figures of stored runs with today's code."""

    def test_continuous_summary_lines(self):
        for name in ("continuous-xtsync-20261126-133540", "continuous-xtsync-idle-20261126-134046",
                     "continuous-lsyncd-tuned-20261126-132558"):
            rec = stored(name)
            if rec is None:
                self.skipTest(f"{name} not in perf/results")
            self.assertEqual(stream.summary_line(rec), rec["summary"])
            if not rec["idle"]:  # the latency fields, in their order
                self.assertEqual(list(rec["figures"]["latency"]), list(stats.latency_stats([1.0])))

    def test_run_ratios(self):
        for name in ("change1pct-20261127-014827", "tmpfs-20261127-014726", "tree-20261127-015052"):
            rec = stored(name)
            if rec is None:
                self.skipTest(f"{name} not in perf/results")
            results = [Result(**r) for r in rec["results"]]
            self.assertEqual(stats.ratios(results), rec["ratios"])
            if "scaling" in rec:
                self.assertEqual(stats.scaling(results, rec["source_bytes"]), rec["scaling"])


if __name__ == "__main__":
    unittest.main()
