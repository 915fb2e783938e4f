"""run.py's records: one tool run (Result), the table, the markdown rows for
perf/RESULTS.md, the command list and the JSON file."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Result:
    tool: str
    command: str
    status: str = "ok"          # ok | FAIL | timeout | error | skipped
    wall_s: float | None = None
    cpu_s: float | None = None
    sync_s: float | None = None
    wire_bytes: int | None = None
    verify: str = "-"           # PASS | FAIL | -
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def finish(res: Result, rc, err: str, timed_out: bool) -> None:
    """A run's status from its exit: timeout, or error with the end of its stderr."""
    if timed_out:
        res.status = "timeout"
    elif rc != 0:
        res.status = "error"
        res.notes.append(f"exit {rc}: {err.strip()[-400:]}")


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def fmt_b(b):
    return "-" if b is None else f"{b / 1e6:,.1f} MB"


def repetitions(pick: Result, reps: list[Result]) -> None:
    """Records every repetition of a tool in the run shown (pick); a failed verification
    in any of them fails the row."""
    pick.extra["repetitions"] = [{"status": r.status, "wall_s": r.wall_s, "cpu_s": r.cpu_s,
                                  "sync_s": r.sync_s, "wire_bytes": r.wire_bytes,
                                  "verify": r.verify} for r in reps]
    pick.notes.append(f"median of {len(reps)} runs by wall; walls: " + ", ".join(fmt(r.wall_s) for r in reps))
    if any(r.verify == "FAIL" for r in reps):
        pick.verify = "FAIL"


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
        tp = {k: round(v, 1) if v else v for k, v in rec['scaling']['throughput_MBps'].items()}
        lines.append(f"throughput MB/s: {json.dumps(tp)}; xtsync c2/c1 = {rec['scaling']['xtsync_c2_over_c1']}")
    for r in rec["initial"] + rec["results"]:
        for n in r["notes"]:
            lines.append(f"note [{r['tool']}]: {n}")
    if rec.get("error"):
        lines.append(f"HARNESS ERROR: {rec['error']}")
    return "\n".join(lines)


def commands(rec: dict) -> list[str]:
    """The exact command of every run (and its daemon's), as printed after the table."""
    out = []
    for r in rec["initial"] + rec["results"]:
        out.append(f"  {r['tool']}: {r['command']}")
        if "daemon" in r["extra"]:
            out.append(f"    daemon: {r['extra']['daemon']}")
    return out


def markdown(rec: dict) -> str:
    m = rec["machine"]
    esc = lambda t: t.replace("|", "\\|")  # noqa: E731
    wire = lambda r: r['wire_bytes'] if r['wire_bytes'] is not None else '-'  # noqa: E731
    out = [f"### {rec['workload']}{' (quick)' if rec['quick'] else ''} — {rec['date']}", "",
           f"Machine: {m['nproc']} cores, {m['cpu']}, kernel {m['kernel']}, RAM {m['mem']}; "
           f"{rec['versions']['rsync']}; {rec['versions']['tar']}.",
           f"Data: `{json.dumps(rec['data'], sort_keys=True)}`", "",
           "| tool | status | wall s | sync s | CPU s | bytes on wire | verify |",
           "|---|---|---:|---:|---:|---:|---|"]
    for r in rec["initial"]:
        out.append(f"| {esc(r['tool'])} | {r['status']} | {fmt(r['wall_s'])} | | {fmt(r['cpu_s'])} | {wire(r)} | |")
    for r in rec["results"]:
        out.append(f"| {esc(r['tool'])} | {r['status']} | {fmt(r['wall_s'])} | {fmt(r['sync_s'])} | {fmt(r['cpu_s'])} | "
                   f"{wire(r)} | {r['verify']} |")
    if rec["ratios"]:
        out += ["", "| xtsync / peer | wall | CPU | bytes |", "|---|---:|---:|---:|"]
        out += [f"| {x['xtsync']} / {esc(x['peer'])} | {x['wall']} | {x['cpu']} | {x['bytes']} |" for x in rec["ratios"]]
    if rec.get("scaling"):
        out += ["", f"xtsync throughput --cores 2 / --cores 1: {rec['scaling']['xtsync_c2_over_c1']}"]
    out += ["", "Commands:", ""]
    for r in rec["initial"] + rec["results"]:
        out.append(f"- {r['tool']}: `{r['command']}`" + (f" (daemon: `{r['extra']['daemon']}`)" if 'daemon' in r['extra'] else ""))
    return "\n".join(out)


def failed(rec: dict) -> bool:
    """Exit status 1: a harness error, a failed verification or a run neither ok nor skipped."""
    return bool(rec.get("error") or any(r["verify"] == "FAIL" or r["status"] not in ("ok", "skipped")
                                        for r in rec["results"]))


def write_json(path: str, rec: dict) -> None:
    with open(path, "w") as f:
        json.dump(rec, f, indent=1, default=str)
