#!/usr/bin/env python3
"""Bandwidth shaping (issue 3): measured throughput against the job's limit.

For each limit, one `xtsyncctl quickstart --once --rate-limit L` pass copies a fresh
incompressible file sized for ~8 s at that limit; the throughput is the pass's bytes on
the wire over its duration (from the quickstart's JSON). Prints one line per limit and
writes perf/results/<date>/shaping-<timestamp>.json.

    XTSYNC_BIN=/var/tmp/xtsync-target/release python3 perf/shaping.py [--limits 10,40] [--seconds 8]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limits", default="10,40", help="MB/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=8.0, help="target duration of each pass")
    args = ap.parse_args()
    bindir = os.environ.get("XTSYNC_BIN", "/var/tmp/xtsync-target/release")
    ctl = os.path.join(bindir, "xtsyncctl")
    if not os.path.exists(ctl):
        print(f"shaping status=skipped ({ctl} missing)")
        return 2
    results = []
    for mb in [float(x) for x in args.limits.split(",")]:
        limit = int(mb * 1e6)
        work = tempfile.mkdtemp(prefix="xtsync-shaping-", dir="/var/tmp")
        try:
            os.makedirs(f"{work}/src")
            size = int(limit * args.seconds)
            with open(f"{work}/src/payload.bin", "wb") as f:
                left = size
                while left:
                    n = min(left, 8 << 20)
                    f.write(os.urandom(n))
                    left -= n
            cmd = [ctl, "quickstart", "--once", "--json", "--compression", "never", "--rate-limit", f"{mb}MB/s",
                   "--source", f"{work}/src", "--target", f"{work}/dst", "--state", f"{work}/state"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            summary = json.loads(out.stdout.strip().splitlines()[-1])
            wire, secs = summary["bytes_on_wire"], summary["duration_s"]
            measured = wire / secs
            row = {"limit_bytes_per_s": limit, "file_bytes": size, "bytes_on_wire": wire, "duration_s": secs,
                   "measured_bytes_per_s": measured, "ratio": measured / limit}
            results.append(row)
            print(f"shaping limit={mb}MB/s file={size / 1e6:.0f}MB wire={wire / 1e6:.1f}MB pass_s={secs:.2f} "
                  f"measured={measured / 1e6:.2f}MB/s ratio={measured / limit:.3f}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", day)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, f"shaping-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json")
    with open(path, "w") as f:
        json.dump({"machine": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                               "loadavg": os.getloadavg()}, "results": results}, f, indent=1)
    print(f"wrote {path}")
    return 0 if all(abs(r["ratio"] - 1) <= 0.10 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
