#!/usr/bin/env python3
"""What reading capture times costs a first scan.

    bench/scan_cost.py --baseline BIN [--bin BIN] [--photos N] [--videos N]
                       [--rounds R] [--warm] [--json]

Makes a library with bench/library.py (JPEGs with camera EXIF, MP4s with
their `moov` at the end), then times a first scan of it (a fresh catalog;
uploads held by the conditions policy, so only discovery runs: walk, read,
hash, capture time, catalog) with two photosync binaries: BIN (default
target/release/photosync) and BASELINE, a build from before capture times
were read (e.g. `git worktree add /tmp/base 1ebb681` and
`cargo build --release --target-dir target/baseline` there). `rclone hashsum
sha256` over the same library, the nearest thing rclone does (read and hash
every file), is the anchor. The page cache is dropped before every run
(root only; --warm keeps it), so each run reads from the disk.

Reports the median wall time of each and the ratios BIN/BASELINE (the cost
of capture times) and BIN/rclone.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def drop_caches(warm):
    if warm:
        return
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(argv, env=None):
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - start, out


def on_battery(root):
    """A power-supply folder as sysfs shows a laptop on battery (so that a
    policy holding uploads on battery lets only discovery run)."""
    for name, files in [("AC", {"type": "Mains", "online": "0"}),
                        ("BAT0", {"type": "Battery", "status": "Discharging", "capacity": "80"})]:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for file, content in files.items():
            with open(os.path.join(root, name, file), "w") as f:
                f.write(content + "\n")
    return root


def scan_once(binary, library, scratch, warm):
    state = os.path.join(scratch, "state")
    shutil.rmtree(state, ignore_errors=True)
    power = on_battery(os.path.join(scratch, "power"))
    config = os.path.join(scratch, "config.toml")
    dest = os.path.join(scratch, "dest")
    os.makedirs(dest, exist_ok=True)
    with open(config, "w") as f:
        f.write(
            f"state_dir = {json.dumps(state)}\n"
            f'[policy]\non_battery = "hold"\npower_supply_dir = {json.dumps(power)}\n'
            f"[[source]]\npath = {json.dumps(library)}\n"
            f'[[destination]]\nname = "d"\ntype = "folder"\npath = {json.dumps(dest)}\n'
        )
    drop_caches(warm)
    seconds, out = timed([binary, "backup", "--json"], env={**os.environ, "PHOTOSYNC_CONFIG": config})
    try:
        summary = json.loads(out.stdout)
    except json.JSONDecodeError:
        sys.exit(f"{binary} backup failed: {out.stderr.decode(errors='replace')}")
    if summary["discovered"] == 0 or summary["uploaded"] != 0:
        sys.exit(f"{binary}: unexpected run: {summary}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "photosync"))
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--videos", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warm", action="store_true", help="keep the page cache (no root needed)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rclone = shutil.which("rclone")
    with tempfile.TemporaryDirectory() as scratch:
        library = os.path.join(scratch, "library")
        subprocess.run([sys.executable, os.path.join(REPO, "bench", "library.py"), library,
                        "--photos", str(a.photos), "--videos", str(a.videos), "--no-junk"],
                       check=True, capture_output=True)
        times = {"photosync": [], "baseline": [], "rclone": []}
        for _ in range(a.rounds):
            times["photosync"].append(scan_once(a.bin, library, scratch, a.warm))
            times["baseline"].append(scan_once(a.baseline, library, scratch, a.warm))
            drop_caches(a.warm)
            seconds, _ = timed([rclone, "hashsum", "sha256", library])
            times["rclone"].append(seconds)
    medians = {k: statistics.median(v) for k, v in times.items()}
    version = subprocess.run([rclone, "version"], capture_output=True, text=True).stdout.split("\n")[0]
    result = {
        "photos": a.photos,
        "videos": a.videos,
        "rounds": a.rounds,
        "cache": "warm" if a.warm else "dropped before each run",
        "seconds": medians,
        "capture_cost": medians["photosync"] / medians["baseline"],
        "vs_rclone_hashsum": medians["photosync"] / medians["rclone"],
        "rclone": version,
    }
    if a.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(f"first scan of {a.photos} photos + {a.videos} videos, {result['cache']}, median of {a.rounds}:")
        for k, v in medians.items():
            print(f"  {k:10} {v:.3f} s")
        print(f"  with capture times / without: {result['capture_cost']:.3f}")
        print(f"  photosync / {version} hashsum sha256: {result['vs_rclone_hashsum']:.3f}")


if __name__ == "__main__":
    main()
