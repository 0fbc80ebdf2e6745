"""Who holds the memory: resident size of each supervised program, children
included, sampled on TICK events so that an OOM notification can say what
the programs used just before the kill.  Read straight from procfs: one
pass over ``/proc/*/stat`` per sample, whatever the number of programs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class RssSample:
    name: str
    group: str
    pid: int
    rss_bytes: int  # the program and all its descendants
    sampled_at: datetime


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    rss_pages: int


def parse_stat(text: str) -> ProcStat:
    """``/proc/PID/stat``: the command name, in parentheses, may itself hold
    spaces and parentheses, so the fields are counted from the last ``)``."""
    fields = text[text.rindex(")") + 2 :].split()
    return ProcStat(ppid=int(fields[1]), rss_pages=int(fields[21]))


def tree_rss(stats: Mapping[int, ProcStat], root: int) -> int:
    """Bytes resident in ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:  # a pid reused during the pass
            continue
        seen.add(pid)
        total += stats[pid].rss_pages * PAGE_SIZE
        todo.extend(children.get(pid, ()))
    return total


def read_stats(proc_root: str) -> dict[int, ProcStat]:
    stats = {}
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            try:
                with open(f"{proc_root}/{entry}/stat") as f:
                    stats[int(entry)] = parse_stat(f.read())
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not a process we can read
    return stats


def sample(programs: Iterable[tuple[str, str, int]], proc_root: str, now: datetime) -> list[RssSample]:
    """One sample per (group, name, pid) still alive."""
    stats = read_stats(proc_root)
    return [RssSample(name, group, pid, tree_rss(stats, pid), now) for group, name, pid in programs if pid in stats]
