"""A program whose memory climbs from half its container's limit to past it
in a given time, a MiB at a time, until the kernel's OOM killer kills it:
the climb that memory pressure must be told of in time (demo and tests).

    python -m navi.demo.ramp USAGE_FILE LIMIT_BYTES SECONDS

USAGE_FILE is the container cgroup's memory.usage_in_bytes (v1) or
memory.current (v2): the climb counts what the others in it hold too.
"""

from __future__ import annotations

import sys
import time

MIB = 1 << 20


def main(usage_file: str, limit: int, seconds: float) -> None:
    def used() -> int:
        with open(usage_file) as f:
            return int(f.read())

    chunks = []
    while used() < limit // 2:
        chunks.append(bytearray(MIB))  # zero-filled: every page touched
    base, start = len(chunks), time.monotonic()
    while True:
        while len(chunks) < base + (limit // 2 // MIB) * (time.monotonic() - start) / seconds:
            chunks.append(bytearray(MIB))
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
