"""The pure helpers behind reported figures: percentiles, latency summaries, ratios,
the median run of repetitions, tmpfs scaling, the 5-s timeline, CPU interpolation."""
import unittest
from types import SimpleNamespace as R

import _path  # noqa: F401
from xtperf import stats


def row(tool, status="ok", wall=None, cpu=None, wire=None):
    return R(tool=tool, status=status, wall_s=wall, cpu_s=cpu, wire_bytes=wire)


class Percentile(unittest.TestCase):
    def test_nearest_rank(self):
        v = [float(x) for x in range(1, 101)]          # 1..100
        self.assertEqual(stats.pct(v, 0.50), 50.0)
        self.assertEqual(stats.pct(v, 0.90), 90.0)
        self.assertEqual(stats.pct(v, 0.99), 99.0)
        self.assertEqual(stats.pct(v, 0.999), 100.0)     # rank ceil(99.9) = 100
        self.assertEqual(stats.pct(v, 0.0), 1.0)
        self.assertEqual(stats.pct(v, 1.0), 100.0)

    def test_small_and_empty(self):
        self.assertIsNone(stats.pct([], 0.5))
        self.assertEqual(stats.pct([7.0], 0.99), 7.0)
        self.assertEqual(stats.pct([1.0, 2.0], 0.5), 1.0)   # rank ceil(1.0) = 1
        self.assertEqual(stats.pct([1.0, 2.0, 3.0], 0.5), 2.0)

    def test_latency_stats(self):
        s = stats.latency_stats([30.04, 10.0, 20.0, 40.0])
        self.assertEqual(s, {"count": 4, "p50_ms": 20.0, "p90_ms": 40.0, "p99_ms": 40.0, "p999_ms": 40.0,
                             "max_ms": 40.0, "mean_ms": 25.0, "min_ms": 10.0})
        self.assertEqual(list(s), ["count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "min_ms"])
        self.assertEqual(stats.latency_stats([]), {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None,
                                                   "p999_ms": None, "max_ms": None, "mean_ms": None, "min_ms": None})


class Ratios(unittest.TestCase):
    def test_ratio(self):
        self.assertEqual(stats.ratio(1.0, 3.0), 0.333)
        self.assertEqual(stats.ratio(2, 1), 2.0)
        self.assertIsNone(stats.ratio(None, 1.0))
        self.assertIsNone(stats.ratio(1.0, None))
        self.assertIsNone(stats.ratio(1.0, 0))
        self.assertEqual(stats.ratio(0, 5), 0.0)

    def test_every_ok_xtsync_row_against_every_ok_peer(self):
        rows = [row("xtsync c2", wall=1.0, cpu=2.0, wire=100), row("rsync -a", wall=4.0, cpu=1.0, wire=400),
                row("rsync -az", status="timeout", wall=9.0), row("tar|nc", wall=2.0, cpu=None, wire=0),
                row("xtsync c1", status="error", wall=1.0)]
        self.assertEqual(stats.ratios(rows), [
            {"xtsync": "xtsync c2", "peer": "rsync -a", "wall": 0.25, "cpu": 2.0, "bytes": 0.25},
            {"xtsync": "xtsync c2", "peer": "tar|nc", "wall": 0.5, "cpu": None, "bytes": None}])

    def test_no_xtsync(self):
        self.assertEqual(stats.ratios([row("rsync -a", wall=1.0)]), [])

    def test_scaling(self):
        rows = [row("xtsync c1", wall=10.0), row("xtsync c2", wall=4.0), row("rsync -a", status="error", wall=1.0)]
        s = stats.scaling(rows, 1e9)
        self.assertEqual(s["throughput_MBps"], {"xtsync c1": 100.0, "xtsync c2": 250.0, "rsync -a": None})
        self.assertEqual(s["xtsync_c2_over_c1"], 2.5)
        self.assertIsNone(stats.scaling([row("xtsync c1", wall=10.0)], 1e9)["xtsync_c2_over_c1"])


class MedianRun(unittest.TestCase):
    def test_odd_count_takes_the_middle_wall(self):
        reps = [row("x", wall=3.0), row("x", wall=1.0), row("x", wall=2.0)]
        self.assertIs(stats.median_run(reps), reps[2])

    def test_even_count_takes_the_upper_middle(self):
        reps = [row("x", wall=4.0), row("x", wall=1.0), row("x", wall=3.0), row("x", wall=2.0)]
        self.assertIs(stats.median_run(reps), reps[2])

    def test_failed_runs_are_not_candidates(self):
        reps = [row("x", wall=1.0, status="error"), row("x", wall=5.0), row("x", wall=None)]
        self.assertIs(stats.median_run(reps), reps[1])

    def test_no_successful_run_gives_the_last(self):
        reps = [row("x", status="timeout", wall=9.0), row("x", status="error")]
        self.assertIs(stats.median_run(reps), reps[1])


class Timeline(unittest.TestCase):
    def test_buckets_by_close_time(self):
        NS = 10**9
        close = [0, 1 * NS, 6 * NS, 7 * NS, 12 * NS]
        visible = [c + d for c, d in zip(close, [10_000_000, 30_000_000, 20_000_000, -1, 5_000_000])]
        visible[3] = -1                                  # never seen: left out
        tl = stats.latency_timeline(visible, close, 0, 12 * NS, 5 * NS)
        self.assertEqual(tl, [
            {"t_s": 0, "n": 2, "p50_ms": 10.0, "p99_ms": 30.0, "max_ms": 30.0},
            {"t_s": 5, "n": 1, "p50_ms": 20.0, "p99_ms": 20.0, "max_ms": 20.0},
            {"t_s": 10, "n": 1, "p50_ms": 5.0, "p99_ms": 5.0, "max_ms": 5.0}])

    def test_empty_bucket_left_out(self):
        NS = 10**9
        tl = stats.latency_timeline([11 * NS], [10 * NS], 0, 10 * NS, 5 * NS)
        self.assertEqual([b["t_s"] for b in tl], [10])


class Interpolate(unittest.TestCase):
    def test_between_and_outside_samples(self):
        s = [(100, 1.0), (200, 3.0), (400, 4.0)]
        self.assertEqual(stats.interpolate(s, 150), 2.0)
        self.assertEqual(stats.interpolate(s, 300), 3.5)
        self.assertEqual(stats.interpolate(s, 200), 3.0)
        self.assertEqual(stats.interpolate(s, 50), 1.0)
        self.assertEqual(stats.interpolate(s, 500), 4.0)
        self.assertEqual(stats.interpolate([], 5), 0.0)


if __name__ == "__main__":
    unittest.main()
