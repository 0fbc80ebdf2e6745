"""Exit statuses from supervisord's main log, without I/O.

No event carries a program's exit code or signal; supervisord writes them only
in its main log, in the same call that queues the EXITED or BACKOFF event:

    2026-11-24 23:00:00,123 INFO spawned: 'web' with pid 4242
    2026-11-24 23:00:05,456 WARN exited: web (terminated by SIGSEGV (core dumped); not expected)

:class:`ExitLog` is fed the log's text as it grows and pairs each event with
its own line: by pid where the ``spawned:`` line gave one (exact), otherwise
in order per program and expectedness (supervisord logs and queues in the
same order).
"""

from __future__ import annotations

import re
import signal
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Optional

_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (?P<msg>.*)$")
_EXITED = re.compile(
    r"^exited: (?P<name>.+) \("
    r"(?:exit status (?P<code>\d+)"
    r"|terminated by (?:(?P<signame>SIG[A-Z0-9+-]+)|signal (?P<signum>\d+))(?P<core> \(core dumped\))?"
    r"|unknown termination cause 0x[0-9a-fA-F]+)"
    r"; (?P<expected>expected|not expected)\)$"
)
_SPAWNED = re.compile(r"^spawned: '(?P<name>.+)' with pid (?P<pid>\d+)$")
_STARTED = re.compile(r"^supervisord started with pid (?P<pid>\d+)$")
_ENDED = re.compile(r"^(?:exited|stopped): (?P<name>.+?) \(")

# Bounds, so that a crash storm with lost events cannot grow memory.
MAX_PER_PROCESS = 32
MAX_PROCESSES = 512


@dataclass(frozen=True)
class ExitRecord:
    name: str
    pid: Optional[int]  # from the program's last ``spawned:`` line, if logged
    code: Optional[int]  # None when killed by a signal
    signal: Optional[int]
    core_dumped: bool
    expected: bool
    line: str
    # Logged before this listener was spawned: a previous Navi probably
    # handled its event already, so it is only ever matched by pid.  (When
    # the spawn line is older than what was read, nothing read is stale.)
    stale: bool = False
    # Logged after an earlier Navi had ended (stopped or died) and before
    # this one was spawned: its event is certainly buffered for this one.
    unseen: bool = False

    @property
    def signal_name(self) -> Optional[str]:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"


def parse_exit(message: str) -> Optional[ExitRecord]:
    """The status in one ``exited:`` message (the text after the level)."""
    m = _EXITED.match(message)
    if m is None:
        return None
    number: Optional[int] = None
    if m["signame"]:
        member = signal.Signals.__members__.get(m["signame"])
        number = member.value if member is not None else None
    elif m["signum"]:
        number = int(m["signum"])
    return ExitRecord(
        name=m["name"],
        pid=None,
        code=int(m["code"]) if m["code"] is not None else None,
        signal=number,
        core_dumped=bool(m["core"]),
        expected=m["expected"] == "expected",
        line=message,
    )


def is_sigkill(code: Optional[int], signal_number: Optional[int]) -> bool:
    """Killed by SIGKILL, directly or as a shell's child (exit status 137)."""
    return signal_number == signal.SIGKILL or code == 128 + signal.SIGKILL


class ExitLog:
    """Unexpected exits logged and not yet paired with their event.

    Expected exits are not kept: their events are not incidents."""

    def __init__(self, own_name: Optional[str] = None, own_pid: Optional[int] = None) -> None:
        self._own_name = own_name
        self._own_pid = own_pid
        self._own_spawn_seen = False
        self._own_spawns = 0  # spawned: lines of our name in this supervisord's lifetime
        self._own_ended = False  # our name's last line was its end, not a spawn
        self._own_last: Optional[ExitRecord] = None  # our name's last end, if an unexpected exit
        # The Navi before this one, SIGKILLed (perhaps by the OOM killer) just
        # before this one was spawned: its EXITED is still to come.
        self._predecessor: Optional[ExitRecord] = None
        self._pids: dict[str, int] = {}
        self._live: dict[str, int] = {}  # spawned, and not yet logged as ended
        self._records: OrderedDict[str, deque[ExitRecord]] = OrderedDict()
        self._partial = ""

    def feed(self, text: str) -> None:
        """Take more of the log; a trailing partial line waits for the rest."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def first_read_done(self) -> None:
        """Call after feeding the log as it was at start.  Without our own
        ``spawned:`` line in it (loglevel warn, or a wrapper with another
        pid), nothing read can be told apart from what a previous Navi
        already reported: all of it is then matched only by pid."""
        if self._own_name is not None and not self._own_spawn_seen:
            self._mark_stale()

    def first_of_its_name(self) -> bool:
        """Whether the log shows this Navi as the first one this supervisord
        spawned (not known without our own ``spawned:`` line)."""
        return self._own_spawn_seen and self._own_spawns == 1

    def _mark_stale(self) -> None:
        for name, queue in self._records.items():
            self._records[name] = deque((replace(r, stale=True) for r in queue), maxlen=MAX_PER_PROCESS)

    def _line(self, line: str) -> None:
        m = _LINE.match(line)
        if m is None:
            return
        message = m["msg"]
        if _STARTED.match(message):
            # A new supervisord lifetime: nothing before it can match.
            self._pids.clear()
            self._live.clear()
            self._records.clear()
            self._own_spawns = 0
            return
        spawned = _SPAWNED.match(message)
        if spawned is not None:
            name, pid = spawned["name"], int(spawned["pid"])
            self._pids[name] = pid
            self._live[name] = pid
            self._own_spawns += name == self._own_name
            self._own_ended = self._own_ended and name != self._own_name
            if name == self._own_name and pid == self._own_pid:
                self._own_spawn_seen = True
                self._mark_stale()
                if self._own_last is not None and is_sigkill(self._own_last.code, self._own_last.signal):
                    self._predecessor = self._records[name][-1]  # its record, now marked stale
            if name == self._own_name:
                self._own_last = None
            return
        if self._own_name is not None and message.startswith(
            (f"stopped: {self._own_name} ", f"exited: {self._own_name} ")
        ):
            self._own_ended = True
            self._own_last = None
        ended = _ENDED.match(message)
        if ended is not None:
            self._live.pop(ended["name"], None)
        record = parse_exit(message)
        if record is None or record.expected:
            return
        record = replace(record, pid=self._pids.get(record.name), line=line, unseen=self._own_ended)
        queue = self._records.get(record.name)
        if queue is None:
            queue = self._records[record.name] = deque(maxlen=MAX_PER_PROCESS)
        queue.append(record)
        if record.name == self._own_name:
            self._own_last = record
        self._records.move_to_end(record.name)  # least recently active first
        while len(self._records) > MAX_PROCESSES:
            self._records.popitem(last=False)

    def spawned_pid(self, name: str) -> Optional[int]:
        """The pid of ``name``'s last ``spawned:`` line, while no end of it is logged."""
        return self._live.get(name)

    def _programs(self) -> list[deque[ExitRecord]]:
        """The records of supervised programs: not Navi's own."""
        return [queue for name, queue in self._records.items() if name != self._own_name]

    def waiting(self, unseen: bool = False) -> int:
        """Unexpected deaths logged whose events have not been handled yet;
        with ``unseen``, also those logged while no Navi ran, before this one."""
        programs = sum(1 for queue in self._programs() for r in queue if not r.stale or (unseen and r.unseen))
        # A TICK the killed Navi was busy with comes to this one before its
        # EXITED (supervisord hands it on first): the kill waits for it too.
        return programs + (self._predecessor is not None)

    def sigkills_waiting(self) -> int:
        """Deaths by SIGKILL (or a shell's 137) logged and not yet taken."""
        return sum(1 for queue in self._programs() for r in queue if not r.stale and is_sigkill(r.code, r.signal))

    def take(self, name: str, pid: Optional[int]) -> Optional[ExitRecord]:
        """The record of this unexpected exit, removed with every older one of
        ``name`` (their events were lost, or were handled by an earlier Navi)."""
        queue = self._records.get(name)
        if not queue:
            return None
        found = None
        if pid is not None:
            found = next((r for r in queue if r.pid == pid), None)
        if found is None:
            # No pid to go by (BACKOFF events carry none, and at loglevel
            # warn there are no spawned lines): the oldest live record,
            # unless pids prove it belongs to another exit.
            found = next((r for r in queue if not r.stale and (pid is None or r.pid is None)), None)
        if found is None:
            return None
        while queue and queue[0] is not found:
            if queue[0] is self._predecessor:
                self._predecessor = None
            queue.popleft()
        queue.popleft()
        if found is self._predecessor:
            self._predecessor = None
        return found
