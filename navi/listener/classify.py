"""What an event means: crash, OOM kill, fatal, or nothing.  No I/O.

The shell asks :func:`triage` which evidence an event needs, gathers it (the
exit status from supervisord's log, the memory cgroup's figures), and hands
both to :meth:`Classifier.decide`, which returns the notification to write,
if any.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Optional

from navi.listener import lastwords, summaries
from navi.listener.cgroup import MemorySnapshot
from navi.listener.exitlog import ExitRecord, is_sigkill
from navi.listener.procs import RssSample
from navi.listener.protocol import Event
from navi.notification import (
    SCHEMA_VERSION,
    CrashLoop,
    ExitInfo,
    Kind,
    MemoryInfo,
    Notification,
    Output,
    Pressure,
    ProcessInfo,
    ProgramMemory,
    Source,
)

MAX_REMEMBERED_EXITS = 512
MAX_PROGRAMS_LISTED = 10
# The victim's event follows its kill within about 2 s (supervisord's loop).
# A kill that no death has claimed by a TICK, with no death waiting in the
# log, or by this long, was of a process supervisord does not watch.
OOM_WINDOW = timedelta(seconds=10)
MAX_PENDING_KILLS = 256
LATE_WORDS = (
    "its output was read at its event, not at its death (no pidfd watched it): if supervisord had "
    "already started it again, the last lines may be the new process's"
)


@dataclass(frozen=True)
class Origin:
    """Who Navi is and which supervisord feeds it."""

    host: str
    supervisord_pid: Optional[int]
    supervisord_started: Optional[datetime]
    supervisord_key: str  # one supervisord lifetime, for stable ids
    own_group: Optional[str]
    own_name: Optional[str]
    navi_version: str


class Incident(enum.Enum):
    EXIT = "exit"  # unexpected EXITED, or BACKOFF: needs exit status and memory
    FATAL = "fatal"
    # A previous Navi's death, delivered to the next one: an incident only
    # if the OOM killer was its cause (never a restart, a kill -9, a crash).
    OWN_DEATH = "own death"


def triage(event: Event, origin: Origin) -> Optional[Incident]:
    """Which incident an event is, if any."""
    fields = event.fields
    name = event.name
    death = (name == "PROCESS_STATE_EXITED" and fields.get("expected") == "0") or name == "PROCESS_STATE_BACKOFF"
    if origin.own_group is not None and fields.get("groupname") == origin.own_group:
        return Incident.OWN_DEATH if death and fields.get("processname") == origin.own_name else None
    if death:
        return Incident.EXIT
    if name == "PROCESS_STATE_FATAL":
        return Incident.FATAL
    return None


@dataclass(frozen=True)
class Evidence:
    observed_at: datetime
    exit: Optional[ExitRecord] = None
    exit_problem: Optional[str] = None  # why exit is None
    # The cgroup's oom_kill counter, read at every event (a TICK too): each
    # reading dates the kills it finds.  The figures are read for incidents.
    oom_kill: Optional[int] = None
    memory: Optional[MemorySnapshot] = None
    memory_problem: Optional[str] = None  # why memory is None
    # Deaths by SIGKILL already in supervisord's log whose events are still
    # to come: likelier OOM victims than this death, if it was no SIGKILL.
    sigkills_waiting: int = 0
    # Any unexpected deaths in the log whose events are still to come (on a
    # TICK: kills are left for them to claim).
    exits_waiting: int = 0
    # The last memory sample of each running program.
    rss: tuple[RssSample, ...] = ()
    # The dead program's last words, as read (None: not read).
    output: Optional[Output] = None


def event_id(origin: Origin, event: Event) -> str:
    """Stable over redelivery: serials are unique within one supervisord's
    life, which the key names (boot id, pid, start time), on this host.
    Readable rather than hashed: hashlib would load OpenSSL (3.5 MB)."""
    return f"{origin.host}:{origin.supervisord_key}:{event.header.get('serial', '')}"


def _int(text: Optional[str]) -> Optional[int]:
    return int(text) if text is not None and text.isdigit() else None


class Classifier:
    def __init__(self, origin: Origin, oom_baseline: Optional[int], oom_window: timedelta = OOM_WINDOW) -> None:
        self.origin = origin
        self.oom_baseline = oom_baseline
        self.oom_window = oom_window
        # OOM kills counted but not yet tied to a death: when each was seen.
        self._kills: deque[datetime] = deque(maxlen=MAX_PENDING_KILLS)
        # A previous Navi's death by SIGKILL, while kills were unclaimed.
        self._own_killed: Optional[tuple[ProcessInfo, ExitInfo]] = None
        # The last exit of each program and its last words, for the FATAL
        # that may follow and the end of a crash loop.
        self._last_exit: OrderedDict[str, tuple[ExitInfo, Optional[Output]]] = OrderedDict()

    @property
    def unclaimed_kills(self) -> int:
        return len(self._kills)

    def counter(self) -> tuple[Optional[int], list[datetime]]:
        """The last reading of the oom_kill counter, and when each kill it
        counted and no death claimed yet was seen: what a next Navi needs."""
        return self.oom_baseline, list(self._kills)

    def counted(self) -> tuple[Optional[int], int, Optional[datetime]]:
        """A cheap token of :meth:`counter` (read at every event): kills are
        only ever added at the end and taken from the front."""
        return self.oom_baseline, len(self._kills), self._kills[0] if self._kills else None

    def resume(self, baseline: int, kills: list[datetime]) -> None:
        """Go on from a previous Navi's counter: kills counted since its last
        reading are kills for the deaths delivered to this one."""
        self.oom_baseline = baseline
        self._kills.clear()
        self._kills.extend(kills)

    def decide(self, event: Event, evidence: Evidence) -> Optional[Notification]:
        """The notification for an event, if any."""
        rise, counter_problem = self._count(evidence.observed_at, evidence.oom_kill)
        incident = triage(event, self.origin)
        if incident is None:
            if event.name.startswith("TICK_"):
                return self._unclaimed(event, evidence, rise, counter_problem)
            return None
        if incident is Incident.OWN_DEATH:
            self._own_death(event, evidence)
            return None
        notes: list[str] = []
        memory = _memory_info(evidence, rise, counter_problem, notes)
        fields = event.fields
        name, group = fields.get("processname", ""), fields.get("groupname", "")
        key = f"{group}:{name}"
        if incident is Incident.FATAL:
            kind: Kind = "fatal"
            exit_info, words = self._last_exit.get(key) or (
                no_exit("FATAL carries no exit status and Navi saw no earlier exit of it", startup=True),
                None,
            )
            summary = summaries.fatal(name, exit_info)
            pid = None
        else:
            startup = event.name == "PROCESS_STATE_BACKOFF"
            exit_info, words = _exit_info(evidence, startup), evidence.output
            self._remember(key, exit_info, words)
            if words is not None and not words.at_death:
                notes.append(LATE_WORDS)
            kind = "oom" if self._claim_kill(exit_info, evidence, notes) else "crash"
            if exit_info.unavailable:
                notes.append(f"exit status unknown: {exit_info.unavailable}")
            record_pid = evidence.exit.pid if evidence.exit else None
            pid = _int(fields.get("pid")) or record_pid
            if memory is not None and kind == "oom":
                memory = _with_programs(memory, evidence.rss, victim=(group, name))
            summary = summaries.death(name, kind, exit_info, memory, startup)
        process = ProcessInfo(name=name, group=group, pid=pid)
        n = self._notification(event, evidence, kind, summary, process, exit_info, memory, notes)
        return _with_last_words(n, words)

    def id_prefix(self) -> str:
        """What every id of this supervisord's lifetime begins with."""
        return f"{self.origin.host}:{self.origin.supervisord_key}:"

    def crash_loop(self, event: Event, key: str, loop: CrashLoop, now: datetime) -> Notification:
        """A crash loop's begin or end, for the program ``group:name``, with
        its last exit and last words."""
        exit_info, words = self._last_exit.get(key) or (no_exit("Navi saw no exit of it"), None)
        group, _, name = key.partition(":")
        summary = summaries.crash_loop(name, loop, exit_info)
        process = ProcessInfo(name=name, group=group, pid=None)
        n = self._notification(event, Evidence(observed_at=now), "crash_loop", summary, process, exit_info, None, [])
        return _with_last_words(replace(n, crash_loop=loop), words)

    def pressure(
        self, change: Pressure, snapshot: Optional[MemorySnapshot], rss: tuple[RssSample, ...], now: datetime
    ) -> Notification:
        """A pressure episode's begin or end, with who held the memory."""
        notes: list[str] = []
        memory = _memory_info(Evidence(observed_at=now, memory=snapshot), None, None, notes)
        if memory is not None:
            memory = _with_programs(memory, rss, victim=None)
        summary = summaries.pressure(change, memory)
        exit_info = no_exit("a pressure notification: no program died")
        n = self._notification(None, Evidence(observed_at=now), "pressure", summary, nobody(), exit_info, memory, notes)
        # No event behind it, whose serial would make it unique: its episode does.
        return replace(n, id=f"{change.episode}:{change.phase}", pressure=change)

    def _notification(
        self,
        event: Optional[Event],
        evidence: Evidence,
        kind: Kind,
        summary: str,
        process: ProcessInfo,
        exit_info: ExitInfo,
        memory: Optional[MemoryInfo],
        notes: list[str],
        count: int = 1,
    ) -> Notification:
        return Notification(
            schema_version=SCHEMA_VERSION,
            id=event_id(self.origin, event) if event is not None else "",
            type=kind,
            time=evidence.observed_at,
            count=count,
            summary=summary,
            process=process,
            exit=exit_info,
            memory=memory,
            notes=notes,
            header=dict(event.header) if event is not None else {},
            metadata=dict(event.fields) if event is not None else {},
            source=Source(
                host=self.origin.host,
                supervisord_pid=self.origin.supervisord_pid,
                supervisord_started=self.origin.supervisord_started,
                navi_version=self.origin.navi_version,
            ),
        )

    def _unclaimed(
        self, event: Event, evidence: Evidence, rise: Optional[int], counter_problem: Optional[str]
    ) -> Optional[Notification]:
        """On a TICK: kills no program's death will claim are the container's.
        None waits in the log (supervisord logs a death before it sends its
        event), or they have waited too long."""
        now = evidence.observed_at
        due = 0
        while self._kills and (evidence.exits_waiting == 0 or now - self._kills[0] > self.oom_window):
            self._kills.popleft()
            due += 1
        if not due:
            if not self._kills:  # the programs dying with it took every kill: not Navi's
                self._own_killed = None
            return None
        own, self._own_killed = self._own_killed, None
        notes: list[str] = []
        memory = _memory_info(evidence, rise, counter_problem, notes)
        if memory is not None:
            memory = _with_programs(memory, evidence.rss, victim=None)
        if own is not None:
            # One kill is the dead Navi's; any other, the next TICK reports.
            self._kills.extendleft([now] * (due - 1))
            process, exit_info = own
            notes.insert(
                0,
                "the OOM killer's victim was Navi's own process, not the customer's program; "
                "supervisord started Navi again",
            )
            summary = summaries.own_oom(process.name or "navi", memory)
            return self._notification(event, evidence, "oom", summary, process, exit_info, memory, notes)
        summary = summaries.container_oom(due, memory)
        exit_info = no_exit("no supervised program exited: the process killed is not one supervisord runs")
        return self._notification(event, evidence, "oom", summary, nobody(), exit_info, memory, notes, count=due)

    def _own_death(self, event: Event, evidence: Evidence) -> None:
        """A previous Navi died by SIGKILL while kills were counted: the OOM
        killer's victim may have been Navi itself.  The customer's programs
        dying now claim the kills first; one left at the next TICK is Navi's."""
        exit_info = _exit_info(evidence, event.name == "PROCESS_STATE_BACKOFF")
        if self._kills and is_sigkill(exit_info.code, exit_info.signal_number):
            fields = event.fields
            process = ProcessInfo(
                name=fields.get("processname"), group=fields.get("groupname"), pid=_int(fields.get("pid"))
            )
            self._own_killed = (process, exit_info)

    def _count(self, now: datetime, oom_kill: Optional[int]) -> tuple[Optional[int], Optional[str]]:
        """Take a reading of the counter: new kills join those not yet
        claimed.  Returns its rise, or why it cannot tell."""
        if oom_kill is None:
            # Lost track: what it reads when it is back is a new baseline,
            # not kills (the cgroup may be another one by then).
            self.oom_baseline = None
            return None, "the oom_kill counter could not be read"
        baseline, self.oom_baseline = self.oom_baseline, oom_kill
        if baseline is None:
            return None, "no earlier oom_kill reading to compare with"
        if oom_kill < baseline:
            return None, f"the oom_kill counter went back from {baseline} to {oom_kill} (a new cgroup?)"
        self._kills.extend([now] * (oom_kill - baseline))
        return oom_kill - baseline, None

    def _claim_kill(self, exit_info: ExitInfo, evidence: Evidence, notes: list[str]) -> bool:
        """Whether this death takes one of the unclaimed OOM kills.

        The OOM killer sends SIGKILL (a shell turns it into exit status 137);
        a death by another signal is never its victim.  A plain exit after a
        kill is a parent whose child was killed, unless a SIGKILLed program
        is waiting in the log to claim the kill itself."""
        if not self._kills:
            return False
        killed = is_sigkill(exit_info.code, exit_info.signal_number)
        if exit_info.signal is not None and not killed:
            notes.append(
                f"the container's oom_kill counter rose, but {exit_info.signal} is not the OOM killer's "
                "signal: the kill was of another process"
            )
            return False
        if not killed and len(self._kills) <= evidence.sigkills_waiting:
            notes.append(
                "the container's oom_kill counter rose, but a program killed by SIGKILL is still to be "
                "reported: the kill is left to it"
            )
            return False
        if killed and evidence.sigkills_waiting >= len(self._kills):
            notes.append(
                f"{evidence.sigkills_waiting} other program(s) were killed by SIGKILL at about the same time, "
                "and the oom_kill counter does not say which process it killed: the kill is given to the "
                "first one reported"
            )
        seen = self._kills.popleft()
        if seen < evidence.observed_at:
            ms = (evidence.observed_at - seen).total_seconds() * 1000
            notes.append(f"this OOM kill was counted at a reading {ms:.0f} ms before this death was reported")
        return True

    def _remember(self, key: str, exit_info: ExitInfo, words: Optional[Output]) -> None:
        self._last_exit.pop(key, None)
        self._last_exit[key] = (exit_info, words)
        while len(self._last_exit) > MAX_REMEMBERED_EXITS:
            self._last_exit.popitem(last=False)


def _memory_info(
    evidence: Evidence, rise: Optional[int], counter_problem: Optional[str], notes: list[str]
) -> Optional[MemoryInfo]:
    snap = evidence.memory
    if snap is None:
        notes.append(
            f"no memory evidence ({evidence.memory_problem or 'no memory cgroup'}): "
            "an OOM kill cannot be told from a crash"
        )
        return None
    if counter_problem:
        notes.append(f"{counter_problem}: an OOM kill cannot be told from a crash")
    return snap.info(rise)


def _with_programs(memory: MemoryInfo, samples: tuple[RssSample, ...], victim: Optional[tuple[str, str]]) -> MemoryInfo:
    listed = [
        ProgramMemory(name=s.name, group=s.group, pid=s.pid, rss_bytes=s.rss_bytes, sampled_at=s.sampled_at)
        for s in sorted(samples, key=lambda s: s.rss_bytes, reverse=True)
    ]
    own = next((p for p in listed if (p.group, p.name) == victim), None)
    return replace(memory, programs=listed[:MAX_PROGRAMS_LISTED], victim=own)


def _with_last_words(n: Notification, words: Optional[Output]) -> Notification:
    """A program's notification with its last words, its summary ending with
    the last line of them."""
    if words is None:
        return n
    return replace(n, output=words, summary=summaries.with_last_words(n.summary, lastwords.last_line(words)))


def nobody() -> ProcessInfo:
    """The process of a notification about the whole container."""
    return ProcessInfo(name=None, group=None, pid=None)


def no_exit(why: str, startup: bool = False) -> ExitInfo:
    """The exit of a notification that has none to tell, and why."""
    return ExitInfo(
        code=None,
        signal=None,
        signal_number=None,
        core_dumped=None,
        during_startup=startup,
        log_line=None,
        unavailable=why,
    )


def _exit_info(evidence: Evidence, startup: bool) -> ExitInfo:
    record = evidence.exit
    if record is None:
        return no_exit(evidence.exit_problem or "no log line for this exit", startup)
    return ExitInfo(
        code=record.code,
        signal=record.signal_name,
        signal_number=record.signal,
        core_dumped=record.core_dumped,
        during_startup=startup,
        log_line=record.line,
        unavailable=None
        if record.code is not None or record.signal is not None
        else "supervisord logged an unknown termination cause",
    )
