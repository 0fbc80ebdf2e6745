"""A program that waits for its trigger file, then dies, writing the time
just before: by SIGKILL from itself, or ("oom") by the kernel's OOM killer
while it allocates (the time is written before each allocation, so the
last one is within an allocation of the kill)."""

from __future__ import annotations

import os
import signal
import sys
import time

trigger, record, how = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(trigger):
    time.sleep(0.005)
fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def now() -> None:
    os.pwrite(fd, repr(time.time()).ljust(24).encode(), 0)


hog = []
while how == "oom":
    now()
    hog.append(bytearray(4 << 20))  # zero-filled, so touched
now()
os.kill(os.getpid(), signal.SIGKILL)
