"""run.py's records: the Result fields (the JSON's per-tool keys), a run's status from its
exit, repetitions, the table, markdown rows and the exit status."""
import unittest

import _path  # noqa: F401
from xtperf import report
from xtperf.report import Result

# The per-tool keys of every run.py JSON since the first session, in this order.
RESULT_KEYS = ["tool", "command", "status", "wall_s", "cpu_s", "sync_s", "wire_bytes", "verify", "notes", "extra"]


def rec(results, initial=(), ratios=(), **kw):
    return {"workload": "tree", "quick": True, "date": "2026-12-07T00:00:00+00:00",
            "machine": {"nproc": 2, "cpu": "CPU", "kernel": "6.1", "mem": "1.0 GiB"},
            "versions": {"rsync": "rsync 3", "tar": "tar 1"}, "data": {"files": 1},
            "results": [vars(r) for r in results], "initial": [vars(r) for r in initial],
            "ratios": list(ratios), **kw}


class Fields(unittest.TestCase):
    def test_result_keys_and_defaults(self):
        r = Result("rsync -a", "rsync ...")
        self.assertEqual(list(vars(r)), RESULT_KEYS)
        self.assertEqual((r.status, r.verify, r.notes, r.extra), ("ok", "-", [], {}))
        self.assertIsNot(Result("a", "").notes, Result("b", "").notes)


class Finish(unittest.TestCase):
    def test_exit_statuses(self):
        r = Result("t", "")
        report.finish(r, 0, "", False)
        self.assertEqual((r.status, r.notes), ("ok", []))
        r = Result("t", "")
        report.finish(r, None, "", True)
        self.assertEqual(r.status, "timeout")
        r = Result("t", "")
        report.finish(r, 3, "x" * 500 + "the end\n", False)
        self.assertEqual(r.status, "error")
        self.assertEqual(r.notes, [f"exit 3: {('x' * 500 + 'the end')[-400:]}"])


class Repetitions(unittest.TestCase):
    def test_all_runs_recorded_and_a_failed_verify_fails_the_row(self):
        reps = [Result("t", "", wall_s=2.0, verify="PASS"), Result("t", "", wall_s=1.0, verify="FAIL")]
        pick = reps[0]
        report.repetitions(pick, reps)
        self.assertEqual([x["wall_s"] for x in pick.extra["repetitions"]], [2.0, 1.0])
        self.assertEqual(list(pick.extra["repetitions"][0]),
                         ["status", "wall_s", "cpu_s", "sync_s", "wire_bytes", "verify"])
        self.assertEqual(pick.notes, ["median of 2 runs by wall; walls: 2.00, 1.00"])
        self.assertEqual(pick.verify, "FAIL")


class Table(unittest.TestCase):
    def test_layout(self):
        x = Result("xtsync c2", "x", wall_s=1.0, cpu_s=2.0, sync_s=0.5, wire_bytes=1_500_000, verify="PASS")
        p = Result("rsync -a", "r", wall_s=4.0, cpu_s=1.0, sync_s=0.25, wire_bytes=None, verify="PASS",
                   notes=["a note"])
        i = Result("rsync -a (initial)", "r0", wall_s=3.0, cpu_s=1.5, wire_bytes=64_000_000)
        text = report.table(rec([x, p], [i], [{"xtsync": "xtsync c2", "peer": "rsync -a", "wall": 0.25,
                                               "cpu": 2.0, "bytes": None}], error="KeyError: 'x'"))
        self.assertEqual(text.split("\n"), [
            "tool                status  wall s  sync s  cpu s     wire  verify",
            "------------------------------------------------------------------",
            "rsync -a (initial)  ok        3.00           1.50  64.0 MB        ",
            "xtsync c2           ok        1.00    0.50   2.00   1.5 MB    PASS",
            "rsync -a            ok        4.00    0.25   1.00        -    PASS",
            "ratio xtsync c2/rsync -a: wall 0.25, cpu 2.0, bytes None",
            "note [rsync -a]: a note",
            "HARNESS ERROR: KeyError: 'x'"])

    def test_no_ratios_and_scaling(self):
        text = report.table(rec([], scaling={"throughput_MBps": {"xtsync c1": 100.04, "rsync -a": None},
                                             "xtsync_c2_over_c1": None}))
        self.assertIn("ratios: n/a (no successful xtsync run)", text)
        self.assertIn('throughput MB/s: {"xtsync c1": 100.0, "rsync -a": null}; xtsync c2/c1 = None', text)

    def test_commands_and_markdown(self):
        p = Result("tar|nc", "send", wall_s=1.0, wire_bytes=10, verify="PASS", extra={"daemon": "d"})
        r = rec([p])
        self.assertEqual(report.commands(r), ["  tar|nc: send", "    daemon: d"])
        md = report.markdown(r).split("\n")
        self.assertEqual(md[0], "### tree (quick) — 2026-12-07T00:00:00+00:00")
        self.assertIn("| tar\\|nc | ok | 1.00 | - | - | 10 | PASS |", md)
        self.assertEqual(md[-1], "- tar|nc: `send` (daemon: `d`)")


class ExitStatus(unittest.TestCase):
    def test_failed(self):
        ok, skipped = Result("a", ""), Result("b", "", status="skipped")
        self.assertFalse(report.failed(rec([ok, skipped])))
        self.assertTrue(report.failed(rec([Result("a", "", verify="FAIL")])))
        self.assertTrue(report.failed(rec([Result("a", "", status="timeout")])))
        self.assertTrue(report.failed(rec([ok], error="boom")))
        # initial passes do not decide the exit status
        self.assertFalse(report.failed(rec([ok], [Result("i", "", status="error")])))


if __name__ == "__main__":
    unittest.main()
