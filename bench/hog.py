"""A program that takes memory until its container's working set is SHARE
of the limit, then holds it: the container sits high, with no OOM kill.

    hog.py CGROUP_DIR SHARE READY_FILE

The working set is counted as Navi counts it: usage without the inactive
page cache (cgroup v1 or v2).  READY_FILE is written once it is there."""

from __future__ import annotations

import os
import sys
import time

# cgroup v1, v2: the limit, the usage, the inactive page cache in memory.stat
FILES = {
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    2: ("memory.max", "memory.current", "inactive_file"),
}


def share(cgroup: str) -> float:
    """The working set's share of the limit of the memory cgroup at ``cgroup``."""
    limit, usage, inactive = FILES[1 if os.path.exists(os.path.join(cgroup, FILES[1][0])) else 2]

    def read(name: str) -> str:
        with open(os.path.join(cgroup, name)) as f:
            return f.read()

    stat = dict(line.split() for line in read("memory.stat").splitlines())
    return (int(read(usage)) - int(stat[inactive])) / int(read(limit))


def main() -> None:
    cgroup, target, ready = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    held = []
    while share(cgroup) < target:
        held.append(bytearray(1 << 20))  # zero-filled, so touched
    with open(ready, "w") as f:
        f.write(f"{share(cgroup):.3f}\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
