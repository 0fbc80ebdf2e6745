"""Shared fixtures for the end-to-end tests: real supervisord sandboxes that
always close (and leave no process behind), and a child memory cgroup that is
always removed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from navi import names
from navi.demo.sandbox import Sandbox, Unavailable
from navi.demo.sandbox import memory_cgroup as memory_cgroup_of
from navi.listener import cgroup
from navi.names import STATE_FILE


def own_name(name: str) -> bool:
    """A notification's own name (not one written beside a taken one)."""
    parts = names.parse(name)
    return parts is not None and parts[2] == 0


def _process_start(pid: int) -> Optional[str]:
    """Field 22 of /proc/<pid>/stat (start time), to recognise a pid later;
    None when the process is gone (or a zombie: dead, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        fields = stat[stat.rindex(")") + 2 :].split()
    except (OSError, ValueError):
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _parent(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat[stat.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every living descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: list[tuple[int, str]] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        start = _process_start(pid)
        if start is not None:
            found.append((pid, start))
        todo.extend(children.get(pid, []))
    return found


def kill_leftovers(processes: list[tuple[int, str]], grace: float = 5.0) -> list[int]:
    """Wait for processes we started to end; SIGKILL those still there (the
    same process: same pid and start time).  Returns the pids killed."""
    deadline = time.monotonic() + grace
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [(pid, start) for pid, start in alive if _process_start(pid) == start]
        if alive:
            time.sleep(0.05)
    killed = []
    for pid, start in alive:
        if _process_start(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def triggered(name: str, then: str) -> str:
    """A shell command that waits (past startsecs) until the test creates
    {mnt}/tmp/go-<name> (E2ESandbox.trigger), then runs ``then``."""
    return f"sh -c 'while [ ! -e {{mnt}}/tmp/go-{name} ]; do sleep 0.05; done; {then}'"


def has_memory_cgroup() -> bool:
    """Navi runs in the test's own memory cgroup unless told otherwise."""
    try:
        cgroup.locate()
    except cgroup.CgroupError:
        return False
    return True


class E2ESandbox(Sandbox):
    """A Sandbox with the waits and checks the end-to-end tests share."""

    def trigger(self, name: str) -> None:
        """Let a program waiting for {mnt}/tmp/go-<name> go on."""
        (self.mnt / "tmp" / f"go-{name}").touch()

    def wait_states(self, states: dict[str, str], timeout: float = 20) -> dict[str, str]:
        def reached() -> Optional[dict[str, str]]:
            now = self.status()
            return now if all(now.get(k) == v for k, v in states.items()) else None

        result: dict[str, str] = self.wait_for(reached, timeout, f"states {states}")
        return result

    def spawned_pids(self, name: str) -> list[int]:
        """Pids of ``name``'s ``spawned:`` lines in supervisord's log, in order."""
        return [
            int(m.group(1))
            for m in re.finditer(rf"INFO spawned: '{re.escape(name)}' with pid (\d+)$",
                                 self.log("supervisord.log"), re.M)
        ]

    def notification_files(self, directory: Optional[Path] = None) -> list[Path]:
        """Everything in the directory but Navi's own state file."""
        return sorted(p for p in (directory or self.notifications).iterdir() if p.name != STATE_FILE)

    def check_files(self, directory: Optional[Path] = None) -> list[dict[str, Any]]:
        """Every file in the notifications directory is a published, valid
        notification with a well-formed name; returns them in name order."""
        # Navi removes its temporary file right after publishing the real
        # one: give a publication in progress a moment to finish.
        deadline = time.monotonic() + 5
        while True:
            files = self.notification_files(directory)
            listed = [p.name for p in files]
            temporary = [n for n in listed if n.startswith(".")]
            if not temporary or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert temporary == [], "temporary files left over"
        assert [n for n in listed if not n.endswith(".json")] == []
        assert [n for n in listed if not own_name(n)] == []
        parsed = [json.loads(p.read_text(encoding="utf-8")) for p in files]
        for name, n in zip(listed, parsed):
            if ":postmortem:" in n["id"]:  # no event behind it: written on the host after the container
                continue
            assert name.endswith(f"-{int(n['Header']['serial']):012d}.json")
        ids = [n["id"] for n in parsed]
        assert len(set(ids)) == len(ids), f"duplicate ids: {ids}"
        return parsed

    def check_healthy(self, expect_errors: bool = False, navi_starts: int = 1) -> None:
        """Navi never broke the protocol, and never crashed inside."""
        assert self.status().get("navi") == "RUNNING"
        main_log = self.log("supervisord.log")
        assert "UNKNOWN" not in main_log, main_log
        assert "event buffer overflowed" not in main_log, main_log
        assert "Traceback" not in main_log, main_log  # e.g. a readLog of Navi's that supervisord failed on
        navi_log = self.log("navi.log")
        assert "Traceback" not in navi_log, navi_log
        assert "internal error" not in navi_log, navi_log
        assert "bad input" not in navi_log, navi_log
        if not expect_errors:
            errors = [line for line in navi_log.splitlines() if "ERROR" in line]
            if not has_memory_cgroup():  # said once at start, where there is none
                errors = [e for e in errors if not e.endswith("OOM kills will be reported as crashes")]
            assert errors == [], navi_log
        # Navi was never respawned (but for the test's own restarts), and
        # never exited on its own.
        assert len(self.spawned_pids("navi")) == navi_starts, main_log
        assert "exited: navi " not in main_log, main_log
        self.check_files()


SandboxFactory = Callable[..., E2ESandbox]


@pytest.fixture
def sandbox() -> Iterator[SandboxFactory]:
    """``sandbox(programs, **kwargs)``: a started E2ESandbox; every one made
    is closed at teardown, and every process supervisord started is gone."""
    made: list[E2ESandbox] = []

    def make(programs: str, **kwargs: Any) -> E2ESandbox:
        box = E2ESandbox(programs, **kwargs)
        made.append(box)
        box.start()
        return box

    yield make
    killed: list[int] = []
    for box in reversed(made):
        ours = descendants(box.process.pid) if box.process is not None else []
        box.close()
        killed += kill_leftovers(ours)
    assert not killed, f"processes outlived supervisord and were killed: {killed}"


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A temporary directory, removed at teardown."""
    path = Path(tempfile.mkdtemp(prefix="navi-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


MEMORY_LIMIT = 128 * 2**20  # 134217728


@pytest.fixture
def memory_cgroup() -> Iterator[cgroup.MemoryCgroup]:
    """A fresh child of this process's memory cgroup, limited to 128 MiB
    with no swap; removed at teardown.  Skips, saying why, where it cannot be
    made.  Request it before ``sandbox``, so that the sandbox is closed (its
    processes gone) before the cgroup is removed."""
    try:
        with memory_cgroup_of(MEMORY_LIMIT) as child:
            yield child
    except Unavailable as e:
        print(f"SKIP: {e}")
        pytest.skip(str(e))
