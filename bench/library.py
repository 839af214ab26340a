#!/usr/bin/env python3
"""Make a synthetic photo library for the benchmarks and for trying photosync.

    bench/library.py OUT [--photos N] [--photo-kib MIN MAX] [--videos N]
                         [--video-mib MIN MAX] [--per-folder N] [--seed S] [--no-junk]

Photos are JPEG files laid out like a camera's DCIM folder: SOI, an APP1
Exif segment as cameras write it (IFD0 with Make, Model and DateTime, an
EXIF IFD with DateTimeOriginal and OffsetTimeOriginal), then incompressible
filler, then EOI. Videos are MP4 files as phones write them: `ftyp`, the
media data, then a `moov` whose `mvhd` holds the creation time (seconds
since 1904, UTC). Every file's content is unique. Unless --no-junk, the litter a backup must skip is mixed
in (.DS_Store, Thumbs.db, partial downloads, a text file, a hidden folder).

Prints a JSON summary on stdout: {"media": N, "media_bytes": B, "junk": J}.
"""

import argparse
import json
import os
import random
import struct


def ifd(at, entries):
    """A little-endian TIFF directory at offset `at`: (tag, type, value)
    entries, ASCII values (type 2) and LONGs (type 4); values longer than
    four bytes follow the directory."""
    data_at = at + 2 + len(entries) * 12 + 4
    out, data = struct.pack("<H", len(entries)), b""
    for tag, kind, value in entries:
        if kind == 2:
            raw = value.encode("ascii") + b"\0"
            if len(raw) <= 4:
                out += struct.pack("<HHI", tag, kind, len(raw)) + raw.ljust(4, b"\0")
            else:
                out += struct.pack("<HHII", tag, kind, len(raw), data_at + len(data))
                data += raw
        else:
            out += struct.pack("<HHII", tag, kind, 1, value)
    return out + struct.pack("<I", 0) + data


def exif_app1(when, offset):
    """An APP1 segment as a camera writes it."""
    camera = [(0x010F, 2, "Canon"), (0x0110, 2, "Canon EOS R6"), (0x0132, 2, when)]
    ifd0_len = len(ifd(8, camera + [(0x8769, 4, 0)]))
    ifd0 = ifd(8, camera + [(0x8769, 4, 8 + ifd0_len)])
    exif = ifd(8 + ifd0_len, [(0x9003, 2, when), (0x9004, 2, when), (0x9011, 2, offset)])
    body = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd0 + exif
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def photo(size, rng, when):
    head = b"\xff\xd8" + exif_app1(when, "+01:00")
    filler = rng.randbytes(max(0, size - len(head) - 2))
    return head + filler + b"\xff\xd9"


def video(size, rng, created):
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 0x200) + b"isomiso2"
    # mvhd version 0: flags, creation and modification times, timescale, duration, then 80 bytes.
    mvhd_body = struct.pack(">IIIII", 0, created, created, 1000, 0) + bytes(80)
    mvhd = struct.pack(">I", 8 + len(mvhd_body)) + b"mvhd" + mvhd_body
    moov = struct.pack(">I", 8 + len(mvhd)) + b"moov" + mvhd
    mdat_len = max(8, size - len(ftyp) - len(moov))
    mdat = struct.pack(">I", mdat_len) + b"mdat" + rng.randbytes(mdat_len - 8)
    return ftyp + mdat + moov


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--photo-kib", type=int, nargs=2, default=[200, 4000], metavar=("MIN", "MAX"))
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--video-mib", type=int, nargs=2, default=[20, 80], metavar=("MIN", "MAX"))
    ap.add_argument("--per-folder", type=int, default=500, metavar="N",
                    help="photos per DCIM folder (cameras write 500 or 1,000; 100 gives many folders)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-junk", action="store_true")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    media = media_bytes = junk = 0
    for i in range(a.photos):
        size = rng.randint(a.photo_kib[0], a.photo_kib[1]) * 1024
        day = 1 + i % 28
        when = f"2025:{1 + i // 28 % 12:02d}:{day:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}"
        path = os.path.join(a.out, "DCIM", f"{100 + i // a.per_folder}CANON", f"IMG_{i:05d}.JPG")
        write(path, photo(size, rng, when))
        media += 1
        media_bytes += size
    for i in range(a.videos):
        size = rng.randint(a.video_mib[0], a.video_mib[1]) * 1024 * 1024
        # 2025-03-01 plus i days, in seconds since 1904.
        created = 3_823_632_000 + i * 86_400
        write(os.path.join(a.out, "Videos", f"MOV_{i:04d}.MP4"), video(size, rng, created))
        media += 1
        media_bytes += size
    if not a.no_junk:
        litter = {
            ".DS_Store": b"\0\0\0\x01Bud1",
            "DCIM/Thumbs.db": b"\xd0\xcf\x11\xe0",
            "DCIM/100CANON/.IMG_99999.JPG.part": b"\xff\xd8\xff partial",
            "DCIM/100CANON/IMG_99998.tmp": b"\xff\xd8\xff",
            "notes.txt": b"not a photo\n",
            ".thumbnails/t.jpg": b"\xff\xd8\xff hidden",
        }
        for rel, data in litter.items():
            write(os.path.join(a.out, rel), data)
            junk += 1
    print(json.dumps({"media": media, "media_bytes": media_bytes, "junk": junk}))


if __name__ == "__main__":
    main()
