#!/usr/bin/env python3
"""Requests per photo for a first backup to Google Photos.

    bench/google_requests.py [--photos N] [--concurrent C ...] [--json]

Google's Library API counts requests, not bytes: a project may send 10,000
a day, uploads included, so requests per photo set how many days a first
backup takes. This runs the test `requests_per_photo_stay_near_one`
(tests/googlephotos.rs) against the fake Library API in the test tree with
N photos (default 1,000) and two 3.5 MiB videos, once per `max_concurrent`
value (default 4, photosync's default, and 16), and reports what it
counted: requests per file, by kind, the batches, and the days a
50,000-photo library would take at that rate.
"""

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(photos, concurrent):
    env = dict(os.environ, PHOTOSYNC_BENCH_PHOTOS=str(photos), PHOTOSYNC_BENCH_CONCURRENT=str(concurrent))
    run = subprocess.run(
        ["cargo", "test", "--quiet", "--test", "tests", "requests_per_photo_stay_near_one", "--", "--nocapture"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("BENCH ")]
    if run.returncode != 0 or not lines:
        sys.exit(f"the measuring test failed:\n{run.stdout}\n{run.stderr}")
    return json.loads(lines[-1][len("BENCH "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(args.photos, c) for c in args.concurrent]
    for r in results:
        r["days_for_50000_photos"] = 50_000 * r["requests_per_file"] / 10_000
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.photos} photos and 2 videos to the fake Google Photos Library API")
    print(f"{'max_concurrent':>14}  {'requests':>8}  {'per file':>8}  {'batchCreates':>12}  {'largest':>7}  {'days/50k':>8}")
    for r in results:
        print(
            f"{r['max_concurrent']:>14}  {r['requests']:>8}  {r['requests_per_file']:>8.3f}  "
            f"{r['batch_creates']:>12}  {r['largest_batch']:>7}  {r['days_for_50000_photos']:>8.1f}"
        )
    for r in results:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(r["by_kind"].items()))
        print(f"max_concurrent {r['max_concurrent']}: {kinds}")


if __name__ == "__main__":
    main()
