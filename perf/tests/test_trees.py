"""Verification of a target against the source's manifest, and the parsers of the
tools' output (rsync --stats, xtsync's JSON, a worker's --name)."""
import os
import tempfile
import unittest

import _path  # noqa: F401
from xtperf import peers, trees, xtsync


def make_tree(root):
    os.makedirs(os.path.join(root, "d/e"))
    with open(os.path.join(root, "d/a.txt"), "w") as f:
        f.write("alpha\n")
    with open(os.path.join(root, "d/e/b.bin"), "wb") as f:
        f.write(b"\0" * 100)
    os.symlink("a.txt", os.path.join(root, "d/link"))
    os.utime(os.path.join(root, "d/link"), (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    for p in ("d/a.txt", "d/e/b.bin", "d/e", "d", "."):
        os.utime(os.path.join(root, p), (1_700_000_000, 1_700_000_000))


class Manifest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.src, self.dst = os.path.join(self.tmp.name, "src"), os.path.join(self.tmp.name, "dst")
        make_tree(self.src)
        make_tree(self.dst)
        os.utime(self.src, (1_700_000_000, 1_700_000_000))
        os.utime(self.dst, (1_700_000_000, 1_700_000_000))

    def tearDown(self):
        self.tmp.cleanup()

    def test_entries(self):
        m = trees.manifest(self.src)
        self.assertEqual(sorted(m), [".", "d", "d/a.txt", "d/e", "d/e/b.bin", "d/link"])
        self.assertEqual(m["d/a.txt"][1:3], (6, 1_700_000_000 * 10**9))
        self.assertEqual(m["d/a.txt"][5], "d046cd9b7ffb7661e449683313d41f6fc33e3130")  # sha1("alpha\n")
        self.assertEqual(m["d/link"][5], "a.txt")
        self.assertEqual(m["d"][1], 0)  # a directory's size is not compared

    def test_equal_trees_pass(self):
        self.assertEqual(trees.compare(trees.manifest(self.src), self.dst), (True, []))

    def test_each_difference_is_named(self):
        with open(os.path.join(self.dst, "d/a.txt"), "w") as f:
            f.write("alphA\n")
        os.utime(os.path.join(self.dst, "d/a.txt"), (1_700_000_000, 1_700_000_000))
        os.unlink(os.path.join(self.dst, "d/e/b.bin"))
        open(os.path.join(self.dst, "extra"), "w").close()
        os.chmod(os.path.join(self.dst, "d/e"), 0o700)
        ok, probs = trees.compare(trees.manifest(self.src), self.dst)
        self.assertFalse(ok)
        kinds = sorted(p.split(":")[0] for p in probs)
        # the root's mtime moved with the new file; d/e's mode is its first difference
        self.assertEqual(kinds, ["content differs", "extra", "missing", "mode differs", "mtime_ns differs"])
        self.assertIn("mode differs: d/e (", "\n".join(probs))
        self.assertIn("mtime_ns differs: . (", "\n".join(probs))

    def test_mtime_checked_to_the_nanosecond(self):
        os.utime(os.path.join(self.dst, "d/a.txt"), ns=(0, 1_700_000_000 * 10**9 + 1))
        ok, probs = trees.compare(trees.manifest(self.src), self.dst)
        self.assertEqual((ok, [p.split(":")[0] for p in probs]), (False, ["mtime_ns differs"]))

    def test_report_is_capped(self):
        src = {f"f{i}": (0o100644, 1, 0, 0, 0, "x") for i in range(20)}
        probs = trees.diff(src, {}, max_report=8)
        self.assertEqual(len(probs), 9)
        self.assertEqual(probs[-1], "... 20 problems")

    def test_missing_target(self):
        ok, probs = trees.compare(trees.manifest(self.src), os.path.join(self.tmp.name, "none"))
        self.assertFalse(ok)
        self.assertTrue(probs[0].startswith("cannot walk target:"))


class Parsers(unittest.TestCase):
    def test_rsync_stats(self):
        out = ("Number of files: 4,003 (reg: 3,939, dir: 61, link: 3)\n"
               "Total bytes sent: 1,234\nTotal bytes received: 63,914,894\n")
        self.assertEqual(peers.stat_num(out, "Number of files"), 4003)
        self.assertEqual(peers.stat_num(out, "Total bytes received"), 63914894)
        self.assertIsNone(peers.stat_num(out, "Literal data"))
        self.assertIsNone(peers.stat_num("x Total bytes sent: 5", "Total bytes sent"))  # line start only

    def test_last_json(self):
        self.assertEqual(xtsync.last_json('{"a": 1}'), {"a": 1})
        self.assertEqual(xtsync.last_json('progress\n{"a": 1}\n{"b": 2}\n'), {"b": 2})
        self.assertEqual(xtsync.last_json('{\n "a": 1\n}\n'), {"a": 1})
        self.assertIsNone(xtsync.last_json("no json here\n"))

    def test_daemon_name_falls_back_to_comm_pid(self):
        self.assertEqual(xtsync.daemon_name(os.getpid(), "python3"), f"python3-{os.getpid()}")


if __name__ == "__main__":
    unittest.main()
