"""The workload mutation (1% / 5% edits, renames, new and deleted files) is deterministic:
run.py checks the run's in-place edit against a v2 reference made by the same call."""
import os
import random
import tempfile
import unittest

import _path  # noqa: F401
from xtperf import datagen, trees


def small_tree(root, n=400):
    rng = random.Random(0)
    for i in range(n):
        d = os.path.join(root, f"dir{i % 8}", f"sub{i % 3}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i:03d}.c")
        with open(p, "wb") as f:
            f.write(b"\n".join(datagen.text_lines(rng, 5 + i % 20)) + b"\n" if i % 10 else b"\0" * 300)
        os.utime(p, (datagen.T1, datagen.T1))
    datagen.fix_dir_times(root, datagen.T1)


class Mutation(unittest.TestCase):
    def test_same_seed_same_tree(self):
        with tempfile.TemporaryDirectory() as tmp:
            a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            small_tree(a)
            small_tree(b)
            before = trees.manifest(a)
            ma = datagen.mutate(a, 42, 0.05, 0.01, n_new=3, n_del=2)
            mb = datagen.mutate(b, 42, 0.05, 0.01, n_new=3, n_del=2)
            self.assertEqual(ma, mb)
            self.assertEqual(trees.manifest(a), trees.manifest(b))
            self.assertEqual((ma["modified"], ma["renamed"], ma["new"], ma["deleted"], ma["seed"]), (20, 4, 3, 2, 42))
            self.assertEqual(sum(ma["edit_ops"].values()), 20)
            after = trees.manifest(a)
            files = lambda m: {k for k, v in m.items() if v[0] & 0o170000 == 0o100000}  # noqa: E731
            self.assertEqual(len(files(after)) - len(files(before)), 3 - 2)
            self.assertEqual(len([k for k in after if "_renamed" in k]), 4)
            changed = [k for k in files(after) & files(before) if after[k][5] != before[k][5]]
            self.assertEqual(len(changed), 20)
            self.assertTrue(all(after[k][2] == datagen.T2 * 10**9 for k in changed))

    def test_one_in(self):
        keep = datagen.one_in(20)
        picked = [p for p in (f"f{i}" for i in range(2000)) if keep(p)]
        self.assertTrue(60 < len(picked) < 140)
        self.assertEqual(picked, [p for p in (f"f{i}" for i in range(2000)) if datagen.one_in(20)(p)])


if __name__ == "__main__":
    unittest.main()
