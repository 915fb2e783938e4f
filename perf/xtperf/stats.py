"""Pure helpers behind the reported figures (unit-tested in perf/tests/test_stats.py)."""
from __future__ import annotations


def pct(sorted_vals: list[float], q: float) -> float | None:
    """Nearest-rank percentile q (0..1) of an ascending list; None if it is empty."""
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 1)) - 1))
    return sorted_vals[i]


def latency_stats(lat_ms: list[float]) -> dict:
    """count, p50/p90/p99/p99.9, max, mean and min (ms, one decimal) of latencies."""
    s = sorted(lat_ms)
    r = lambda v: None if v is None else round(v, 1)  # noqa: E731
    return {"count": len(s), "p50_ms": r(pct(s, .50)), "p90_ms": r(pct(s, .90)), "p99_ms": r(pct(s, .99)),
            "p999_ms": r(pct(s, .999)), "max_ms": r(s[-1] if s else None),
            "mean_ms": r(sum(s) / len(s) if s else None), "min_ms": r(s[0] if s else None)}


def ratio(a, b) -> float | None:
    """a / b to three decimals; None if a is unknown or b is unknown or zero."""
    return round(a / b, 3) if a is not None and b else None


def ratios(results) -> list[dict]:
    """xtsync/peer ratios of wall, CPU and bytes for every successful xtsync row against
    every successful peer row (rows: objects with tool, status, wall_s, cpu_s, wire_bytes)."""
    out = []
    for x in results:
        if not x.tool.startswith("xtsync") or x.status != "ok":
            continue
        for p in results:
            if p.tool.startswith("xtsync") or p.status != "ok":
                continue
            out.append({"xtsync": x.tool, "peer": p.tool, "wall": ratio(x.wall_s, p.wall_s),
                        "cpu": ratio(x.cpu_s, p.cpu_s), "bytes": ratio(x.wire_bytes, p.wire_bytes)})
    return out


def scaling(results, nbytes) -> dict:
    """tmpfs: throughput (MB/s) of every successful row, and xtsync --cores 2 over --cores 1."""
    tp = {r.tool: (nbytes / r.wall_s / 1e6 if r.status == "ok" and r.wall_s else None) for r in results}
    c1, c2 = tp.get("xtsync c1"), tp.get("xtsync c2")
    return {"throughput_MBps": tp, "xtsync_c2_over_c1": round(c2 / c1, 3) if c1 and c2 else None}


def median_run(reps: list):
    """The repetition shown for a tool: of the successful runs (status ok, a wall time),
    the median by wall (the upper one of an even count); the last run if none succeeded."""
    ok = [r for r in reps if r.status == "ok" and r.wall_s is not None]
    return sorted(ok, key=lambda r: r.wall_s)[len(ok) // 2] if ok else reps[-1]


def latency_timeline(visible: list[int], close_ns: list[int], t_start: int, t_end: int, step: int) -> list[dict]:
    """Latency per `step` ns of the stream (by close time): count, p50, p99 and max (ms) of
    the versions seen (visible >= 0); steps with none seen are left out."""
    out = []
    for b0 in range(t_start, t_end + 1, step):
        sel = sorted((v - c) / 1e6 for v, c in zip(visible, close_ns) if b0 <= c < b0 + step and v >= 0)
        if sel:
            out.append({"t_s": round((b0 - t_start) / 1e9), "n": len(sel), "p50_ms": round(pct(sel, .5), 1),
                        "p99_ms": round(pct(sel, .99), 1), "max_ms": round(sel[-1], 1)})
    return out


def interpolate(samples: list[tuple[int, float]], t_ns: int) -> float:
    """The value at t_ns of (time ns, value) samples in time order: linear between two
    samples, the first/last one outside them, 0.0 without samples."""
    if not samples:
        return 0.0
    if t_ns <= samples[0][0]:
        return samples[0][1]
    for (t0, u0), (t1, u1) in zip(samples, samples[1:]):
        if t0 <= t_ns <= t1:
            return u0 + (u1 - u0) * (t_ns - t0) / max(1, t1 - t0)
    return samples[-1][1]
