#!/usr/bin/env python3
"""How often the capture time photosync reads agrees with exiftool's.

    bench/capture_vs_exiftool.py DIR [--bin PATH] [--tz ZONE] [--json] [--list]

Backs DIR up with `photosync backup` to a scratch folder (a fresh catalog),
asks `photosync why --json` when each file was taken, and reads the same
files with `exiftool -api QuickTimeUTC` (the movie header's time taken as
UTC and shown in ZONE, as photosync shows it). exiftool's date is the first
of EXIF DateTimeOriginal, EXIF CreateDate, QuickTime CreationDate (Apple's
key) and QuickTime CreateDate that is not a zero date.

Each file falls in one class:
  agree         both read the same wall-clock time from the file
  differ        both read a time from the file, and they differ
  missed        exiftool reads one; photosync fell back to the name or mtime
  only_photosync  photosync read one where exiftool has none
  neither       no date in the file for either
  not_backed_up photosync did not take the file as a photo or video

Needs exiftool (Debian: libimage-exiftool-perl) and a release build
(`cargo build --release`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

KEYS = ["EXIF:DateTimeOriginal", "EXIF:CreateDate", "QuickTime:CreationDate", "QuickTime:CreateDate"]


def exiftool_dates(root, tz):
    out = subprocess.run(
        ["exiftool", "-json", "-G", "-api", "QuickTimeUTC", "-r", "-q", "-q", "-time:all", root],
        capture_output=True, env={**os.environ, "TZ": tz}, check=False,
    ).stdout
    dates = {}
    for f in json.loads(out or b"[]"):
        found = None
        for key in KEYS:
            value = f.get(key)
            if isinstance(value, str) and len(value) >= 19 and not value.startswith(("0000", "1904", "    ")):
                found = value[:10].replace(":", "-") + "T" + value[11:19]
                break
        dates[os.path.abspath(f["SourceFile"])] = found
    return dates


def photosync_dates(binary, root, tz, scratch):
    config = os.path.join(scratch, "config.toml")
    dest = os.path.join(scratch, "dest")
    os.makedirs(dest)
    with open(config, "w") as f:
        f.write(
            f'state_dir = {json.dumps(os.path.join(scratch, "state"))}\n'
            f'[policy]\npower_supply_dir = {json.dumps(scratch)}\n'
            f'[[source]]\npath = {json.dumps(root)}\n'
            f'[[destination]]\nname = "d"\ntype = "folder"\npath = {json.dumps(dest)}\n'
        )
    env = {**os.environ, "TZ": tz, "PHOTOSYNC_CONFIG": config}
    subprocess.run([binary, "backup", "--json"], env=env, capture_output=True, check=False)
    paths = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
    answers = []
    for i in range(0, len(paths), 200):
        out = subprocess.run([binary, "why", "--json", *paths[i:i + 200]], env=env, capture_output=True, check=True)
        answers.extend(json.loads(out.stdout))
    return {a["path"]: a.get("taken") for a in answers}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--bin", default="target/release/photosync")
    ap.add_argument("--tz", default="UTC")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--list", action="store_true", help="print every file that is not `agree`")
    a = ap.parse_args()
    root = os.path.abspath(a.dir)
    with tempfile.TemporaryDirectory() as scratch:
        ours = photosync_dates(os.path.abspath(a.bin), root, a.tz, scratch)
    theirs = exiftool_dates(root, a.tz)
    classes = {}
    rows = []
    for path, taken in sorted(ours.items()):
        reference = theirs.get(path)
        embedded = taken and taken["source"] in ("exif", "quicktime")
        if taken is None:
            cls = "not_backed_up"
        elif reference and embedded:
            cls = "agree" if taken["local"] == reference else "differ"
        elif reference:
            cls = "missed"
        elif embedded:
            cls = "only_photosync"
        else:
            cls = "neither"
        classes[cls] = classes.get(cls, 0) + 1
        rows.append((cls, os.path.relpath(path, root), taken and taken["local"], taken and taken["source"], reference))
    with_date = classes.get("agree", 0) + classes.get("differ", 0) + classes.get("missed", 0)
    summary = {
        "files": len(rows),
        "classes": classes,
        "agree_of_exiftool_dated": f'{classes.get("agree", 0)}/{with_date}',
    }
    if a.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(f"{len(rows)} files; of the {with_date} exiftool dates, photosync read "
              f"{classes.get('agree', 0)} the same; {classes}")
    if a.list:
        for row in rows:
            if row[0] != "agree":
                print("\t".join(str(x) for x in row))


if __name__ == "__main__":
    main()
