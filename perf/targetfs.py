"""Where a workload's run directory (targets, state, the live source copy) lives.

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

import os
import shutil
import subprocess
import time

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
