#!/usr/bin/env python3
"""xtsync end-to-end performance harness: xtsync vs rsync (daemon) vs tar|nc, same run.

    python3 perf/run.py WORKLOAD [--quick] [--cores N] [--xtsync-args "..."] [--markdown]

WORKLOAD: large | tree | nochange | change1pct | image | tmpfs | all.  See perf/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402
import targetfs  # noqa: E402
import peers  # noqa: E402
import workloads  # noqa: E402
from measure import Result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SWAP_NOTE = os.path.join(workloads.DATA_ROOT, ".swapped.json")
ALL_TOOLS = ("xtsync", "rsync", "rsync-z", "tar")


# ---------------------------------------------------------------- source swapping
# Incremental workloads with distinct v1/v2 sources present both at ONE path ("live"),
# so the initial and measured pass see the same source path (xtsync's state may key on it).

def swap_in(origin: str, live: str) -> None:
    with open(SWAP_NOTE, "w") as f:
        json.dump({"live": live, "origin": origin}, f)
    os.rename(origin, live)


def swap_out() -> None:
    try:
        with open(SWAP_NOTE) as f:
            s = json.load(f)
    except OSError:
        return
    if os.path.exists(s["live"]) and not os.path.exists(s["origin"]):
        os.rename(s["live"], s["origin"])
    os.unlink(SWAP_NOTE)


# With `--target-fs root`: ext4 without a journal (this machine's root filesystem) does
# not reuse an inode freed less than a minute ago, six while its inode-table block is
# dirty (see targetfs.py). Measured copies wait that long after the harness's last
# removal.
REMOVAL_STAMP = os.path.join(workloads.DATA_ROOT, ".last-removal")
INODE_REUSE_WAIT_S = 365


def rmtree(p: str) -> None:
    if os.path.lexists(p):
        subprocess.run(["rm", "-rf", "--one-file-system", p], check=False)
        os.makedirs(workloads.DATA_ROOT, exist_ok=True)
        with open(REMOVAL_STAMP, "w") as f:
            f.write(p + "\n")


# Workloads that create tens of thousands of files: the ones ext4's inode-reuse window
# skews (targetfs.py). The others write a few large files, which fsync through a loop
# device would slow instead (direct I/O into a sparse image).
MANY_FILES = ("tree", "nochange", "change1pct")


def resolved_target_fs(choice: str, workload: str) -> str:
    if choice != "auto":
        return choice
    return "loop" if workload in MANY_FILES else "root"


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


# ---------------------------------------------------------------- one workload

# Served xtsync daemons kept from an incremental workload's initial pass, by core count.
servers: dict = {}


def run_workload(name: str, a) -> dict:
    quick = a.quick
    print(f"== workload {name}{' (quick)' if quick else ''}", flush=True)
    data = workloads.WORKLOADS[name](quick)
    print(f"data: {json.dumps(data.info, sort_keys=True)}", flush=True)
    loop = None
    a.target_fs = resolved_target_fs(a.target_fs_choice, name)
    if data.tmpfs:
        base, target_fs = "/dev/shm", "tmpfs"
    elif a.target_fs == "loop":
        loop = targetfs.LoopFs(workloads.DATA_ROOT)
        base, target_fs = loop.mount(), loop.describe()
    else:
        base, target_fs = workloads.DATA_ROOT, "the root filesystem (ext4 without a journal here)"
    run_root = os.path.join(base, f"xtsync-perf-run-{os.getpid()}")
    print(f"run directory: {run_root} on {target_fs}", flush=True)
    rmtree(run_root)
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
        live = os.path.join(workloads.DATA_ROOT, f"xtsync-perf-live-{os.getpid()}")
    else:
        live = os.path.join(run_root, "src") if (data.tmpfs or in_place) else data.v2
    rec = {"workload": name, "quick": quick, "repeat": a.repeat, "data": data.info, "machine": measure.machine(), "target_fs": target_fs,
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "versions": {"rsync": measure.tool_version("rsync --version"),
                        "tar": measure.tool_version("tar --version"),
                        "xtsyncctl": peers.xtsyncctl() if peers.xtsync_available() else "missing"},
           "source_path": live, "timeout_s": a.timeout, "xtsync_mode": a.xtsync_mode}
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
        src_manifest = measure.manifest(msrc)
        if data.v1 != data.v2:
            measure.warm(data.v1)
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
                swap_in(data.v1, live)
            if any(t.startswith("rsync") for t in tools):
                print("initial pass: rsync -a ...", flush=True)
                r = peers.run_rsync(live, rsync_base, os.path.join(run_root, "rsyncd-init"), f"-a{hx}",
                                    a.timeout, "rsync -a (initial)")
                initial.append(r)
            if "xtsync" in tools and peers.xtsync_available():
                for c, (tg, st) in xt_targets.items():
                    print(f"initial pass: xtsync --cores {c} ...", flush=True)
                    if a.xtsync_mode == "served":
                        # The daemons stay up for the measured pass, as an operator's do.
                        servers[c] = peers.XtsyncServer(live, tg, st, c, a.xtsync_args)
                        servers[c].start()
                        initial.append(servers[c].run_pass(f"xtsync c{c} (initial)", a.timeout))
                    else:
                        initial.append(peers.run_xtsync(live, tg, st, c, a.xtsync_args, a.timeout,
                                                        f"xtsync c{c} (initial)"))
            if swapped:
                swap_out()
                swap_in(data.v2, live)
            if in_place:
                print("editing the source in place ...", flush=True)
                rec["mutation_live"] = data.mutate_live(live)
                live_manifest = measure.manifest(live)
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
        if data.incremental and "xtsync" in tools and peers.xtsync_available() and a.repeat > 1:
            for tg, st in xt_targets.values():  # pristine initial state for each repetition
                for p in (tg, st):
                    if os.path.isdir(p):
                        subprocess.run(["cp", "-a", "--reflink=auto", p, p + ".init"], check=True)
        for kind, arg in plan:
            if kind == "xtsync" and not peers.xtsync_available():
                r = peers.run_xtsync(live, *xt_targets[arg], arg, a.xtsync_args, a.timeout, f"xtsync c{arg}")
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
            ok = [r for r in reps if r.status == "ok" and r.wall_s is not None]
            pick = sorted(ok, key=lambda r: r.wall_s)[len(ok) // 2] if ok else reps[-1]
            if len(reps) > 1:
                pick.extra["repetitions"] = [{"status": r.status, "wall_s": r.wall_s, "cpu_s": r.cpu_s,
                                              "sync_s": r.sync_s, "wire_bytes": r.wire_bytes,
                                              "verify": r.verify} for r in reps]
                pick.notes.append(f"median of {len(reps)} runs by wall; walls: "
                                  + ", ".join(fmt(r.wall_s) for r in reps))
                if any(r.verify == "FAIL" for r in reps):
                    pick.verify = "FAIL"
            results.append(pick)
    except Exception as e:  # report, don't crash the whole run
        import traceback
        traceback.print_exc()
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        for server in servers.values():
            server.stop()
        servers.clear()
        swap_out()
        if a.keep:
            print(f"kept {run_root}" + (f" (umount {loop.mountpoint}; rm {loop.image})" if loop else ""), flush=True)
        elif loop:
            print(f"removing {loop.image} ...", flush=True)
            loop.remove()
        else:
            print(f"removing {run_root} ...", flush=True)
            rmtree(run_root)
    rec["results"] = [vars(r) for r in results]
    rec["initial"] = [vars(r) for r in initial]
    rec["source_bytes"] = sum(v[1] for v in src_manifest.values()) if "src_manifest" in dir() else None
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
                discard(p, run_root, a.target_fs)
                if data.incremental and os.path.isdir(p + ".init"):
                    subprocess.run(["cp", "-a", "--reflink=auto", p + ".init", p], check=True)
        if data.incremental and not os.path.isdir(target):
            return Result(label, "", status="error", notes=["initial pass left no target"])
    else:
        target = os.path.join(run_root, f"{kind}{arg or ''}-target")
        discard(target, run_root, a.target_fs)
        if kind == "rsync" and data.incremental:
            if not os.path.isdir(rsync_base):
                return Result(hx_label, "", status="error", notes=["no initial copy"])
            subprocess.run(["cp", "-a", "--reflink=auto", rsync_base, target], check=True)
    # equal starting conditions: source (and existing target) in page cache, no dirty pages
    measure.warm(live)
    if os.path.isdir(target):
        measure.warm(target)
    os.sync()
    if a.target_fs == "root" and not data.tmpfs and data.name in MANY_FILES:
        settle_after_removals()
    print(f"  measuring {kind} {arg if arg is not None else ''} (run {rep + 1}/{a.repeat}) ...", flush=True)
    if kind == "xtsync" and a.xtsync_mode == "served":
        r = peers.run_xtsync_served(live, target, state, arg, a.xtsync_args, a.timeout, label,
                                    server=servers.get(arg) if rep == 0 else None)
        if arg in servers:  # the peers run on a machine without xtsync daemons
            servers.pop(arg).stop()
    elif kind == "xtsync":
        r = peers.run_xtsync(live, target, state, arg, a.xtsync_args, a.timeout, label)
    elif kind == "rsync":
        r = peers.run_rsync(live, target, os.path.join(run_root, f"rsyncd{arg}"), arg, a.timeout, hx_label)
    else:
        r = peers.run_tarnc(live, target, a.timeout, tar_wire)
        r.notes.append("always a full copy into an empty target (tar has no incremental mode)")
    r.sync_s = measure.sync_time()
    ok, probs = measure.compare(src_manifest, target)
    r.verify = "PASS" if ok else "FAIL"
    if not ok:
        r.notes += probs
    print(f"    {r.status} wall {fmt(r.wall_s)} s, cpu {fmt(r.cpu_s)} s, "
          f"wire {fmt_b(r.wire_bytes)}, verify {r.verify}", flush=True)
    if not a.keep:
        discard(target, run_root, a.target_fs)
        if kind == "xtsync":  # served daemons may still hold it open: moved, not deleted
            discard(state, run_root, "root")
    return r


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


# ---------------------------------------------------------------- reporting

def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def fmt_b(b):
    return "-" if b is None else f"{b / 1e6:,.1f} MB"


def ratios(results: list[Result]) -> list[dict]:
    out = []
    for x in results:
        if not x.tool.startswith("xtsync") or x.status != "ok":
            continue
        for p in results:
            if p.tool.startswith("xtsync") or p.status != "ok":
                continue
            def q(a, b):
                return round(a / b, 3) if a is not None and b else None
            out.append({"xtsync": x.tool, "peer": p.tool, "wall": q(x.wall_s, p.wall_s),
                        "cpu": q(x.cpu_s, p.cpu_s), "bytes": q(x.wire_bytes, p.wire_bytes)})
    return out


def scaling(results: list[Result], nbytes) -> dict:
    tp = {r.tool: (nbytes / r.wall_s / 1e6 if r.status == "ok" and r.wall_s else None) for r in results}
    c1, c2 = tp.get("xtsync c1"), tp.get("xtsync c2")
    return {"throughput_MBps": tp, "xtsync_c2_over_c1": round(c2 / c1, 3) if c1 and c2 else None}


def table(rec: dict) -> str:
    rows = [("tool", "status", "wall s", "sync s", "cpu s", "wire", "verify")]
    for r in rec["initial"]:
        rows.append((r["tool"], r["status"], fmt(r["wall_s"]), "", fmt(r["cpu_s"]), fmt_b(r["wire_bytes"]), ""))
    for r in rec["results"]:
        rows.append((r["tool"], r["status"], fmt(r["wall_s"]), fmt(r["sync_s"]), fmt(r["cpu_s"]),
                     fmt_b(r["wire_bytes"]), r["verify"]))
    w = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(row))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    for ra in rec["ratios"]:
        lines.append(f"ratio {ra['xtsync']}/{ra['peer']}: wall {ra['wall']}, cpu {ra['cpu']}, bytes {ra['bytes']}")
    if not rec["ratios"]:
        lines.append("ratios: n/a (no successful xtsync run)")
    if rec.get("scaling"):
        lines.append(f"throughput MB/s: {json.dumps({k: round(v, 1) if v else v for k, v in rec['scaling']['throughput_MBps'].items()})}"
                     f"; xtsync c2/c1 = {rec['scaling']['xtsync_c2_over_c1']}")
    for r in rec["initial"] + rec["results"]:
        for n in r["notes"]:
            lines.append(f"note [{r['tool']}]: {n}")
    if rec.get("error"):
        lines.append(f"HARNESS ERROR: {rec['error']}")
    return "\n".join(lines)


def markdown(rec: dict) -> str:
    m = rec["machine"]
    esc = lambda t: t.replace("|", "\\|")  # noqa: E731
    out = [f"### {rec['workload']}{' (quick)' if rec['quick'] else ''} — {rec['date']}", "",
           f"Machine: {m['nproc']} cores, {m['cpu']}, kernel {m['kernel']}, RAM {m['mem']}; "
           f"{rec['versions']['rsync']}; {rec['versions']['tar']}.",
           f"Data: `{json.dumps(rec['data'], sort_keys=True)}`", "",
           "| tool | status | wall s | sync s | CPU s | bytes on wire | verify |",
           "|---|---|---:|---:|---:|---:|---|"]
    for r in rec["initial"]:
        out.append(f"| {esc(r['tool'])} | {r['status']} | {fmt(r['wall_s'])} | | {fmt(r['cpu_s'])} | "
                   f"{r['wire_bytes'] if r['wire_bytes'] is not None else '-'} | |")
    for r in rec["results"]:
        out.append(f"| {esc(r['tool'])} | {r['status']} | {fmt(r['wall_s'])} | {fmt(r['sync_s'])} | {fmt(r['cpu_s'])} | "
                   f"{r['wire_bytes'] if r['wire_bytes'] is not None else '-'} | {r['verify']} |")
    if rec["ratios"]:
        out += ["", "| xtsync / peer | wall | CPU | bytes |", "|---|---:|---:|---:|"]
        out += [f"| {x['xtsync']} / {esc(x['peer'])} | {x['wall']} | {x['cpu']} | {x['bytes']} |" for x in rec["ratios"]]
    if rec.get("scaling"):
        out += ["", f"xtsync throughput --cores 2 / --cores 1: {rec['scaling']['xtsync_c2_over_c1']}"]
    out += ["", "Commands:", ""]
    for r in rec["initial"] + rec["results"]:
        out.append(f"- {r['tool']}: `{r['command']}`" + (f" (daemon: `{r['extra']['daemon']}`)" if 'daemon' in r['extra'] else ""))
    return "\n".join(out)


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
    measure.become_subreaper()
    swap_out()  # recover from an interrupted earlier run
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    m = measure.machine()
    print(f"machine: nproc={m['nproc']} kernel={m['kernel']} cpu={m['cpu']} mem={m['mem']}")
    print(f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    if not peers.xtsync_available():
        print(f"NOTE: {peers.xtsyncctl()} not found: xtsync is skipped (set XTSYNC_BIN)")
    rc = 0
    for name in (list(workloads.WORKLOADS) if a.workload == "all" else [a.workload]):
        rec = run_workload(name, a)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join(HERE, "out", f"{name}{'-quick' if a.quick else ''}-{stamp}.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=1, default=str)
        print()
        print(table(rec))
        print("commands:")
        for r in rec["initial"] + rec["results"]:
            print(f"  {r['tool']}: {r['command']}")
            if "daemon" in r["extra"]:
                print(f"    daemon: {r['extra']['daemon']}")
        print(f"json: {path}\n")
        if a.markdown:
            print(markdown(rec) + "\n")
        if rec.get("error") or any(r["verify"] == "FAIL" or r["status"] not in ("ok", "skipped")
                                   for r in rec["results"]):
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
