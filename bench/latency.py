"""Death-to-report latency under real supervisord, for Navi and its peers.

Each run starts real supervisord from Navi's shipped configuration, with
the [eventlistener:navi] running Navi or a peer (same events, same
buffer), and N victims that each die once when told.  Per death: the time
the victim wrote just before dying, to the time the report was visible:
Navi's notification file (seen by this process polling the directory
every millisecond), or the time the peer itself recorded (the minimal
listener: when it read the EXITED event; crashmail: when its "sendmail"
started).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from navi.demo.sandbox import Sandbox, Unavailable, memory_cgroup, program

HERE = Path(__file__).resolve().parent
PY = sys.executable
OOM_LIMIT = 256 << 20


@dataclass(frozen=True)
class Peer:
    name: str
    command: Optional[str]  # None: Navi as shipped
    records: bool  # the peer writes its own times to {mnt}/tmp/reports


def peers() -> list[Peer]:
    reports = "{mnt}/tmp/reports"
    # %% : supervisord's configuration expands %(name)s
    sendmail = f"sh -c 'date +%%s.%%N >> {reports}; cat >/dev/null'"
    crashmail = Path(PY).parent / "crashmail"
    found = [Peer("navi", None, False), Peer("minimal", f"{PY} {HERE / 'minimal_listener.py'} {reports}", True)]
    if crashmail.exists():
        found.append(Peer("crashmail", f"{crashmail} -a -m ops@example.invalid -s {shlex.quote(sendmail)}", True))
    return found


def _reports(box: Sandbox, peer: Peer) -> list[float]:
    if peer.records:
        path = box.mnt / "tmp" / "reports"
        return [float(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []
    return []


def measure(peer: Peer, deaths: int, how: str) -> tuple[list[float], list[str]]:
    """Latencies in ms, and problems (a wrong or missing classification)."""
    victims = "".join(
        program(f"victim{i:02d}", f"{PY} {HERE / 'victim.py'} {{mnt}}/tmp/go{i} {{mnt}}/tmp/died{i} {how}", startsecs=1)
        for i in range(deaths)
    )
    with contextlib.ExitStack() as stack:
        cgroup = stack.enter_context(memory_cgroup(OOM_LIMIT)) if how == "oom" else None
        box = stack.enter_context(
            Sandbox(victims, cgroup_dir=cgroup.path if cgroup else None, navi_command=peer.command)
        )
        wait(lambda: all(box.status().get(f"victim{i:02d}") == "RUNNING" for i in range(deaths)), 30)
        latencies, problems = [], []
        for i in range(deaths):
            time.sleep(0.2)  # supervisord idle again, as in life
            ms, wrong = _one_death(box, peer, f"victim{i:02d}", i, how)
            latencies.append(ms)
            problems += wrong
        return latencies, problems


def _one_death(box: Sandbox, peer: Peer, name: str, i: int, how: str) -> tuple[float, list[str]]:
    files = notification_names(box)
    seen = len(_reports(box, peer))
    watch = DeathTime(box.pid(name))
    (box.mnt / "tmp" / f"go{i}").write_text("")
    problems = []
    if peer.records:
        wait(lambda: len(_reports(box, peer)) > seen, 20)
        reported = _reports(box, peer)[-1]
    else:
        wait(lambda: notification_names(box) - files, 20, poll=0.001)
        reported = time.time()
        problems = check(box, notification_names(box) - files, name, how)
    # An OOM victim cannot know when the kernel kills it (reclaim first
    # takes up to 100 ms): its death is when its pidfd says.
    died = watch.time() if how == "oom" else float((box.mnt / "tmp" / f"died{i}").read_text())
    return (reported - died) * 1000, problems


class DeathTime:
    """When a process died, as its pidfd tells, seen from a thread."""

    def __init__(self, pid: int) -> None:
        self._fd = os.pidfd_open(pid)
        self._died = 0.0
        self._thread = threading.Thread(target=self._wait)
        self._thread.start()

    def _wait(self) -> None:
        select.select([self._fd], [], [])
        self._died = time.time()
        os.close(self._fd)

    def time(self) -> float:
        self._thread.join()
        return self._died


def notification_names(box: Sandbox) -> set[str]:
    return {n for n in os.listdir(box.notifications) if n.endswith(".json") and not n.startswith(".")}


def check(box: Sandbox, new: set[str], name: str, how: str) -> list[str]:
    """The notification is right: this victim, the right type and signal."""
    problems = []
    for file in new:
        n = json.loads((box.notifications / file).read_text())
        want = ("oom" if how == "oom" else "crash", "SIGKILL", name)
        got = (n["type"], n["exit"]["signal"], n["process"]["name"])
        if got != want:
            problems.append(f"{file}: {got}, expected {want}")
    return problems


def wait(ready: Callable[[], object], timeout: float, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s")
        time.sleep(poll)


def can_oom() -> Optional[str]:
    """Why a real OOM kill cannot be made here, or None."""
    try:
        with memory_cgroup(OOM_LIMIT):
            return None
    except Unavailable as e:
        return str(e)
