"""Hand a shared segment to an unrelated process as a string, then exit before it reads.

    python examples/python/segment_handoff.py [--size-mb N]

The creator writes a pattern, prints nothing but passes the handle on the command line of a
reader started with subprocess (no multiprocessing, no pickling), and exits at once. The
handle's pin keeps the memory alive until the reader attaches; once the reader is done,
nothing is left.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys


def reader(handle: str, expect: str) -> int:
    from shoal import _shoal

    seg = _shoal.Segment.attach(handle)
    digest = hashlib.sha256(memoryview(seg)).hexdigest()
    print(f"reader: attached {seg.size} bytes, sha256 {digest[:16]}...")
    return 0 if digest == expect else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--read", nargs=2, metavar=("HANDLE", "SHA256"))
    args = ap.parse_args()
    if args.read:
        return reader(*args.read)

    from shoal import _shoal

    seg = _shoal.Segment.create(args.size_mb << 20)
    view = memoryview(seg)
    pattern = bytes(range(256)) * 4096
    for off in range(0, len(view), len(pattern)):
        n = min(len(pattern), len(view) - off)
        view[off : off + n] = pattern[:n]
    digest = hashlib.sha256(view).hexdigest()
    view.release()
    handle = seg.handle()  # pinned: valid even after this process drops the segment
    seg.close()
    print(f"creator: {args.size_mb} MiB written, handle {handle[:24]}... ({len(handle)} bytes)")
    proc = subprocess.Popen([sys.executable, __file__, "--read", handle, digest])
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
