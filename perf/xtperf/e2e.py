"""One workload of run.py: data, run directory, each tool's initial pass (incremental
workloads), the measured passes with equal starting conditions, verification, repetitions."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import traceback

from . import peers, report, targetfs, trees, workloads, xtsync
from .datagen import DATA_ROOT
from .machine import machine, tool_version
from .procs import sync_time
from .report import Result, fmt, fmt_b
from .stats import median_run, ratios, scaling

# Served xtsync daemons kept from an incremental workload's initial pass, by core count.
servers: dict = {}


def run_workload(name: str, a) -> dict:
    quick = a.quick
    print(f"== workload {name}{' (quick)' if quick else ''}", flush=True)
    data = workloads.WORKLOADS[name](quick)
    print(f"data: {json.dumps(data.info, sort_keys=True)}", flush=True)
    loop = None
    a.target_fs = targetfs.resolved_target_fs(a.target_fs_choice, name)
    if data.tmpfs:
        base, target_fs = "/dev/shm", "tmpfs"
    elif a.target_fs == "loop":
        loop = targetfs.LoopFs(DATA_ROOT)
        base, target_fs = loop.mount(), loop.describe()
    else:
        base, target_fs = DATA_ROOT, "the root filesystem (ext4 without a journal here)"
    run_root = os.path.join(base, f"xtsync-perf-run-{os.getpid()}")
    print(f"run directory: {run_root} on {target_fs}", flush=True)
    targetfs.rmtree(run_root)
    os.makedirs(run_root)
    tools = [t for t in a.tools.split(",") if t]
    cores_list = [1, 2] if name == "tmpfs" else [a.cores]
    hx = "HX" if getattr(data, "hardlinks_xattrs", False) else ""
    results: list[Result] = []
    initial: list[Result] = []
    in_place = data.mutate_live is not None
    swapped = data.incremental and data.v1 != data.v2 and not in_place
    # A swapped-in source is renamed, so it stays on the data sets' filesystem.
    if swapped:
        live = os.path.join(DATA_ROOT, f"xtsync-perf-live-{os.getpid()}")
    else:
        live = os.path.join(run_root, "src") if (data.tmpfs or in_place) else data.v2
    rec = {"workload": name, "quick": quick, "repeat": a.repeat, "data": data.info, "machine": machine(), "target_fs": target_fs,
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "versions": {"rsync": tool_version("rsync --version"),
                        "tar": tool_version("tar --version"),
                        "xtsyncctl": xtsync.xtsyncctl() if xtsync.xtsync_available() else "missing"},
           "source_path": live, "timeout_s": a.timeout, "xtsync_mode": a.xtsync_mode}
    src_manifest = None
    try:
        if data.tmpfs:
            print(f"copying source to {live} (tmpfs) ...", flush=True)
            subprocess.run(["cp", "-a", data.v2, live], check=True)
        if in_place:
            print(f"copying v1 to {live} (edited in place after the initial passes) ...", flush=True)
            subprocess.run(["cp", "-a", data.v1, live], check=True)
        t = time.monotonic()
        msrc = data.v2 if not data.tmpfs else live
        print(f"source manifest + page-cache warm-up of {msrc} ...", flush=True)
        src_manifest = trees.manifest(msrc)
        if data.v1 != data.v2:
            trees.warm(data.v1)
        rec["manifest_s"] = round(time.monotonic() - t, 2)
        tar_wire = peers.tar_stream_bytes(msrc, a.timeout) if "tar" in tools else None
        rsync_base = os.path.join(run_root, "rsync-base")
        xt_targets: dict[int, tuple[str, str]] = {}
        servers.clear()
        for c in cores_list:
            xt_targets[c] = (os.path.join(run_root, f"xtsync-c{c}-target"), os.path.join(run_root, f"xtsync-c{c}-state"))

        # ---- initial passes (incremental workloads): each tool makes its own initial copy
        if data.incremental:
            if swapped:
                targetfs.swap_in(data.v1, live)
            if any(t.startswith("rsync") for t in tools):
                print("initial pass: rsync -a ...", flush=True)
                r = peers.run_rsync(live, rsync_base, os.path.join(run_root, "rsyncd-init"), f"-a{hx}",
                                    a.timeout, "rsync -a (initial)")
                initial.append(r)
            if "xtsync" in tools and xtsync.xtsync_available():
                for c, (tg, st) in xt_targets.items():
                    print(f"initial pass: xtsync --cores {c} ...", flush=True)
                    if a.xtsync_mode == "served":
                        # The daemons stay up for the measured pass, as an operator's do.
                        servers[c] = xtsync.XtsyncServer(live, tg, st, c, a.xtsync_args)
                        servers[c].start()
                        initial.append(servers[c].run_pass(f"xtsync c{c} (initial)", a.timeout))
                    else:
                        initial.append(xtsync.run_xtsync(live, tg, st, c, a.xtsync_args, a.timeout,
                                                        f"xtsync c{c} (initial)"))
            if swapped:
                targetfs.swap_out()
                targetfs.swap_in(data.v2, live)
            if in_place:
                print("editing the source in place ...", flush=True)
                rec["mutation_live"] = data.mutate_live(live)
                live_manifest = trees.manifest(live)
                if live_manifest != src_manifest:  # v2's, taken above
                    rec["notes"] = ["the in-place edit differs from the v2 reference tree; verified against it"]
                    src_manifest = live_manifest

        # ---- measured passes
        plan = []
        if "xtsync" in tools:
            plan += [("xtsync", c) for c in cores_list]
        if "rsync" in tools:
            plan.append(("rsync", f"-a{hx}"))
        if "rsync-z" in tools:
            plan.append(("rsync", f"-az{hx}"))
        if "tar" in tools:
            plan.append(("tar", None))
        if data.incremental and "xtsync" in tools and xtsync.xtsync_available() and a.repeat > 1:
            for tg, st in xt_targets.values():  # pristine initial state for each repetition
                for p in (tg, st):
                    if os.path.isdir(p):
                        subprocess.run(["cp", "-a", "--reflink=auto", p, p + ".init"], check=True)
        for kind, arg in plan:
            if kind == "xtsync" and not xtsync.xtsync_available():
                r = xtsync.run_xtsync(live, *xt_targets[arg], arg, a.xtsync_args, a.timeout, f"xtsync c{arg}")
                results.append(r)
                print(f"  xtsync c{arg}: skipped ({r.notes[0]})", flush=True)
                continue
            reps = []
            repeat = a.repeat
            if kind == "xtsync" and a.xtsync_mode == "served" and data.incremental and repeat > 1:
                # A repetition restores the target from a copy: a new tree (its root's
                # inode and birth time), whose every entry xtsync rightly checks again.
                # That is not the pass being measured: run the workload again instead.
                repeat = 1
                rec.setdefault("notes", []).append(
                    "xtsync measured once: a target restored from a copy is a new tree for it "
                    "(every entry is checked again); rerun the workload for more samples")
            for i in range(repeat):
                reps.append(measure_once(kind, arg, i, data, a, run_root, live, xt_targets, rsync_base,
                                         src_manifest, tar_wire))
            pick = median_run(reps)
            if len(reps) > 1:
                report.repetitions(pick, reps)
            results.append(pick)
    except Exception as e:  # report, don't crash the whole run
        traceback.print_exc()
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        for server in servers.values():
            server.stop()
        servers.clear()
        targetfs.swap_out()
        if a.keep:
            print(f"kept {run_root}" + (f" (umount {loop.mountpoint}; rm {loop.image})" if loop else ""), flush=True)
        elif loop:
            print(f"removing {loop.image} ...", flush=True)
            loop.remove()
        else:
            print(f"removing {run_root} ...", flush=True)
            targetfs.rmtree(run_root)
    rec["results"] = [vars(r) for r in results]
    rec["initial"] = [vars(r) for r in initial]
    rec["source_bytes"] = sum(v[1] for v in src_manifest.values()) if src_manifest is not None else None
    rec["ratios"] = ratios(results)
    if name == "tmpfs":
        rec["scaling"] = scaling(results, rec["source_bytes"])
    return rec


def measure_once(kind, arg, rep, data, a, run_root, live, xt_targets, rsync_base, src_manifest, tar_wire) -> Result:
    """Prepare the target, warm the cache, run one measured pass, verify, clean up."""
    hx_label = f"rsync {arg}"
    if kind == "xtsync":
        target, state = xt_targets[arg]
        label = f"xtsync c{arg}"
        if rep > 0:  # fresh state for the repetition
            for p in (target, state):
                targetfs.discard(p, run_root, a.target_fs)
                if data.incremental and os.path.isdir(p + ".init"):
                    subprocess.run(["cp", "-a", "--reflink=auto", p + ".init", p], check=True)
        if data.incremental and not os.path.isdir(target):
            return Result(label, "", status="error", notes=["initial pass left no target"])
    else:
        target = os.path.join(run_root, f"{kind}{arg or ''}-target")
        targetfs.discard(target, run_root, a.target_fs)
        if kind == "rsync" and data.incremental:
            if not os.path.isdir(rsync_base):
                return Result(hx_label, "", status="error", notes=["no initial copy"])
            subprocess.run(["cp", "-a", "--reflink=auto", rsync_base, target], check=True)
    # equal starting conditions: source (and existing target) in page cache, no dirty pages
    trees.warm(live)
    if os.path.isdir(target):
        trees.warm(target)
    os.sync()
    if a.target_fs == "root" and not data.tmpfs and data.name in targetfs.MANY_FILES:
        targetfs.settle_after_removals()
    print(f"  measuring {kind} {arg if arg is not None else ''} (run {rep + 1}/{a.repeat}) ...", flush=True)
    if kind == "xtsync" and a.xtsync_mode == "served":
        r = xtsync.run_xtsync_served(live, target, state, arg, a.xtsync_args, a.timeout, label,
                                     server=servers.get(arg) if rep == 0 else None)
        if arg in servers:  # the peers run on a machine without xtsync daemons
            servers.pop(arg).stop()
    elif kind == "xtsync":
        r = xtsync.run_xtsync(live, target, state, arg, a.xtsync_args, a.timeout, label)
    elif kind == "rsync":
        r = peers.run_rsync(live, target, os.path.join(run_root, f"rsyncd{arg}"), arg, a.timeout, hx_label)
    else:
        r = peers.run_tarnc(live, target, a.timeout, tar_wire)
        r.notes.append("always a full copy into an empty target (tar has no incremental mode)")
    r.sync_s = sync_time()
    ok, probs = trees.compare(src_manifest, target)
    r.verify = "PASS" if ok else "FAIL"
    if not ok:
        r.notes += probs
    print(f"    {r.status} wall {fmt(r.wall_s)} s, cpu {fmt(r.cpu_s)} s, "
          f"wire {fmt_b(r.wire_bytes)}, verify {r.verify}", flush=True)
    if not a.keep:
        targetfs.discard(target, run_root, a.target_fs)
        if kind == "xtsync":  # served daemons may still hold it open: moved, not deleted
            targetfs.discard(state, run_root, "root")
    return r
