"""continuous.py's runs: figure 1 (a stream of file versions, change-to-target latency
and the replicator's CPU) and figure 2 (idle: CPU, RSS and watches of a watched tree),
and the one-line summary of either."""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time

from . import basetree
from .basetree import PER_TOP, SUBS, TOPS, copy_tree, ensure_base, h16, log, make_schedule, stream_bytes, tree_tops
from .cpugroup import CpuGroup, Sampler
from .observer import observer_main
from .procfs import machine_jiffies
from .procs import rmtree
from .replicators import Tool, ToolError, make_tool
from .stats import latency_stats, latency_timeline, pct

NS = basetree.NS


def error_status(msg: str) -> str:
    """A run's status from the ToolError that ended it."""
    return "skipped" if msg.startswith("SKIPPED") else "unavailable" if "NOT AVAILABLE" in msg else "error"


def wait_marker(tool: Tool, src: str, dst: str, timeout: float) -> float:
    """Write a marker into the source; wait until it is at the target with its content."""
    t0 = time.monotonic()
    name = f".xtsync-perf-ready-{os.getpid()}-{int(time.time())}"
    body = f"{name}\n".encode()
    with open(os.path.join(src, name), "wb") as f:
        f.write(body)
    while time.monotonic() - t0 < timeout:
        tool.check_alive()
        try:
            with open(os.path.join(dst, name), "rb") as f:
                if f.read() == body:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise ToolError(f"the readiness marker did not reach the target within {timeout:.0f} s")


def wait_quiet(tool: Tool, cg: CpuGroup, timeout: float, window: float = 2.0, below_pct: float = 5.0) -> float:
    """After the marker: wait until the replicator uses < below_pct of a core over `window` s
    (its initial pass may still be running although the marker already arrived)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        tool.check_alive()
        u0 = cg.usage_s()
        time.sleep(window)
        if 100 * (cg.usage_s() - u0) / window < below_pct:
            return time.monotonic() - t0
    raise ToolError(f"the replicator did not become quiet (< {below_pct}% of a core over {window} s) "
                    f"within {timeout:.0f} s after readiness")


def prepare_run(a, files: int, run_root: str) -> tuple[str, str, str, int]:
    """Copies the first tree_tops(files) top directories of the base tree into the run's
    src and dst (in sync before the tool starts), then syncs."""
    info = ensure_base()
    tops = tree_tops(files)
    run_dir = os.path.join(run_root, f"run-{os.getpid()}")
    rmtree(run_dir)
    os.makedirs(run_dir)
    src, dst = os.path.join(run_dir, "src"), os.path.join(run_dir, "dst")
    need = 2 * info["bytes"] * tops / TOPS * 1.4
    st = os.statvfs(run_root)
    if st.f_bavail * st.f_frsize < need + 2 * 1024**3:
        sys.exit(f"not enough free space for the run copies (~{need / 1024**3:.1f} GiB needed)")
    t = time.monotonic()
    log(f"copying {tops * PER_TOP} files to {src} and {dst} ...")
    copy_tree(tops, src)
    copy_tree(tops, dst)
    os.sync()
    log(f"  copied + synced in {time.monotonic() - t:.0f} s")
    return run_dir, src, dst, tops


def final_check(src: str, dst: str, ops) -> dict:
    """Every path the stream touched: its content at the target equals the source's."""
    touched = sorted({o[1] for o in ops})
    bad = []
    for rel in touched:
        try:
            with open(os.path.join(src, rel), "rb") as f:
                hs = h16(f.read())
            with open(os.path.join(dst, rel), "rb") as f:
                hd = h16(f.read())
        except OSError as e:
            bad.append(f"{rel}: {e.strerror}")
            continue
        if hs != hd:
            bad.append(f"{rel}: content differs")
    return {"paths": len(touched), "differ": len(bad), "examples": bad[:5]}


def run_stream(a, rec: dict, run_root: str) -> None:
    """Figure 1: fills rec (tree, stream, tool, figures, final_check, status, ...)."""
    run_dir, src, dst, tops = prepare_run(a, a.files, run_root)
    rec["tree"] = {"files": tops * PER_TOP, "leaf_dirs": tops * SUBS, "dirs": tops * (SUBS + 1),
                   "base": ensure_base(), "source": src, "target": dst}
    t = time.monotonic()
    ops = make_schedule(a.rate, a.seconds, tops, a.seed)
    hashes = [h16(stream_bytes(a.seed, k, size)) for k, (_, _, size) in enumerate(ops)]
    nnew = sum(1 for o in ops if o[0] == "new")
    rec["stream"] = {"rate_per_s": a.rate, "seconds": a.seconds, "versions": len(ops), "new": nnew,
                     "rewrites": len(ops) - nnew, "distinct_paths": len({o[1] for o in ops}),
                     "bytes": sum(o[2] for o in ops), "sizes": "4-64 KiB uniform", "seed": a.seed,
                     "write": "open(O_WRONLY|O_CREAT|O_TRUNC, 0644), write, close in place (no fsync)"}
    log(f"schedule: {len(ops)} versions ({nnew} new, {len(ops) - nnew} rewrites), "
        f"{rec['stream']['bytes'] / 1e6:.0f} MB, prepared in {time.monotonic() - t:.1f} s")
    cg = CpuGroup(a.tool)
    rec["cpu_method"] = cg.method + (f" ({cg.path})" if cg.path else "")
    tool = make_tool(a, run_dir, src, dst, cg)
    obs = None
    try:
        t = time.monotonic()
        log(f"starting {a.tool} ...")
        tool.start()
        rec["tool"] = tool.info
        ready_s = wait_marker(tool, src, dst, a.ready_timeout)
        rec["marker_at_target_s"] = round(ready_s, 2)
        quiet_s = wait_quiet(tool, cg, a.ready_timeout)
        rec["initial_sync_s"] = round(time.monotonic() - t, 2)
        log(f"  ready: marker at the target {ready_s:.1f} s after start, replicator quiet after "
            f"{time.monotonic() - t:.1f} s")
        # observer (separate process: no GIL shared with the generator)
        ctx = mp.get_context("fork")
        pconn, cconn = ctx.Pipe()
        obs = ctx.Process(target=observer_main, args=(cconn, dst, ops, hashes, a.seed), daemon=True)
        obs.start()
        msg = pconn.recv()
        if "error" in msg:
            raise ToolError("observer: " + msg["error"])
        rec["observer_watches"] = msg["watches"]
        sampler = Sampler(cg)
        sampler.start()
        time.sleep(a.settle)
        u0, t0 = cg.usage_s(), time.monotonic_ns()
        time.sleep(min(5.0, a.settle))
        idle_pct = 100 * (cg.usage_s() - u0) / ((time.monotonic_ns() - t0) / NS)
        rec["cpu_pct_before_stream"] = round(idle_pct, 2)
        rec["loadavg_before_stream"] = os.getloadavg()
        log(f"  replicator CPU while idle before the stream: {idle_pct:.2f}% of one core; "
            f"load {os.getloadavg()[0]:.2f}; streaming {len(ops)} versions at {a.rate}/s ...")
        batches0 = tool.extra_stats().get("rsync_batches_total")

        # ---- the stream (main thread)
        close_ns = [0] * len(ops)
        late_ns = [0] * len(ops)
        mj0 = machine_jiffies()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        period = NS / a.rate
        t_start = time.monotonic_ns() + 50_000_000
        nxt = stream_bytes(a.seed, 0, ops[0][2])
        for k, (kind, rel, size) in enumerate(ops):
            data = nxt
            deadline = t_start + int(k * period)
            now = time.monotonic_ns()
            if deadline > now:
                time.sleep((deadline - now) / NS)
            late_ns[k] = time.monotonic_ns() - deadline
            fd = os.open(os.path.join(src, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            mv = memoryview(data)
            while mv:
                mv = mv[os.write(fd, mv):]
            os.close(fd)
            close_ns[k] = time.monotonic_ns()
            if k + 1 < len(ops):
                nxt = stream_bytes(a.seed, k + 1, ops[k + 1][2])
            if k % 1000 == 999:
                tool.check_alive()
        t_end = close_ns[-1]
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        mj1 = machine_jiffies()
        grace = a.grace
        pconn.send({"deadline": t_end + int(grace * NS)})
        log(f"  stream done in {(t_end - t_start) / NS:.2f} s; waiting up to {grace:.0f} s for the target ...")
        res = pconn.recv()
        obs.join(10)
        t_obs_end = time.monotonic_ns()
        sampler.stop_ev.set()
        sampler.join()
        tool.check_alive()
        rec["tool_stats_after"] = tool.extra_stats()

        visible, how, ostats = res["visible"], res["how"], res["stats"]
        lat = [(v - c) / 1e6 for v, c in zip(visible, close_ns) if v >= 0]
        lat_exact = [(v - c) / 1e6 for v, c, h in zip(visible, close_ns, how) if h == 1]
        missing = sum(1 for v in visible if v < 0)
        last_vis = max([v for v in visible if v >= 0], default=t_end)
        # CPU: window from stream start to the moment the last version was seen (or grace end)
        t_drain = max(t_end, last_vis) if missing == 0 else t_obs_end
        cpu_stream = sampler.at(t_end) - sampler.at(t_start)
        cpu_drain = sampler.at(t_drain) - sampler.at(t_start)
        win_drain = (t_drain - t_start) / NS
        win_stream = (t_end - t_start) / NS
        achieved = (len(ops) - 1) / ((t_end - close_ns[0]) / NS) if len(ops) > 1 else 0
        lates = sorted(x / 1e6 for x in late_ns)
        timeline = latency_timeline(visible, close_ns, t_start, t_end, int(5 * NS))
        batches = None
        if batches0 is not None and batches0 >= 0:
            batches = rec["tool_stats_after"].get("rsync_batches_total", 0) - batches0
        rec["figures"] = {
            "achieved_rate_per_s": round(achieved, 2),
            "stream_s": round(win_stream, 3),
            "generator_late_ms": {"p50": round(pct(lates, .5), 2), "p99": round(pct(lates, .99), 2),
                                  "max": round(lates[-1], 2)},
            "latency": latency_stats(lat),
            "latency_exact_only": latency_stats(lat_exact),
            "superseded": sum(1 for h in how if h == 2),
            "missing": missing,
            "grace_s": grace,
            "drain_s_after_stream": round((t_drain - t_end) / NS, 3),
            "cpu_pct_of_one_core": round(100 * cpu_drain / win_drain, 2),
            "cpu_s": round(cpu_drain, 3),
            "cpu_window_s": round(win_drain, 3),
            "cpu_window": "stream start -> last version visible at the target (grace end if any missing)",
            "cpu_pct_stream_window_only": round(100 * cpu_stream / win_stream, 2),
            "machine_busy_pct_of_all_cores_during_stream": round(100 * (mj1[0] - mj0[0]) / max(1, mj1[1] - mj0[1]), 1),
            "generator_cpu_s": round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 3),
            "observer": ostats,
            "timeline_5s": timeline,
        }
        if batches is not None:
            rec["figures"]["rsync_batches_during_run"] = batches
        rec["final_check"] = final_check(src, dst, ops)
        rec["status"] = "ok" if missing == 0 and not rec["final_check"]["differ"] else "FAIL"
    except ToolError as e:
        msg = str(e)
        rec["status"] = error_status(msg)
        rec["error"] = msg
        log(f"{rec['status'].upper()}: {msg}")
    finally:
        if obs is not None and obs.is_alive():
            obs.kill()
        rec.setdefault("tool", tool.info)
        rec["processes_at_end"] = cg.processes()
        tool.stop()
        cg.close()
        rec["tool_logs"] = {n: tool.log_tail(n, 8) for n in ("lsyncd.out", "rsyncd.out", "xtsyncctl.out")
                            if os.path.exists(os.path.join(run_dir, n))}
        if not a.keep:
            log(f"removing {run_dir} ...")
            rmtree(run_dir)


def run_idle(a, rec: dict, run_root: str) -> None:
    """Figure 2: fills rec (tree, tool, figures, status, ...)."""
    run_dir, src, dst, tops = prepare_run(a, a.files, run_root)
    rec["tree"] = {"files": tops * PER_TOP, "leaf_dirs": tops * SUBS, "dirs": tops * (SUBS + 1) + 1,
                   "base": ensure_base()}
    cg = CpuGroup(a.tool + "-idle")
    rec["cpu_method"] = cg.method + (f" ({cg.path})" if cg.path else "")
    tool = make_tool(a, run_dir, src, dst, cg)
    try:
        t = time.monotonic()
        log(f"starting {a.tool} ...")
        tool.start()
        rec["tool"] = tool.info
        rec["marker_at_target_s"] = round(wait_marker(tool, src, dst, a.ready_timeout), 2)
        wait_quiet(tool, cg, a.ready_timeout)
        rec["initial_sync_s"] = round(time.monotonic() - t, 2)
        log(f"  ready (marker at the target, replicator quiet) {time.monotonic() - t:.1f} s after start; "
            f"settling {a.settle:.0f} s, then {a.idle_seconds:.0f} s idle ...")
        time.sleep(a.settle)
        rec["loadavg_before_window"] = os.getloadavg()
        u0, t0 = cg.usage_s(), time.monotonic_ns()
        rss_max = 0
        procs = []
        end = t0 + int(a.idle_seconds * NS)
        while time.monotonic_ns() < end:
            tool.check_alive()
            procs = cg.processes()
            rss_max = max(rss_max, sum(p.get("rss_kib", 0) for p in procs))
            time.sleep(min(5.0, max(0.0, (end - time.monotonic_ns()) / NS)))
        u1, t1 = cg.usage_s(), time.monotonic_ns()
        procs = cg.processes()
        rss = sum(p.get("rss_kib", 0) for p in procs)
        files = tops * PER_TOP
        rec["figures"] = {
            "idle_window_s": round((t1 - t0) / NS, 2),
            "cpu_s": round(u1 - u0, 4),
            "cpu_pct_of_one_core": round(100 * (u1 - u0) / ((t1 - t0) / NS), 3),
            "rss_kib": rss, "rss_kib_max_sampled": rss_max,
            "rss_bytes_per_watched_file": round(rss * 1024 / files, 1),
            "inotify_watches": sum(p.get("inotify_watches", 0) for p in procs),
            "fanotify_marks": sum(p.get("fanotify_marks", 0) for p in procs),
            "processes": procs,
        }
        rec["status"] = "ok"
    except ToolError as e:
        msg = str(e)
        rec["status"] = error_status(msg)
        rec["error"] = msg
        log(f"{rec['status'].upper()}: {msg}")
    finally:
        rec.setdefault("tool", tool.info)
        tool.stop()
        cg.close()
        if not a.keep:
            log(f"removing {run_dir} ...")
            rmtree(run_dir)


def summary_line(rec: dict) -> str:
    f = rec.get("figures", {})
    if rec.get("status") not in ("ok", "FAIL") or not f:
        return f"continuous tool={rec['tool_name']}{' idle' if rec['idle'] else ''} status={rec.get('status')}"
    if rec["idle"]:
        return (f"idle tool={rec['tool_name']} files={rec['tree']['files']} window_s={f['idle_window_s']} "
                f"cpu_pct_of_one_core={f['cpu_pct_of_one_core']} rss_mib={f['rss_kib'] / 1024:.1f} "
                f"rss_bytes_per_file={f['rss_bytes_per_watched_file']} inotify_watches={f['inotify_watches']} "
                f"fanotify_marks={f.get('fanotify_marks')} "
                f"status={rec['status']}")
    lat = f["latency"]
    return (f"continuous tool={rec['tool_name']} rate={rec['stream']['rate_per_s']}/s "
            f"achieved={f['achieved_rate_per_s']}/s versions={rec['stream']['versions']} "
            f"p50_ms={lat['p50_ms']} p90_ms={lat['p90_ms']} p99_ms={lat['p99_ms']} max_ms={lat['max_ms']} "
            f"missing={f['missing']} cpu_pct_of_one_core={f['cpu_pct_of_one_core']} "
            f"(stream-only {f['cpu_pct_stream_window_only']}) status={rec['status']}")
