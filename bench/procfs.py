"""What the kernel says of a process: memory, wake-ups and CPU time."""

from __future__ import annotations

import os


def status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/PID/status (kB for memory)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


def rss_mb(pid: int) -> float:
    return status(pid)["VmRSS"] / 1024


def peak_rss_mb(pid: int) -> float:
    return status(pid)["VmHWM"] / 1024


def wakeups(pid: int) -> int:
    """Times the process was switched out: each sleep it woke from counts one."""
    s = status(pid)
    return s["voluntary_ctxt_switches"] + s["nonvoluntary_ctxt_switches"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
