#!/usr/bin/env python3
"""Make a synthetic photo library for the benchmarks and for trying photosync.

    bench/library.py OUT [--photos N] [--photo-kib MIN MAX] [--videos N]
                         [--video-mib MIN MAX] [--seed S] [--no-junk]

Photos are JPEG files (SOI, an APP1 Exif segment whose TIFF block carries a
DateTime, then incompressible filler, then EOI), laid out like a camera's
DCIM folder; videos are MP4 files (an `ftyp` box, then filler). Every file's
content is unique. Unless --no-junk, the litter a backup must skip is mixed
in (.DS_Store, Thumbs.db, partial downloads, a text file, a hidden folder).

Prints a JSON summary on stdout: {"media": N, "media_bytes": B, "junk": J}.
"""

import argparse
import json
import os
import random
import struct


def exif_app1(when):
    """An APP1 segment with a little-endian TIFF block holding one DateTime tag."""
    text = when.encode("ascii") + b"\0"  # "YYYY:MM:DD HH:MM:SS\0", 20 bytes
    ifd_offset = 8
    entries = 1
    value_offset = ifd_offset + 2 + entries * 12 + 4
    tiff = b"II*\0" + struct.pack("<I", ifd_offset)
    tiff += struct.pack("<H", entries)
    tiff += struct.pack("<HHII", 0x0132, 2, len(text), value_offset)  # DateTime, ASCII
    tiff += struct.pack("<I", 0)  # no next IFD
    tiff += text
    body = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def photo(size, rng, when):
    head = b"\xff\xd8" + exif_app1(when)
    filler = rng.randbytes(max(0, size - len(head) - 2))
    return head + filler + b"\xff\xd9"


def video(size, rng):
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 0x200) + b"isomiso2"
    return ftyp + rng.randbytes(max(0, size - len(ftyp)))


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
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-junk", action="store_true")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    media = media_bytes = junk = 0
    for i in range(a.photos):
        size = rng.randint(a.photo_kib[0], a.photo_kib[1]) * 1024
        day = 1 + i % 28
        when = f"2025:{1 + i // 28 % 12:02d}:{day:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}"
        path = os.path.join(a.out, "DCIM", f"{100 + i // 500}CANON", f"IMG_{i:05d}.JPG")
        write(path, photo(size, rng, when))
        media += 1
        media_bytes += size
    for i in range(a.videos):
        size = rng.randint(a.video_mib[0], a.video_mib[1]) * 1024 * 1024
        write(os.path.join(a.out, "Videos", f"MOV_{i:04d}.MP4"), video(size, rng))
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
