"""Process facts: who holds the memory, and who supervisord is.

The resident size of each supervised program, children included, is
sampled on TICK events so that an OOM notification can say what the
programs used just before the kill.  supervisord's identity (boot id, pid,
start time) names its lifetime, within which event serials are unique.

The process facts come from psutil, read from the procfs at ``proc_root``
(psutil's ``PROCFS_PATH``).  One pass over the processes per sample, whatever
the number of programs: their parents first, then the resident size of
those in a program's tree.  ``Process.children(recursive=True)`` would do
that pass once per program: 200 programs under a host's 300 processes cost
most of a second at each TICK, while deaths wait to be reported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

import psutil

# What asking about a process can raise when it vanished meanwhile (or is a
# zombie), may not be read, or lives in a /proc that lacks the file (a fake
# tree, another pid namespace's): psutil's errors, a bare OSError, and the
# parse errors of a file that is not what the kernel writes.
UNREADABLE = (psutil.Error, OSError, ValueError, IndexError)


@dataclass(frozen=True)
class RssSample:
    name: str
    group: str
    pid: int
    rss_bytes: int  # the program and all its descendants
    sampled_at: datetime


@contextmanager
def procfs(proc_root: str) -> Iterator[None]:
    """psutil reads the procfs at ``proc_root`` meanwhile (a ``Process``
    keeps the path it was made with)."""
    before = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = proc_root
    try:
        yield
    finally:
        psutil.PROCFS_PATH = before


# The psutil Process of each pid of the last pass, for the next one: making
# one reads /proc/PID/stat, and a sample would make one for every process
# (1.5 times the CPU time: 2.6 ms instead of 1.75 ms for 65 processes, where
# the hand-written reader took 0.85 ms).
_known: dict[tuple[str, int], psutil.Process] = {}


def _process(proc_root: str, pid: int) -> Optional[tuple[psutil.Process, int]]:
    """Process ``pid`` and its parent's pid; None if it cannot be read."""
    process = _known.get((proc_root, pid))
    if process is not None:
        try:
            return process, process.ppid()
        except UNREADABLE:
            pass  # gone, or the pid is another process's now: look again
    try:
        process = psutil.Process(pid)
        return process, process.ppid()
    except UNREADABLE:
        return None  # gone meanwhile, or not a process we can read


def _tree(proc_root: str) -> dict[int, list[psutil.Process]]:
    """Every process's children, by parent pid, as this procfs shows them."""
    try:
        pids = psutil.pids()
    except UNREADABLE:  # no procfs there (or an empty one)
        pids = []
    children: dict[int, list[psutil.Process]] = {}
    known = {}
    for pid in pids:
        found = _process(proc_root, pid)
        if found is not None:
            process, ppid = found
            known[proc_root, pid] = process
            children.setdefault(ppid, []).append(process)
    _known.clear()
    _known.update(known)
    return children


def _rss(process: psutil.Process) -> Optional[int]:
    try:
        return process.memory_info().rss
    except UNREADABLE:
        return None


def tree_rss(children: dict[int, list[psutil.Process]], root: psutil.Process) -> Optional[int]:
    """Bytes resident in ``root`` and all its descendants; None when
    ``root`` itself cannot be read (it is gone).  A descendant that vanished
    during the pass counts for nothing."""
    total = _rss(root)
    if total is None:
        return None
    todo, seen = list(children.get(root.pid, ())), {root.pid}
    while todo:
        process = todo.pop()
        if process.pid in seen:  # a pid reused during the pass
            continue
        seen.add(process.pid)
        total += _rss(process) or 0
        todo.extend(children.get(process.pid, ()))
    return total


def sample(programs: Iterable[tuple[str, str, int]], proc_root: str, now: datetime) -> list[RssSample]:
    """One sample per (group, name, pid) still alive."""
    wanted = list(programs)
    if not wanted:
        return []
    out = []
    with procfs(proc_root):
        children = _tree(proc_root)
        for group, name, pid in wanted:
            root = _known.get((proc_root, pid))
            if root is None:  # not seen in the pass (or started since)
                found = _process(proc_root, pid)
                if found is None:
                    continue
                root = found[0]
            rss = tree_rss(children, root)
            if rss is not None:
                out.append(RssSample(name, group, pid, rss, now))
    return out


@dataclass(frozen=True)
class Identity:
    """One supervisord lifetime: its serials are unique only within it."""

    key: Optional[str]  # boot id, pid and start ticks: stable even if the clock is set
    started: Optional[datetime]


def stat_fields(pid: int, proc_root: str = "/proc") -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (from field 3,
    the state): the name, in parentheses, may itself hold spaces and
    parentheses, so they are counted from the last ``)``.  Navi's one reader
    of that file, for what psutil does not give exactly: the start time in
    clock ticks."""
    with open(os.path.join(proc_root, str(pid), "stat"), "rb") as f:
        text = f.read(65536).decode("ascii", "replace")
    return text[text.rindex(")") + 2 :].split()


def identity(pid: int, proc_root: str = "/proc") -> Identity:
    """Who process ``pid`` is, and when it started (UTC)."""
    try:
        # Field 22, in clock ticks since boot: psutil gives only seconds
        # since the epoch, through the boot time, which moves when the clock
        # is set.  The key is in every notification id: it stays as it was.
        ticks = int(stat_fields(pid, proc_root)[19])
    except (OSError, ValueError, IndexError):
        return Identity(None, None)
    try:
        with open(os.path.join(proc_root, "sys", "kernel", "random", "boot_id"), "rb") as f:
            boot_id = f.read(65536).decode("ascii", "replace").strip()
    except OSError:
        boot_id = "unknown-boot"
    started = None
    with contextlib.suppress(*UNREADABLE, OverflowError), procfs(proc_root):
        started = datetime.fromtimestamp(psutil.Process(pid).create_time(), timezone.utc)
    return Identity(f"{boot_id}:{pid}:{ticks}", started)


def children(pid: int, proc_root: str = "/proc") -> Optional[set[int]]:
    """The children of the single-threaded ``pid`` (supervisord), from
    /proc/PID/task/PID/children; None where the kernel has no such file."""
    try:
        with open(f"{proc_root}/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except (OSError, ValueError):
        return None
