"""What the kernel says of a process: memory, wake-ups and CPU time (psutil)."""

from __future__ import annotations

import psutil

MB = 1 << 20


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the resident size: psutil has none on
    Linux, so VmHWM from /proc/PID/status (in kB)."""
    with open(f"{psutil.PROCFS_PATH}/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM in /proc/{pid}/status")


def wakeups(pid: int) -> int:
    """Times the process was switched out: each sleep it woke from counts one."""
    switches = psutil.Process(pid).num_ctx_switches()
    return switches.voluntary + switches.involuntary


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system
