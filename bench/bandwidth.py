#!/usr/bin/env python3
"""How closely the bandwidth limit is kept: uploads a ~50 MB library to a
folder under `[policy] bandwidth`, and the same with `rclone copy --bwlimit`,
and prints each tool's achieved rate as a fraction of the limit.

    bench/bandwidth.py [--limit-mib N] [--megabytes M] [--json]

Achieved rate = bytes copied / wall-clock seconds of the whole run (so start
up, scanning and fsync count against photosync). Target: within ±15 %.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from backup_vs_rclone import release_build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-mib", type=int, default=10)
    ap.add_argument("--megabytes", type=int, default=50)
    ap.add_argument("--work", default=os.path.join(REPO, "bench", "out", "bandwidth"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    photosync = release_build()
    shutil.rmtree(a.work, ignore_errors=True)
    lib = os.path.join(a.work, "lib")
    os.makedirs(lib)
    total = 0
    for i in range(a.megabytes // 5):  # 5 MB videos
        data = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + os.urandom(5_000_000)
        with open(os.path.join(lib, f"clip_{i:02}.mp4"), "wb") as f:
            f.write(data)
        total += len(data)
    limit = a.limit_mib * 1024 * 1024
    results = {}
    for tool in ("photosync", "rclone"):
        dest = os.path.join(a.work, f"dest-{tool}")
        os.makedirs(dest)
        if tool == "photosync":
            config = os.path.join(a.work, "config.toml")
            with open(config, "w") as f:
                f.write(f'state_dir = "{a.work}/state"\n[policy]\nbandwidth = "{a.limit_mib}MiB"\n'
                        f'[[source]]\npath = "{lib}"\n[[destination]]\nname = "b"\ntype = "folder"\npath = "{dest}"\n')
            cmd = [photosync, "--config", config, "backup"]
        else:
            cmd = ["rclone", "copy", "--bwlimit", f"{a.limit_mib}M", lib, dest]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        results[tool] = {"seconds": round(seconds, 2), "rate_fraction_of_limit": round(total / seconds / limit, 3)}
    report = {"bytes": total, "limit_bytes_per_s": limit, **results}
    if a.json:
        print(json.dumps(report, indent=2))
        return
    for tool, r in results.items():
        print(f"{tool}: {total / 1e6:.0f} MB in {r['seconds']} s = {r['rate_fraction_of_limit']:.3f} × the {a.limit_mib} MiB/s limit")


if __name__ == "__main__":
    sys.exit(main())
