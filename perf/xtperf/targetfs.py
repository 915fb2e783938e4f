"""Where a workload's run directory (targets, state, the live source copy) lives, and how
files in it are removed between measurements.

By default on a fresh ext4 filesystem with a journal, on a loop device over a sparse
image next to the data sets, made for the workload run and removed after it.

Why: this machine's root filesystem is ext4 *without* a journal. There ext4 does not
reuse an inode freed less than a minute ago (six minutes while its inode-table block is
dirty, which creating files nearby makes it), and each file created meanwhile scans past
every such inode. Measured here: creating 80,000 empty files took 0.8 s on a quiet
filesystem and 14-22 s up to six minutes after an 80,000-file removal. The harness's own
cleanup, a test run or the previous workload therefore slowed whichever tool happened to
run next by up to 3x (`rsync -a` of the tree: 5.0 s, 9.4 s, 15.8 s within 20 minutes).
A fresh filesystem gives every tool of a run the same start, and a journal is what a
replication host's filesystem has. `--target-fs root` keeps the old behaviour and waits
out that window before each measured run instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from . import procs
from .datagen import DATA_ROOT

# Room left on the host filesystem beyond the image's own growth.
HOST_MARGIN_BYTES = 2 << 30


def _run(*cmd: str) -> str:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True).stdout.strip()


class LoopFs:
    """A journaled ext4 on a loop device over `<base>/targets.img`, mounted at
    `<base>/targets-mnt`."""

    def __init__(self, base: str):
        self.image = os.path.join(base, "targets.img")
        self.mountpoint = os.path.join(base, "targets-mnt")
        self.device: str | None = None

    def describe(self) -> str:
        return "ext4 (journal, default mkfs options) on a loop device (direct I/O) over a sparse image on the root disk"

    def mount(self) -> str:
        for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"--target-fs loop needs {tool} (or use --target-fs root)")
        self.remove()  # what a crashed run left
        os.makedirs(self.mountpoint, exist_ok=True)
        free = shutil.disk_usage(os.path.dirname(self.image)).free
        size = free - HOST_MARGIN_BYTES
        if size < 4 << 30:
            raise RuntimeError(f"only {free >> 20} MiB free next to the data sets; need 6 GiB for the targets")
        with open(self.image, "wb") as f:
            f.truncate(size)
        # nodiscard: do not trim the whole (sparse) image at mkfs time.
        _run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", self.image)
        self.device = _run("losetup", "--direct-io=on", "--find", "--show", self.image)
        # discard: files removed inside give their blocks back to the host filesystem.
        _run("mount", "-o", "discard", self.device, self.mountpoint)
        return self.mountpoint

    def remove(self) -> None:
        """Unmounts, detaches and deletes the image (also one left by a crashed run)."""
        if os.path.ismount(self.mountpoint):
            for attempt in range(10):
                if subprocess.run(["umount", self.mountpoint], capture_output=True).returncode == 0:
                    break
                time.sleep(0.5 * (attempt + 1))  # a daemon still closing its files
        if os.path.exists(self.image):
            for dev in _run("losetup", "--associated", self.image).splitlines():
                subprocess.run(["losetup", "--detach", dev.split(":", 1)[0]], capture_output=True)
            os.unlink(self.image)
        self.device = None


# ---------------------------------------------------------------- run directory helpers

# Workloads that create tens of thousands of files: the ones ext4's inode-reuse window
# skews. The others write a few large files, which fsync through a loop device would
# slow instead (direct I/O into a sparse image).
MANY_FILES = ("tree", "nochange", "change1pct")

# With `--target-fs root`: ext4 without a journal (this machine's root filesystem) does
# not reuse an inode freed less than a minute ago, six while its inode-table block is
# dirty. Measured copies wait that long after the harness's last removal.
REMOVAL_STAMP = os.path.join(DATA_ROOT, ".last-removal")
INODE_REUSE_WAIT_S = 365


def resolved_target_fs(choice: str, workload: str) -> str:
    """`--target-fs auto`: loop for the many-file workloads, root for the others."""
    if choice != "auto":
        return choice
    return "loop" if workload in MANY_FILES else "root"


def rmtree(p: str) -> None:
    """rm -rf, noting the time of the removal for settle_after_removals."""
    if procs.rmtree(p):
        os.makedirs(DATA_ROOT, exist_ok=True)
        with open(REMOVAL_STAMP, "w") as f:
            f.write(p + "\n")


def settle_after_removals() -> None:
    """Waits until the last removal on the root filesystem is older than ext4's
    inode-reuse window."""
    try:
        removed_at = os.path.getmtime(REMOVAL_STAMP)
    except OSError:
        return
    wait_s = removed_at + INODE_REUSE_WAIT_S - time.time()
    if wait_s > 0:
        print(f"  waiting {wait_s:.0f} s: inodes freed by the last removal are not reused yet", flush=True)
        time.sleep(wait_s)


def discard(p: str, run_root: str, target_fs: str) -> None:
    """On the fresh journaled filesystem (`--target-fs loop`): delete p now (the next
    measurement starts after a sync). On the root filesystem: move p into run_root/trash,
    deleted at the end of the workload (see settle_after_removals)."""
    if os.path.lexists(p) and target_fs == "loop":
        subprocess.run(["rm", "-rf", "--one-file-system", p], check=False)
    elif os.path.lexists(p):
        trash = os.path.join(run_root, "trash")
        os.makedirs(trash, exist_ok=True)
        os.rename(p, os.path.join(trash, f"{len(os.listdir(trash))}-{os.path.basename(p)}"))


# ---------------------------------------------------------------- source swapping
# Incremental workloads with distinct v1/v2 sources present both at ONE path ("live"),
# so the initial and measured pass see the same source path (xtsync's state may key on it).

SWAP_NOTE = os.path.join(DATA_ROOT, ".swapped.json")


def swap_in(origin: str, live: str) -> None:
    with open(SWAP_NOTE, "w") as f:
        json.dump({"live": live, "origin": origin}, f)
    os.rename(origin, live)


def swap_out() -> None:
    """Renames the live source back (also what an interrupted run left)."""
    try:
        with open(SWAP_NOTE) as f:
            s = json.load(f)
    except OSError:
        return
    if os.path.exists(s["live"]) and not os.path.exists(s["origin"]):
        os.rename(s["live"], s["origin"])
    os.unlink(SWAP_NOTE)
