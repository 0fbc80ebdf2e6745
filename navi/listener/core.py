"""The listener's decisions, without I/O, in the manner of h11's Connection.

One object owns everything ``navi listen`` knows: the exit log, the
classifier, the coalescer, the notifications decided and not yet written,
and which events have had their effect.  The shell asks :meth:`Core.needs`
what to read for an event, gathers those :class:`Readings`, and carries out
the actions :meth:`Core.handle` returns, in order: save the state, publish
notifications, watch pids.  It reports back what it could not do.

Nothing is lost when Navi is killed at any moment, because the state is
saved before anything it decided is written, and before the event is
acknowledged (the shell's order).  A new Navi first writes what the last one
had decided; an event that supervisord delivers again, whose effect is in
the saved state already, is recognised by its serial and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Optional, Union

from navi.listener.cgroup import MemorySnapshot, PressureReading
from navi.listener.classify import OOM_WINDOW, Classifier, Evidence, Incident, Origin, triage
from navi.listener.coalesce import Coalescer, Outgoing, Rate, RateLimit
from navi.listener.exitlog import ExitLog, ExitRecord, is_sigkill
from navi.listener.pressure import Episode, PressureLimits, PressureWatch
from navi.listener.procs import RssSample
from navi.listener.protocol import Event
from navi.listener.restarts import LoopLimits, ProgramDeaths, Restarts
from navi.listener.running import Running
from navi.names import notification_name
from navi.notification import EPISODES, CrashLoop, Notification, Output

STATE_VERSION = 3
TIDY_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Limits:
    """The settings of the decisions."""

    rate: RateLimit = field(default_factory=RateLimit)
    oom_window: timedelta = OOM_WINDOW
    loops: LoopLimits = field(default_factory=LoopLimits)
    pressure: PressureLimits = field(default_factory=PressureLimits)
    last_words: bool = True  # read the end of a dead program's output


@dataclass(frozen=True)
class Needs:
    """What the shell must read before :meth:`Core.handle` can decide."""

    log: bool = False  # what is new in supervisord's main log
    oom_kill: bool = False  # the cgroup's oom_kill counter alone (one small file)
    memory: bool = False  # the cgroup's memory figures, the counter among them
    rss: bool = False  # a sample of each running program's memory
    output: bool = False  # the end of the event's program's output (its last words)
    pressure: bool = False  # the figures of memory pressure

    def __bool__(self) -> bool:
        return self.log or self.oom_kill or self.memory or self.rss or self.output or self.pressure


@dataclass(frozen=True)
class Readings:
    """What the shell read for one event.  A reading not taken is None and
    its ``*_read`` flag False."""

    now: datetime
    log_read: bool = False
    log: str = ""  # the log's new text
    log_problem: Optional[str] = None  # why it could not be read
    oom_kill_read: bool = False
    oom_kill: Optional[int] = None
    memory_read: bool = False
    memory: Optional[MemorySnapshot] = None
    memory_problem: Optional[str] = None  # why there is no memory cgroup
    rss: Optional[tuple[RssSample, ...]] = None
    # Read with the memory, after it: watched programs dead, not yet handled.
    dying: int = 0
    output_read: bool = False
    output: Optional[Output] = None  # None: it has none (not a program's death; told not to read)
    pressure: Optional[PressureReading] = None  # None: not read, or no memory cgroup
    pressure_read: bool = False


@dataclass(frozen=True)
class Save:
    """Replace the saved state with this, before any action after it."""

    state: State


@dataclass(frozen=True)
class Publish:
    """Write this notification; then say :meth:`Core.published` or :meth:`Core.failed`."""

    out: Outgoing


@dataclass(frozen=True)
class WatchPids:
    """WatchPids exactly these pids for their deaths."""

    pids: frozenset[int]


@dataclass(frozen=True)
class Remark:
    """A line for Navi's log."""

    line: str


Action = Union[Save, Publish, WatchPids, Remark]


@dataclass(frozen=True)
class Counter:
    """The memory cgroup's oom_kill counter, as Navi last read it: kills
    counted after it are a next Navi's to place, even those counted while
    no Navi ran."""

    cgroup: str  # the cgroup it was read in
    oom_kill: int
    kills: list[datetime] = field(default_factory=list)  # counted, not yet claimed by a death: when


@dataclass(frozen=True)
class RunningProgram:
    group: str
    name: str
    pid: int


@dataclass(frozen=True)
class State:
    """What outlives a Navi: saved in the notifications directory."""

    supervisord: str  # the supervisord whose serials ``applied`` counts
    applied: Optional[int]  # the last event whose effect this state holds
    rates: list[Rate] = field(default_factory=list)
    outbox: list[Outgoing] = field(default_factory=list)  # decided, perhaps not yet written
    counter: Optional[Counter] = None
    # What ran, and its last memory sample: what a post-mortem names when the
    # whole container was killed at once.  Saved at TICKs.
    running: list[RunningProgram] = field(default_factory=list)
    samples: list[RssSample] = field(default_factory=list)
    # Who wrote it, and its file names' stamp: for a post-mortem's notification.
    origin: Optional[Origin] = None
    stamp: Optional[datetime] = None
    deaths: list[ProgramDeaths] = field(default_factory=list)  # of the same supervisord
    pressure: Optional[Episode] = None  # in the same cgroup
    version: int = STATE_VERSION


NEW_BASELINE = (
    "this death came before this Navi started, and no earlier reading of the oom_kill counter survived "
    "(Navi's state file was missing): an OOM kill before then cannot be told from a kill -9"
)
FIRST_READING = (
    "this OOM kill was counted before this container's first Navi read the oom_kill counter, soon after "
    "supervisord started: taken as this container's"
)
# How young supervisord must be for kills counted before the first Navi's
# first reading to be its container's: a Navi starts in seconds, or some tens
# of seconds on a starved CPU.
FIRST_START = timedelta(minutes=2)
NO_EXIT_LINE = (
    "supervisord's log has no exited: line for it (it may have failed to spawn: see its spawnerr: "
    "lines; or supervisord logs only errors, or the line was rotated away)"
)


class Core:
    def __init__(
        self,
        origin: Origin,
        stamp: datetime,
        oom_baseline: Optional[int],
        limits: Limits = Limits(),
        own_pid: Optional[int] = None,
        cgroup_path: Optional[str] = None,
    ) -> None:
        self.origin = origin
        self._stamp = stamp  # file names sort by it: supervisord's start
        self.classifier = Classifier(origin, oom_baseline, limits.oom_window)
        self.coalescer = Coalescer(limits.rate)
        self.exit_log = ExitLog(origin.own_name, own_pid)
        self.running = Running(origin.own_group)
        self.restarts = Restarts(limits.loops)
        self.pressure = PressureWatch(limits.pressure)
        self._last_words = limits.last_words
        self._nth = 0  # notifications named after the last event so far
        self._applied: Optional[int] = None
        self._outbox: dict[str, Outgoing] = {}
        self._changes = 0  # of the outbox; the coalescer counts its own
        self._cgroup_path = cgroup_path
        # No earlier reading of the counter yet: deaths from before this Navi
        # cannot be told from a kill -9.  Until a state with one is restored.
        self._baseline_new = True
        self._first_kills = 0  # counted before this first Navi's first reading, and not claimed yet
        self._first_checked = False
        # Kills from the gap before this Navi, which deaths logged before it
        # started may claim: their events are buffered for it, and a TICK
        # delivered first must not call those kills the container's.
        self._gap = False
        self._handled = 0  # events
        self._saved: Optional[tuple[object, ...]] = None
        self._saved_tidy: Optional[tuple[object, ...]] = None
        self._tidied: Optional[datetime] = None  # when the running table was last saved
        self._unsaved: Optional[tuple[str, datetime]] = None  # why the state is not saved, since when
        self._rss: tuple[RssSample, ...] = ()  # the last memory sample of each running program

    # -- start-up ------------------------------------------------------------

    def first_log(self, text: str) -> None:
        """The main log as it was when this Navi started."""
        self.exit_log.feed(text)
        self.exit_log.first_read_done()

    def note_running(self, group: str, name: str, pid: int) -> None:
        """A program running before this Navi started (its RUNNING event was
        sent to an earlier one)."""
        self.running.note(group, name, pid)

    def restore(self, state: State, now: datetime) -> list[Action]:
        """Take on what a previous Navi saved; returns what it had decided
        and perhaps not written, to write now."""
        self.coalescer.restore(state.rates, now)
        if state.supervisord == self.origin.supervisord_key and state.applied is not None:
            self._applied = state.applied if self._applied is None else max(state.applied, self._applied)
        for out in state.outbox:
            self._outbox.setdefault(out.name, out)
        if state.supervisord == self.origin.supervisord_key:
            self.restarts.restore(state.deaths)
        counter = state.counter
        if counter is not None and counter.cgroup == self._cgroup_path:
            self.pressure.restore(state.pressure)
        if counter is not None and counter.cgroup == self._cgroup_path and not self._handled:
            self.classifier.resume(counter.oom_kill, counter.kills)
            self._baseline_new = False
            self._first_kills = 0
            self._gap = True
        return [Publish(out) for out in state.outbox]

    # -- events --------------------------------------------------------------

    def _first_start(self, now: datetime) -> None:
        """Before the first event: with no earlier reading, kills the counter
        already holds are this container's when this is the first Navi of a
        young supervisord, from before it was up (slow starts, throttled
        CPUs).  A saved reading, restored before any event, wins."""
        if self._first_checked or self._handled or not self._baseline_new:
            return
        self._first_checked = True
        if not self.exit_log.first_of_its_name():
            return
        started, counted = self.origin.supervisord_started, self.classifier.oom_baseline
        if started is None or not counted or now - started > FIRST_START:
            return
        self._first_kills = counted
        self.classifier.resume(counted, [now] * counted)

    def needs(self, event: Event, readings: Readings) -> Needs:
        """What to read before :meth:`handle`, given what was read so far."""
        self._first_start(readings.now)
        incident = triage(event, self.origin)
        if incident is Incident.EXIT:
            output = self._last_words and not readings.output_read
            return Needs(log=not readings.log_read, memory=not readings.memory_read, output=output)
        if incident is Incident.OWN_DEATH:
            return Needs(log=not readings.log_read, memory=not readings.memory_read)
        if incident is Incident.FATAL:
            return Needs(memory=not readings.memory_read)
        if event.name == "PROCESS_STATE_STARTING" and self.running.watches(event):
            # Its pid is in the log's spawned: line: watched, a death during
            # startsecs is seen at once too.
            return Needs(log=not readings.log_read)
        if not event.name.startswith("TICK_"):
            return Needs()  # routine: only which programs run
        # At every TICK_5 (and every death) the counter is read, so that each
        # OOM kill is dated within seconds.  The log and the figures are read
        # only when there are kills to place: which deaths are still to come.
        if not readings.oom_kill_read and not readings.memory_read:
            return Needs(oom_kill=True, rss=readings.rss is None, pressure=not readings.pressure_read)
        if readings.memory_read:
            return Needs()
        if self._kills_to_place(readings.oom_kill):
            return Needs(log=not readings.log_read, memory=True)
        return self.sample_needs(readings)

    def sample_needs(self, readings: Readings) -> Needs:
        """What to read at a sample between events (:meth:`sample_in`), or
        at a TICK: the pressure figures, and the memory figures too when an
        episode begins or ends with them (for its notification)."""
        if not readings.pressure_read:
            return Needs(pressure=True)
        if readings.memory_read or readings.pressure is None:
            return Needs()
        _, change = self.pressure.step(readings.pressure, readings.now, "")
        return Needs(memory=change is not None, rss=change is not None and readings.rss is None)

    def sample_in(self, now: datetime) -> Optional[timedelta]:
        """How soon to sample between events, when sooner than a TICK_5."""
        return self.pressure.sample_in(now)

    def _kills_to_place(self, oom_kill: Optional[int]) -> bool:
        return bool(self.classifier.unclaimed_kills) or oom_kill != self.classifier.oom_baseline

    def handle(self, event: Event, readings: Readings) -> list[Action]:
        """The actions for an event, in the order they must be carried out."""
        self._first_start(readings.now)
        if readings.log_read:
            self.exit_log.feed(readings.log)
        if readings.rss is not None:
            self._rss = readings.rss
        serial = event.header.get("serial", "")
        number = int(serial) if serial.isdigit() else None
        self._nth = 0
        redelivered = number is not None and self._applied is not None and number <= self._applied
        incident = triage(event, self.origin)
        if redelivered:
            # Its effect is saved already: only what it decided is still to write.
            if incident in (Incident.EXIT, Incident.OWN_DEATH):
                self._take_exit(event, readings)
            self.running.track(event)
            said = Remark(f"event {serial} ({event.name}) delivered again: the last Navi had handled it already")
            return [said, *self._actions(readings.now, save=False, publish=list(self._outbox.values()))]
        if number is not None:
            self._applied = number
        self._handled += 1
        self.running.track(event, self.exit_log.spawned_pid)
        decided = self._decide(incident, event, readings)
        if (readings.memory_read or readings.oom_kill_read) and not self.classifier.unclaimed_kills:
            self._gap = False  # the gap's kills are placed
        decided += self._episodes(event, readings)
        out = self._admit(decided, readings.now)
        if event.name.startswith("TICK_"):
            out += self.coalescer.due(readings.now)
        for o in out:
            self._outbox[o.name] = o
            self._changes += 1
        tidy = event.name.startswith("TICK_") and self._tidy_due(readings.now)
        return self._actions(readings.now, save=self._dirty(tidy), publish=out)

    def sample(self, readings: Readings) -> list[Action]:
        """A sample between events: a pressure episode may begin or end."""
        if readings.rss is not None:
            self._rss = readings.rss
        self._nth = max(self._nth, 1)  # the last event's own name and id are its own notification's
        out = self._admit(self._pressure(readings), readings.now)
        for o in out:
            self._outbox[o.name] = o
            self._changes += 1
        return self._actions(readings.now, save=self._dirty(), publish=out)

    def _admit(self, decided: list[Notification], now: datetime) -> list[Outgoing]:
        """Name what was decided after the last event, and pass it through
        the rate limit."""
        out = []
        for n in decided:
            name = notification_name(self._stamp, str(self._applied or 0), self._nth)
            if self._nth:  # the event's first notification has the event's id
                n = replace(n, id=f"{n.id}:{self._nth}")
            self._nth += 1
            admitted = self.coalescer.admit(Outgoing(name, self._with_save_notes(n)), now)
            out += [admitted] if admitted is not None else []
        return out

    def _episodes(self, event: Event, readings: Readings) -> list[Notification]:
        """Crash loops that end with this event, and pressure that begins or ends."""
        fields = event.fields
        key = f"{fields.get('groupname', '')}:{fields.get('processname', '')}"
        ended: list[tuple[str, Optional[CrashLoop]]] = []
        if event.name in ("PROCESS_STATE_STOPPED", "PROCESS_STATE_FATAL"):
            why = "stopped" if event.name == "PROCESS_STATE_STOPPED" else "FATAL"
            ended = [(key, self.restarts.ended(key, readings.now, why))]
        elif event.name.startswith("TICK_"):
            ended = [*self.restarts.calmed(readings.now)]
        found = [self._loop(event, readings, k, loop) for k, loop in ended if loop is not None]
        return found + self._pressure(readings)

    def _pressure(self, readings: Readings) -> list[Notification]:
        if readings.pressure is None:
            return []
        when = f"{readings.now:%Y%m%dT%H%M%S.%fZ}"
        change = self.pressure.observe(readings.pressure, readings.now, f"{self.classifier.id_prefix()}pressure:{when}")
        if change is None:
            return []
        return [self.classifier.pressure(change, readings.memory, self._rss, readings.now)]

    def _loop(self, event: Event, readings: Readings, key: str, loop: CrashLoop) -> Notification:
        n = self.classifier.crash_loop(event, key, loop, readings.now)
        return replace(n, deaths=self.restarts.deaths(key, readings.now))

    def _decide(self, incident: Optional[Incident], event: Event, readings: Readings) -> list[Notification]:
        n = self._classify(incident, event, readings)
        if n is None or n.process.name is None or incident not in (Incident.EXIT, Incident.FATAL):
            return [] if n is None else [n]
        key = f"{n.process.group}:{n.process.name}"
        loop = self.restarts.death(key, readings.now) if incident is Incident.EXIT else None
        if n.type == "oom" and self.pressure.episode is not None:
            n = replace(n, pressure=self.pressure.info())
        n = replace(n, deaths=self.restarts.deaths(key, readings.now))
        return [n] if loop is None else [n, self._loop(event, readings, key, loop)]

    def _classify(self, incident: Optional[Incident], event: Event, readings: Readings) -> Optional[Notification]:
        if incident in (Incident.EXIT, Incident.OWN_DEATH):
            record, problem = self._take_exit(event, readings)
            n = self.classifier.decide(event, self._evidence(readings, record, problem))
            before_this_navi = record is not None and record.stale and self._baseline_new
            if n is not None and n.type == "oom" and self._first_kills:
                # Kills are claimed oldest first: the first ones are those.
                self._first_kills -= 1
                n = replace(n, notes=[*n.notes, FIRST_READING])
            elif (
                n is not None
                and n.type == "crash"
                and before_this_navi
                and is_sigkill(n.exit.code, n.exit.signal_number)
            ):
                n = replace(n, notes=[*n.notes, NEW_BASELINE])
            return n
        if incident is Incident.FATAL:
            return self.classifier.decide(event, self._evidence(readings))
        if event.name.startswith("TICK_"):
            if readings.memory_read:
                return self.classifier.decide(event, self._evidence(readings))
            self.classifier.decide(event, Evidence(observed_at=readings.now, oom_kill=readings.oom_kill))
        return None

    def _take_exit(self, event: Event, readings: Readings) -> tuple[Optional[ExitRecord], Optional[str]]:
        """The exit record of a death's event, or why there is none."""
        pid = event.fields.get("pid", "")
        record = self.exit_log.take(event.fields.get("processname", ""), int(pid) if pid.isdigit() else None)
        if record is not None:
            return record, None
        return None, readings.log_problem or NO_EXIT_LINE

    def _evidence(
        self, readings: Readings, record: Optional[ExitRecord] = None, problem: Optional[str] = None
    ) -> Evidence:
        snapshot = readings.memory
        return Evidence(
            observed_at=readings.now,
            exit=record,
            exit_problem=problem,
            oom_kill=snapshot.oom_kill if snapshot else None,
            memory=snapshot,
            memory_problem=readings.memory_problem,
            sigkills_waiting=self.exit_log.sigkills_waiting(),
            # A death not logged yet (supervisord reaps it a moment later)
            # holds a kill back from being called the container's too.
            exits_waiting=self.exit_log.waiting(unseen=self._gap) + readings.dying,
            rss=self._rss,
            output=readings.output,
        )

    # -- what the shell could and could not do -------------------------------

    def published(self, name: str) -> None:
        """The notification ``name`` is written (or was already).  Saved at
        once (:meth:`settle`): a new Navi that found it still to write, and
        failed to, would hold its count a second time."""
        if self._outbox.pop(name, None) is not None:
            self._changes += 1

    def failed(self, name: str, reason: str, now: datetime) -> None:
        """The notification ``name`` could not be written: hold it, with its
        count, for a later try."""
        out = self._outbox.pop(name, None)
        if out is not None:
            self._changes += 1
            self.coalescer.failed(out, reason, now)

    def settle(self, now: datetime) -> list[Action]:
        """After the publications: the state to save, if they changed it."""
        if not self._dirty():
            return []
        actions: list[Action] = [Save(self.state(now))]
        self._saved, self._saved_tidy = self._version(), self._tidy()  # unless the shell says :meth:`unsaved`
        return actions

    def saved(self) -> None:
        """The last :class:`Save` was carried out."""
        self._unsaved = None

    def unsaved(self, problem: str, now: datetime) -> None:
        """The last :class:`Save` failed: counts held now would not survive a
        restart of Navi.  Said in the notifications until a save works, and
        tried again at the next incident or TICK."""
        if self._unsaved is None:
            self._unsaved = (problem, now)
        self._saved = None

    def _with_save_notes(self, n: Notification) -> Notification:
        if self._unsaved is None:
            return n
        problem, since = self._unsaved
        note = (
            f"Navi could not save its state at {since:%H:%M:%S} UTC ({problem}): until it does, a restart "
            "of Navi loses the counts it holds"
        )
        return replace(n, notes=[*n.notes, note])

    # -- the state -----------------------------------------------------------

    def state(self, now: datetime) -> State:
        return State(
            supervisord=self.origin.supervisord_key,
            applied=self._applied,
            rates=self.coalescer.save(now),
            outbox=list(self._outbox.values()),
            counter=self._counter(),
            running=[RunningProgram(g, n, pid) for g, n, pid in self.running.programs()],
            samples=list(self._rss),
            origin=self.origin,
            stamp=self._stamp,
            deaths=self.restarts.save(),
            pressure=self.pressure.episode,
        )

    def _counter(self) -> Optional[Counter]:
        baseline, kills = self.classifier.counter()
        if baseline is None or self._cgroup_path is None:
            return None
        return Counter(self._cgroup_path, baseline, kills)

    def _version(self) -> tuple[object, ...]:
        """What must be saved before anything it decided is carried out."""
        return (
            self.coalescer.changes,
            self._changes,
            self.restarts.changes,
            self.pressure.changes,
            *self.classifier.counted(),
        )

    def _tidy(self) -> tuple[object, ...]:
        """What is saved at TICKs: which programs run, their memory."""
        return tuple(self.running.programs()), self._rss

    def _tidy_due(self, now: datetime) -> bool:
        """The running table is saved once a minute at most: it changes at
        every start and stop, and a post-mortem can do with a minute-old one."""
        if self._tidied is not None and now - self._tidied < TIDY_EVERY:
            return False
        if self._tidy() == self._saved_tidy:
            return False
        self._tidied = now
        return True

    def _dirty(self, tidy: bool = False) -> bool:
        return self._version() != self._saved or tidy

    def _actions(self, now: datetime, save: bool, publish: list[Outgoing]) -> list[Action]:
        actions: list[Action] = []
        if save:
            actions.append(Save(self.state(now)))
            self._saved, self._saved_tidy = self._version(), self._tidy()  # unless the shell says :meth:`unsaved`
        actions += [Publish(o) for o in publish]
        actions.append(WatchPids(self.running.pids()))
        return actions

    @property
    def held(self) -> int:
        """Incidents not yet in a notification written: held, or decided."""
        outbox = self._outbox.values()
        return self.coalescer.held + sum(o.notification.count for o in outbox if o.notification.type not in EPISODES)
