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
    """Times the process went to sleep, so woke up: its voluntary context
    switches.  (Involuntary ones are preemptions, which count the load of
    the machine, not the listener's own wake-ups.)"""
    return psutil.Process(pid).num_ctx_switches().voluntary


def cpu_seconds(pid: int) -> float:
    """Time the process ran on a CPU, to the nanosecond: the first figure of
    /proc/PID/schedstat.  (psutil's cpu_times counts clock ticks of 10 ms,
    too coarse for the few ms a minute of an idle listener.)"""
    with open(f"{psutil.PROCFS_PATH}/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9
