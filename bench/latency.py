"""Death-to-report latency under real supervisord, for Navi and its peers.

Each run starts real supervisord from Navi's shipped configuration, with
the [eventlistener:navi] running Navi or a peer (same events, same
buffer), and N victims that each die once.  How they die:

- kill: RUNNING (past startsecs=1), a victim SIGKILLs itself when told;
- oom: RUNNING, it allocates until the kernel's OOM killer kills it;
- startup: still STARTING (startsecs=10), it SIGKILLs itself when told,
  a second after the bench started it: supervisord sends BACKOFF, then
  FATAL (startretries=0);
- exec: STARTING, it dies as soon as it runs (a shell: the time, then
  SIGKILL): dead, or nearly, when Navi reads its pid.

Per death: the time the victim wrote just before dying, to the time the
report was visible: Navi's notification file (seen by this process
polling the directory every millisecond), or the time the peer itself
recorded (the minimal listener: when it read the EXITED or BACKOFF event;
crashmail: when its "sendmail" started).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from bench import procfs
from navi.demo.sandbox import Sandbox, Unavailable, memory_cgroup, program
from navi.listener import supervisor_call

HERE = Path(__file__).resolve().parent
PY = sys.executable
OOM_LIMIT = 256 << 20
STARTUP = ("startup", "exec")  # deaths during startsecs


@dataclass(frozen=True)
class Peer:
    name: str
    command: Optional[str]  # None: Navi as shipped
    records: bool  # the peer writes its own times to {mnt}/tmp/reports
    startup: bool = True  # it reports deaths during startsecs (BACKOFF)


def peers() -> list[Peer]:
    reports = "{mnt}/tmp/reports"
    # %% : supervisord's configuration expands %(name)s
    sendmail = f"sh -c 'date +%%s.%%N >> {reports}; cat >/dev/null'"
    crashmail = Path(PY).parent / "crashmail"
    found = [Peer("navi", None, False), Peer("minimal", f"{PY} {HERE / 'minimal_listener.py'} {reports}", True)]
    if crashmail.exists():
        # It reports PROCESS_STATE_EXITED only: never a death during startsecs.
        command = f"{crashmail} -a -m ops@example.invalid -s {shlex.quote(sendmail)}"
        found.append(Peer("crashmail", command, True, startup=False))
    return found


def _reports(box: Sandbox, peer: Peer) -> list[float]:
    if peer.records:
        path = box.mnt / "tmp" / "reports"
        return [float(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []
    return []


@dataclass
class Run:
    ms: list[float] = field(default_factory=list)  # death to report, per death
    problems: list[str] = field(default_factory=list)  # wrong or missing notifications
    fatal_ms: list[float] = field(default_factory=list)  # death to the FATAL's file, after a startup death
    peak_rss_mb: float = 0.0  # the listener's high-water mark over the run


def measure(peer: Peer, deaths: int, how: str) -> Run:
    """Each of ``deaths`` victims dies once, ``how``; the listener's times."""
    if how in STARTUP:
        # Started by the bench one at a time; given up at their first death.
        options: dict[str, object] = {"startsecs": 10, "startretries": 0, "autostart": "false"}
    else:
        options = {"startsecs": 1}
    victims = "".join(program(f"victim{i:02d}", _victim(i, how), **options) for i in range(deaths))
    with contextlib.ExitStack() as stack:
        cgroup = stack.enter_context(memory_cgroup(OOM_LIMIT)) if how == "oom" else None
        box = stack.enter_context(
            Sandbox(victims, cgroup_dir=cgroup.path if cgroup else None, navi_command=peer.command)
        )
        if how not in STARTUP:
            wait(lambda: all(box.status().get(f"victim{i:02d}") == "RUNNING" for i in range(deaths)), 30)
        run = Run()
        for i in range(deaths):
            time.sleep(0.2)  # supervisord idle again, as in life
            _one_death(box, peer, i, how, run)
        run.peak_rss_mb = procfs.peak_rss_mb(box.pid("navi"))
        return run


def _victim(i: int, how: str) -> str:
    """The command of victim ``i``: it writes the time just before it dies."""
    if how == "exec":  # %%: supervisord's configuration expands %(name)s
        return f"sh -c 'date +%%s.%%N > {{mnt}}/tmp/died{i}; kill -9 $$'"
    death = "kill" if how == "startup" else how
    return f"{PY} {HERE / 'victim.py'} {{mnt}}/tmp/go{i} {{mnt}}/tmp/died{i} {death}"


def _one_death(box: Sandbox, peer: Peer, i: int, how: str, run: Run) -> None:
    name = f"victim{i:02d}"
    files = notification_names(box)
    seen = len(_reports(box, peer))
    go = box.mnt / "tmp" / f"go{i}"
    # An OOM victim cannot know when the kernel kills it (reclaim first
    # takes up to 100 ms): its death is when its pidfd says.
    watch = DeathTime(box.pid(name)) if how == "oom" else None
    if how in STARTUP:
        supervisor_call(f"unix://{box.socket}", "supervisor.startProcess", name, False)
        if how == "startup":
            time.sleep(1)  # long enough for Navi to have its STARTING event, and the pid from the log
            go.write_text("")
    else:
        go.write_text("")
    if peer.records:
        wait(lambda: len(_reports(box, peer)) > seen, 20)
        reported = _reports(box, peer)[-1]
    else:
        wait(lambda: notification_names(box) - files, 20, poll=0.001)
        reported = time.time()
    died = watch.time() if watch is not None else float((box.mnt / "tmp" / f"died{i}").read_text())
    run.ms.append((reported - died) * 1000)
    if how in STARTUP:  # the FATAL follows: in the next pass of supervisord's loop
        if peer.records:
            wait(lambda: box.status().get(name) == "FATAL", 20)
        else:
            wait(lambda: len(notification_names(box) - files) >= 2, 20, poll=0.001)
            run.fatal_ms.append((time.time() - died) * 1000)
    if not peer.records:
        run.problems += check(box, notification_names(box) - files, name, how)


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
    """The notifications are right: this victim, the right type, signal and
    phase; a death during startsecs is a crash, then supervisord's FATAL."""
    startup = how in STARTUP
    want = [("oom" if how == "oom" else "crash", name, "SIGKILL", startup)]
    if startup:
        want.append(("fatal", name, "SIGKILL", True))
    got = []
    for file in sorted(new):  # in event order
        n = json.loads((box.notifications / file).read_text())
        got.append((n["type"], n["process"]["name"], n["exit"]["signal"], n["exit"]["during_startup"]))
    return [] if got == want else [f"{name}: {got}, expected {want}"]


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
