"""Who holds the memory: resident size of each supervised program, children
included, sampled on TICK events so that an OOM notification can say what
the programs used just before the kill."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import psutil


@dataclass(frozen=True)
class RssSample:
    name: str
    group: str
    pid: int
    rss_bytes: int  # the program and all its descendants
    sampled_at: datetime


def sample(name: str, group: str, pid: int, now: datetime) -> Optional[RssSample]:
    """None when the process is gone or not ours to read."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue  # gone meanwhile
    except psutil.Error:
        return None
    return RssSample(name, group, pid, total, now)
