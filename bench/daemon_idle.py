#!/usr/bin/env python3
"""Daemon costs: idle CPU and memory while watching a large library, and
`photosync status` latency with a large catalog.

1. Makes a 20,000-file library (small JPEGs, bench/library.py), starts
   `photosync daemon`, waits until everything is uploaded, then samples the
   daemon's CPU time and RSS from /proc over 60 s of idleness.
2. Stops it, grows the catalog to 100,000 jobs (synthetic acknowledged rows
   of a source that is not configured), restarts it and times
   `photosync status --json` (whole CLI process, connect, hello, answer).

    bench/daemon_idle.py [--files N] [--idle-seconds S] [--jobs J] [--json]

Idle figures are absolute (there is no rclone daemon doing the same job);
status latency is compared with `rclone version` run the same way, the cost
of merely starting a Go CLI on this machine, so the ratio reads as "status
costs about as much as starting a program".
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

from backup_vs_rclone import release_build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid):
    """CPU seconds per thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / TICKS
    return out


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def status(env, photosync):
    out = subprocess.run([photosync, "status", "--json"], env=env, capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait_for(what, check, timeout=900):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting until {what}")
        time.sleep(0.2)


def start(photosync, env, log):
    proc = subprocess.Popen([photosync, "daemon"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for("the daemon answers", lambda: status(env, photosync) is not None, 60)
    return proc


def timed(cmd, env, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--work", default=os.path.join(REPO, "bench", "out", "daemon"))
    ap.add_argument("--library", default=os.path.join(REPO, "bench", "library.py"),
                    help="the library generator (bench/library.py)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    photosync = release_build()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    lib, dest, state = (os.path.join(a.work, d) for d in ("lib", "dest", "state"))
    os.makedirs(dest)
    subprocess.run([sys.executable, a.library, lib, "--photos", str(a.files), "--videos", "0",
                    "--photo-kib", "4", "8", "--no-junk"], check=True, capture_output=True)
    config = os.path.join(a.work, "config.toml")
    with open(config, "w") as f:
        f.write(f'state_dir = "{state}"\n[[source]]\npath = "{lib}"\n'
                f'[[destination]]\nname = "bench"\ntype = "folder"\npath = "{dest}"\n')
    env = dict(os.environ, PHOTOSYNC_CONFIG=config, PHOTOSYNC_RUNTIME_DIR=os.path.join(a.work, "run"))
    env.pop("RUST_LOG", None)
    log = open(os.path.join(a.work, "daemon.log"), "w")

    daemon = start(photosync, env, log)
    def done():
        s = status(env, photosync)
        c = s and s["scheduler"]["counts"]
        return bool(c) and c["acknowledged"] == a.files and c["queued"] == 0 and not s["scanning"]
    wait_for("the library is uploaded", done)
    time.sleep(7)  # past the 5 s settle time of the last files touched, so the window is idle
    cpu0, t0, threads0 = cpu_seconds(daemon.pid), time.monotonic(), thread_cpu(daemon.pid)
    time.sleep(a.idle_seconds)
    cpu1, t1, threads1 = cpu_seconds(daemon.pid), time.monotonic(), thread_cpu(daemon.pid)
    busy = {k: round(v - threads0.get(k, 0), 3) for k, v in threads1.items() if v - threads0.get(k, 0) > 0}
    idle = {"files": a.files, "seconds": round(t1 - t0, 1), "cpu_seconds": round(cpu1 - cpu0, 3),
            "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
            "rss_mib": round(rss_kib(daemon.pid) / 1024, 1), "peak_rss_mib": round(rss_kib(daemon.pid, "VmHWM") / 1024, 1),
            "busy_threads": busy}
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)

    db = sqlite3.connect(os.path.join(state, "catalog.sqlite"))
    (dest_id,) = db.execute("SELECT id FROM destinations LIMIT 1").fetchone()
    existing = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    now = int(time.time() * 1000)
    with db:
        for i in range(max(0, a.jobs - existing)):
            digest = hashlib.sha256(str(i).encode()).hexdigest()
            cur = db.execute("INSERT INTO assets (source, rel_path, size, mtime_ns, inode, sha256, first_seen) "
                             "VALUES ('/bench/unconfigured', ?, 1000, 0, ?, ?, ?)",
                             (f"f{i}.jpg".encode(), i, digest, now))
            db.execute("INSERT INTO jobs (asset_id, destination_id, state, attempts, receipt_key, receipt_size, "
                       "receipt_sha256, created_at, updated_at) VALUES (?, ?, 'acknowledged', 0, ?, 1000, ?, ?, ?)",
                       (cur.lastrowid, dest_id, f"f{i}.jpg".encode(), digest, now, now))
    jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    db.close()
    daemon = start(photosync, env, log)
    wait_for("the rescan is done", lambda: not status(env, photosync)["scanning"])
    median, p95 = timed([photosync, "status", "--json"], env, a.runs)
    have_rclone = shutil.which("rclone") is not None
    base_median = timed(["rclone", "version"], env, a.runs)[0] if have_rclone else None
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    latency = {"jobs": jobs, "runs": a.runs, "median_ms": round(median * 1000, 2), "p95_ms": round(p95 * 1000, 2),
               "rclone_version_median_ms": round(base_median * 1000, 2) if base_median else None,
               "ratio_to_rclone_version": round(median / base_median, 2) if base_median else None}
    report = {"idle": idle, "status_latency": latency}
    if a.json:
        print(json.dumps(report, indent=2))
        return
    print(f"idle: {idle['files']} files watched for {idle['seconds']} s: {idle['cpu_seconds']} CPU s "
          f"({idle['cpu_percent']} %), RSS {idle['rss_mib']} MiB (peak {idle['peak_rss_mib']} MiB); "
          f"CPU by thread: {idle['busy_threads'] or 'none'}")
    print(f"status with {jobs} jobs: median {latency['median_ms']} ms, p95 {latency['p95_ms']} ms"
          + (f"; `rclone version` {latency['rclone_version_median_ms']} ms, ratio {latency['ratio_to_rclone_version']}"
             if base_median else ""))


if __name__ == "__main__":
    main()
