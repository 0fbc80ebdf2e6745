"""The listener's core, without a process: what it needs, what it decides,
and that no count is lost however often Navi is killed.

The harness below is the shell's contract in a few lines: read what the
core needs, carry out its actions in order, acknowledge the event last.  A
kill can fall between any two of those steps (and during a start-up); a
killed Navi's event is delivered again to the next, which starts from the
saved state alone."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener import lastwords
from navi.listener.cgroup import MemorySnapshot, PressureReading
from navi.listener.classify import Origin
from navi.listener.coalesce import RateLimit
from navi.listener.core import Action, Core, Limits, Needs, Publish, Readings, Remark, Save, State, WatchPids
from navi.listener.protocol import Event
from navi.listener.restarts import LoopLimits
from navi.names import in_order
from navi.notification import EPISODES, Notification, Output, decode, encode
from tests.helpers import examples

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
ORIGIN = Origin(
    host="h",
    supervisord_pid=1,
    supervisord_started=T0,
    supervisord_key="boot:1:100",
    own_group="navi",
    own_name="navi",
    navi_version="test",
)
LIMITS = Limits(RateLimit(burst=3, pace=timedelta(seconds=60), quiet=timedelta(seconds=10)))
LOOPS = LoopLimits(deaths=5, window=timedelta(minutes=10), calm=timedelta(seconds=30))


def event(serial: int, name: str, payload: str) -> Event:
    return Event({"ver": "3.0", "serial": str(serial), "pool": "navi", "eventname": name}, payload)


def exited(serial: int, program: str, pid: int = 7) -> Event:
    return event(
        serial,
        "PROCESS_STATE_EXITED",
        f"processname:{program} groupname:{program} from_state:RUNNING expected:0 pid:{pid}",
    )


def tick(serial: int) -> Event:
    return event(serial, "TICK_5", "when:1")


def snapshot(oom_kill: int = 0) -> MemorySnapshot:
    return MemorySnapshot(2, "/sys/fs/cgroup", 64 << 20, 1 << 20, 2 << 20, oom_kill, ())


def core(baseline: Optional[int] = 0) -> Core:
    return Core(ORIGIN, T0, baseline, LIMITS, cgroup_path="/sys/fs/cgroup")


def looping() -> Core:
    """A core whose crash loops end after 30 s of calm."""
    return Core(ORIGIN, T0, 0, replace(LIMITS, rate=RateLimit(burst=100), loops=LOOPS), cgroup_path="/sys/fs/cgroup")


# -- what it needs ------------------------------------------------------------------


def test_a_death_needs_the_log_and_the_memory_figures() -> None:
    c = core()
    assert c.needs(exited(1, "web"), Readings(T0)) == Needs(log=True, memory=True, output=True)
    read = Readings(T0, log_read=True, memory_read=True, memory=snapshot(), output_read=True)
    assert not c.needs(exited(1, "web"), read)
    told_not_to = Core(ORIGIN, T0, 0, replace(LIMITS, last_words=False), cgroup_path="/sys/fs/cgroup")
    assert told_not_to.needs(exited(1, "web"), Readings(T0)) == Needs(log=True, memory=True)


def test_a_routine_event_needs_nothing_and_its_own_pool_is_ignored() -> None:
    c = core()
    running = event(1, "PROCESS_STATE_RUNNING", "processname:web groupname:web from_state:STARTING pid:9")
    assert not c.needs(running, Readings(T0))
    own = event(2, "PROCESS_STATE_RUNNING", "processname:navi groupname:navi from_state:STARTING pid:9")
    assert not c.needs(own, Readings(T0))
    # A previous Navi's death is looked at: it may have been the OOM killer's victim.
    assert c.needs(exited(3, "navi"), Readings(T0)) == Needs(log=True, memory=True)


def test_a_tick_reads_the_counter_and_only_looks_further_when_it_rose() -> None:
    c = core(baseline=2)
    assert c.needs(tick(1), Readings(T0)) == Needs(oom_kill=True, rss=True, pressure=True)
    quiet = Readings(T0, oom_kill_read=True, oom_kill=2, rss=(), pressure_read=True)
    assert not c.needs(tick(1), quiet)
    rose = Readings(T0, oom_kill_read=True, oom_kill=3, rss=(), pressure_read=True)
    assert c.needs(tick(1), rose) == Needs(log=True, memory=True)
    # The kill no death claims is the container's, at that TICK.
    actions = c.handle(
        tick(1),
        Readings(T0, oom_kill_read=True, oom_kill=3, rss=(), log_read=True, memory_read=True, memory=snapshot(3)),
    )
    (published,) = [a.out.notification for a in actions if isinstance(a, Publish)]
    assert published.type == "oom" and published.process.name is None and published.count == 1


def test_a_kill_counted_at_a_tick_waits_for_a_death_not_logged_yet() -> None:
    """The OOM killer's victim is dead (its pidfd said so) but supervisord
    has not reaped and logged it when a TICK counts the kill: the kill is
    the victim's when its event comes, not the container's at that TICK."""
    c = core(baseline=2)
    at_tick = Readings(T0, oom_kill_read=True, oom_kill=3, rss=(), log_read=True, memory_read=True)
    actions = c.handle(tick(1), replace(at_tick, memory=snapshot(3), dying=1))
    assert not [a for a in actions if isinstance(a, Publish)]
    log = "2026-12-01 03:00:05,000 WARN exited: web (terminated by SIGKILL; not expected)\n"
    later = Readings(T0 + timedelta(seconds=1), log_read=True, log=log, memory_read=True, memory=snapshot(3))
    (published,) = [a.out.notification for a in c.handle(exited(2, "web"), later) if isinstance(a, Publish)]
    assert published.type == "oom" and published.process.name == "web"


def test_running_programs_are_tracked_to_watch_and_sample() -> None:
    c = core()
    running = "processname:web groupname:web from_state:STARTING pid:42"
    for serial, payload in enumerate((running, running.replace("web", "navi"))):
        actions = c.handle(event(serial, "PROCESS_STATE_RUNNING", payload), Readings(T0))
    assert actions == [WatchPids(frozenset({42}))]  # never Navi's own
    assert c.running.programs() == [("web", "web", 42)]
    assert death(c, 3, "web", T0)[-1] == WatchPids(frozenset())


# -- what it decides ----------------------------------------------------------------


def death(c: Core, serial: int, program: str, now: datetime) -> list[Action]:
    return c.handle(exited(serial, program), Readings(now, log_read=True, memory_read=True, memory=snapshot()))


def test_the_state_is_saved_before_the_notification_it_decided() -> None:
    c = core()
    actions = death(c, 1, "web", T0)
    assert [type(a) for a in actions] == [Save, Publish, WatchPids]
    save, publish = actions[0], actions[1]
    assert isinstance(save, Save) and isinstance(publish, Publish)
    assert save.state.outbox == [publish.out] and save.state.applied == 1
    assert publish.out.name == "20261201T030000.000000Z-000000000001.json"
    c.published(publish.out.name)
    (save,) = c.settle(T0)  # written: no longer to do after a restart
    assert isinstance(save, Save) and save.state.outbox == []
    assert c.settle(T0) == []


def test_an_event_delivered_again_after_its_state_was_saved_changes_nothing() -> None:
    c = core()
    (save,) = [a for a in death(c, 1, "web", T0) if isinstance(a, Save)]
    again = core()
    (leftover,) = again.restore(decode(State, encode(save.state)), T0)
    assert isinstance(leftover, Publish)  # decided, perhaps not written: written first
    again.published(leftover.out.name)
    actions = death(again, 1, "web", T0)
    assert isinstance(actions[0], Remark) and "delivered again" in actions[0].line
    assert not [a for a in actions if isinstance(a, (Save, Publish))]


def test_a_save_that_fails_is_said_in_the_next_notification_and_tried_again() -> None:
    c = core()
    for a in death(c, 1, "web", T0):
        if isinstance(a, Save):
            c.unsaved("disk or quota full", T0)
        elif isinstance(a, Publish):
            c.published(a.out.name)
    assert any(isinstance(a, Save) for a in c.settle(T0))  # not given up
    c.unsaved("disk or quota full", T0)
    (publish,) = [a for a in death(c, 2, "web", T0 + timedelta(seconds=1)) if isinstance(a, Publish)]
    (note,) = publish.out.notification.notes[-1:]
    assert note.startswith("Navi could not save its state at 03:00:00 UTC (disk or quota full)")
    c.saved()
    (publish,) = [a for a in death(c, 3, "web", T0 + timedelta(seconds=2)) if isinstance(a, Publish)]
    assert not any("could not save" in n for n in publish.out.notification.notes)


def test_a_new_navi_keeps_the_rate_and_the_held_counts() -> None:
    c = core()
    state: Optional[State] = None
    for serial in range(1, 6):  # 3 written, 2 held
        for a in death(c, serial, "web", T0 + timedelta(seconds=serial)):
            if isinstance(a, Save):
                state = a.state
            elif isinstance(a, Publish):
                c.published(a.out.name)
    assert state is not None and c.held == 2
    again = core()
    again.restore(decode(State, encode(state)), T0 + timedelta(seconds=6))
    assert again.held == 2
    # No fresh burst: the next death is held too.
    assert not [a for a in death(again, 6, "web", T0 + timedelta(seconds=6)) if isinstance(a, Publish)]
    assert again.held == 3


# -- killed at any moment -----------------------------------------------------------

PROGRAMS = ("a", "b", "c")


@dataclass
class Disk:
    """The notifications directory: files by name, the state file, and
    what a consumer claimed (moved away: never seen again by Navi)."""

    files: dict[str, Notification] = field(default_factory=dict)
    claimed: dict[str, Notification] = field(default_factory=dict)
    state: Optional[bytes] = None
    full: bool = False


class Killed(Exception):
    pass


class Harness:
    """supervisord, a disk and Navi, with a kill possible at every step."""

    def __init__(self, kills: set[int], failures: set[int], claim_every: int) -> None:
        self.disk = Disk()
        self.log: list[str] = []  # supervisord's main log
        self.oom_kill = 0  # the cgroup's counter
        self._read = 0  # how much of the log this Navi has read
        self.unsaved = False
        self.kills, self.failures, self.claim_every = kills, failures, claim_every
        self.step = 0
        self.stream_steps = 0  # the moments before the quiet end
        self.restarts = 0
        self.core = self._start(T0)

    def _point(self) -> None:
        """A moment at which Navi may be killed."""
        self.step += 1
        # A state that could not be saved is lost with the Navi that held it:
        # that is said (stderr, notes), and left out of this proof.
        if self.step in self.kills and not self.unsaved:
            raise Killed

    def _start(self, now: datetime) -> Core:
        while True:
            try:
                c = core(baseline=self.oom_kill)  # a new Navi's baseline is what the counter reads now
                self._read = 0  # it reads the log from the start (its first tail)
                c.first_log(self._new_log())
                self._point()  # killed during start-up, before anything
                if self.disk.state is not None:
                    self._carry_out(c, c.restore(decode(State, self.disk.state), now), now)
                self._carry_out(c, c.settle(now), now)  # the state as it starts, as the shell saves it
                return c
            except Killed:
                self.restarts += 1

    def deliver(self, e: Event, now: datetime) -> None:
        """Until one Navi acknowledges it: supervisord sends it again to the
        next Navi when the last one died holding it."""
        while True:
            try:
                self._point()  # killed between reading the event and anything else
                readings = Readings(now)
                need = self.core.needs(e, readings)
                readings = Readings(
                    now,
                    log_read=need.log,
                    log=self._new_log() if need.log else "",
                    memory_read=need.memory,
                    memory=snapshot(self.oom_kill),
                    oom_kill_read=need.oom_kill,
                    oom_kill=self.oom_kill,
                    rss=() if need.rss else None,
                )
                self._carry_out(self.core, self.core.handle(e, readings), now)
                self._carry_out(self.core, self.core.settle(now), now)
                self._point()  # killed just before the acknowledgement
                return
            except Killed:
                self.restarts += 1
                self.core = self._start(now)

    def _carry_out(self, c: Core, actions: list[Action], now: datetime) -> None:
        for action in actions:
            self._point()
            if isinstance(action, Save):
                self.unsaved = self._fails()
                if self.unsaved:
                    c.unsaved("disk or quota full", now)
                else:
                    self.disk.state = encode(action.state)
                    c.saved()
            elif isinstance(action, Publish):
                name, n = action.out.name, action.out.notification
                if self._fails():
                    c.failed(name, "disk full", now)
                    continue
                there = self.disk.files.get(name) or self.disk.claimed.get(name)
                if there is None:
                    self.disk.files[name] = n
                else:  # already written: the same notification, or it would be a loss
                    assert there == n, (there, n)
                c.published(name)
                if len(self.disk.files) >= self.claim_every:  # the platform takes them
                    self.disk.claimed.update(self.disk.files)
                    self.disk.files.clear()

    def die(self, program: str, pid: int, how: str, now: datetime) -> None:
        """What supervisord logs of a death, before it sends the event."""
        stamp = f"{now:%Y-%m-%d %H:%M:%S},000"
        self.log += [
            f"{stamp} INFO spawned: '{program}' with pid {pid}",
            f"{stamp} WARN exited: {program} ({how}; not expected)",
        ]

    def _new_log(self) -> str:
        text = "".join(line + "\n" for line in self.log[self._read :])
        self._read = len(self.log)
        return text

    def _fails(self) -> bool:
        return self.step in self.failures

    def written(self) -> dict[str, Notification]:
        return {**self.disk.claimed, **self.disk.files}


CRASHES = ["crash a", "crash b", "crash c", "tick", "routine"]
streams = st.lists(st.tuples(st.sampled_from(CRASHES), st.integers(0, 40)), min_size=1, max_size=80)
# With OOM kills: a Navi started after the kernel counted one reads it in its
# own baseline; it goes on from the last one's saved reading instead.
oom_streams = st.lists(
    st.tuples(st.sampled_from([*CRASHES, "oom a", "oom b"]), st.integers(0, 40)), min_size=1, max_size=80
)


def run(
    stream: list[tuple[str, int]],
    kills: set[int],
    failures: set[int] = frozenset(),  # type: ignore[assignment]
    claim_every: int = 1000,
) -> tuple[Harness, int]:
    h = Harness(set(kills), set(failures), claim_every)
    now, incidents = T0, 0
    for serial, (what, gap) in enumerate(stream):
        now += timedelta(seconds=gap)
        if what.startswith(("crash", "oom")):
            incidents += 1
            kind, program = what.split()
            if kind == "oom":
                h.oom_kill += 1  # the kernel counts the kill before the death
            h.die(program, 1000 + serial, "terminated by SIGKILL" if kind == "oom" else "exit status 1", now)
            h.deliver(exited(serial, program, pid=1000 + serial), now)
        elif what == "tick":
            h.deliver(tick(serial), now)
        else:
            h.deliver(
                event(serial, "PROCESS_STATE_STARTING", "processname:a groupname:a from_state:EXITED tries:0"), now
            )
    # Then quiet, with TICKs and no more kills or failures: all that is held is written.
    h.kills, h.failures = set(), set()
    h.stream_steps = h.step
    serial = len(stream)
    for _ in range(4):
        now += timedelta(seconds=60)
        h.deliver(tick(serial), now)
        serial += 1
    return h, incidents


@settings(max_examples=examples(400), deadline=None)
@given(
    oom_streams, st.sets(st.integers(1, 600), max_size=40), st.sets(st.integers(1, 600), max_size=20), st.integers(1, 6)
)
def test_killed_at_any_moment_no_count_is_lost(
    stream: list[tuple[str, int]], kills: set[int], failures: set[int], claim_every: int
) -> None:
    h, incidents = run(stream, kills, failures, claim_every)
    written = h.written()
    assert sum(n.count for n in written.values() if n.type not in EPISODES) == incidents
    assert h.core.held == 0
    ids = [n.id for n in written.values()]
    assert len(set(ids)) == len(ids)
    # Each program's crash loops begin, then end, then begin again.
    in_turn = [written[name] for name in in_order(list(written))]
    for program in ("a", "b", "c"):
        phases = [n.crash_loop.phase for n in in_turn if n.crash_loop and n.process.name == program]
        assert phases == ["began", "ended"] * (len(phases) // 2) + ["began"] * (len(phases) % 2)


@settings(max_examples=examples(200), deadline=None)
@given(oom_streams, st.sets(st.integers(1, 600), max_size=40))
def test_kills_change_nothing_that_is_written(stream: list[tuple[str, int]], kills: set[int]) -> None:
    """Neither a fresh burst for each new Navi, nor a file twice: the
    notifications are those of a Navi that was never killed."""
    calm, _ = run(stream, set())
    killed, _ = run(stream, kills)
    assert {k: (n.type, n.count, n.id) for k, n in killed.written().items()} == {
        k: (n.type, n.count, n.id) for k, n in calm.written().items()
    }


def test_every_kill_point_of_a_storm_is_survived() -> None:
    """Deterministically, each single moment of a short storm."""
    stream = [("crash a", 1)] * 6 + [("tick", 5), ("crash b", 1), ("tick", 20)]
    calm, incidents = run(stream, set())
    assert calm.stream_steps > 40
    for point in range(1, calm.stream_steps + 1):
        h, _ = run(stream, {point})
        assert h.restarts == 1, point
        assert {k: n.count for k, n in h.written().items()} == {k: n.count for k, n in calm.written().items()}
        assert sum(n.count for n in h.written().values() if n.type not in EPISODES) == incidents


def test_a_state_restored_late_is_merged_not_overwritten() -> None:
    """The directory could not be opened at start: this Navi held counts of
    its own before it could read the last one's state."""
    last = core()
    for serial in range(1, 6):
        for a in death(last, serial, "web", T0):
            if isinstance(a, Publish):
                last.published(a.out.name)
    saved = last.state(T0)
    assert last.held == 2
    late = core()
    for serial in range(6, 10):  # 3 written, 1 held, before the state could be read
        for a in death(late, serial, "web", T0 + timedelta(seconds=1)):
            if isinstance(a, Publish):
                late.published(a.out.name)
    late.restore(decode(State, encode(saved)), T0 + timedelta(seconds=1))
    assert late.held == 3


# -- incidents Navi was not there to see ----------------------------------------------

CGROUP = "/sys/fs/cgroup/ctr"


def navi_core(baseline: int, state: Optional[State] = None) -> Core:
    """A Navi starting: it reads the counter, then the last one's state."""
    c = Core(ORIGIN, T0, baseline, LIMITS, own_pid=99, cgroup_path=CGROUP)
    c.first_log(LOG)
    if state is not None:
        c.restore(decode(State, encode(state)), T0)
    return c


LOG = (
    "2026-12-01 03:00:00,000 INFO spawned: 'navi' with pid 7\n"
    "2026-12-01 03:00:00,100 INFO spawned: 'web' with pid 8\n"
    "2026-12-01 03:00:05,000 WARN exited: web (terminated by SIGKILL; not expected)\n"
    "2026-12-01 03:00:05,100 WARN exited: navi (terminated by SIGKILL; not expected)\n"
    "2026-12-01 03:00:05,200 INFO spawned: 'navi' with pid 99\n"
)


def deliver(c: Core, e: Event, oom_kill: int) -> Optional[Notification]:
    readings = Readings(T0, log_read=True, memory_read=True, memory=snapshot(oom_kill))
    published = [a.out.notification for a in c.handle(e, readings) if isinstance(a, Publish)]
    return published[0] if published else None


def last_state(oom_kill: int) -> State:
    """What the Navi before saved, having read the counter at ``oom_kill``."""
    c = Core(ORIGIN, T0, oom_kill, LIMITS, cgroup_path=CGROUP)
    (save,) = [a for a in c.settle(T0) if isinstance(a, Save)]
    assert save.state.counter is not None and save.state.counter.oom_kill == oom_kill
    return save.state


def test_a_kill_counted_while_no_navi_ran_is_placed_on_the_death_delivered_later() -> None:
    """Navi stopped (or killed), web OOM-killed meanwhile: the new Navi's own
    first reading already counts the kill; the last one's does not."""
    c = navi_core(baseline=1, state=last_state(0))
    n = deliver(c, exited(10, "web", pid=8), oom_kill=1)
    assert n is not None and n.type == "oom" and n.process.name == "web"
    assert n.memory is not None and n.memory.oom_kill_rise == 1


def test_a_tick_delivered_before_the_death_leaves_the_gaps_kill_to_it() -> None:
    """Navi stopped, web OOM-killed, Navi started: supervisord's buffer holds
    a TICK before web's EXITED.  The kill waits for web's event."""
    c = Core(ORIGIN, T0, 1, LIMITS, own_pid=99, cgroup_path=CGROUP)
    c.first_log(
        "2026-12-01 03:00:00,000 INFO spawned: 'navi' with pid 7\n"
        "2026-12-01 03:00:00,100 INFO spawned: 'web' with pid 8\n"
        "2026-12-01 03:00:04,000 INFO stopped: navi (terminated by SIGTERM)\n"
        "2026-12-01 03:00:05,000 WARN exited: web (terminated by SIGKILL; not expected)\n"
        "2026-12-01 03:00:09,000 INFO spawned: 'navi' with pid 99\n"
    )
    c.restore(decode(State, encode(last_state(0))), T0)
    assert deliver(c, tick(9), oom_kill=1) is None
    n = deliver(c, exited(10, "web", pid=8), oom_kill=1)
    assert n is not None and n.type == "oom" and n.process.name == "web"


def test_without_a_last_reading_the_death_is_a_crash_that_says_the_baseline_is_new() -> None:
    c = navi_core(baseline=1)
    n = deliver(c, exited(10, "web", pid=8), oom_kill=1)
    assert n is not None and n.type == "crash" and n.exit.signal == "SIGKILL"
    assert any("no earlier reading of the oom_kill counter survived" in note for note in n.notes)


FIRST_LOG = (
    "2026-12-01 03:00:00,000 INFO spawned: 'web' with pid 8\n"
    "2026-12-01 03:00:00,100 INFO spawned: 'navi' with pid 99\n"
    "2026-12-01 03:00:05,000 WARN exited: web (terminated by SIGKILL; not expected)\n"
)


def first_navi(baseline: int, supervisord_age: timedelta) -> Core:
    """The first Navi of a supervisord, up late: web died before its first reading."""
    origin = replace(ORIGIN, supervisord_started=T0 - supervisord_age)
    c = Core(origin, T0, baseline, LIMITS, own_pid=99, cgroup_path=CGROUP)
    c.first_log(FIRST_LOG)
    return c


def test_the_first_navi_of_a_young_supervisord_takes_the_kills_counted_before_it() -> None:
    n = deliver(first_navi(1, timedelta(seconds=30)), exited(10, "web", pid=8), oom_kill=1)
    assert n is not None and n.type == "oom" and n.process.name == "web"
    assert any("before this container's first Navi read" in note for note in n.notes), n.notes


@given(age=st.integers(121, 10**6), baseline=st.integers(0, 5))
def test_kills_counted_long_before_the_first_navi_are_a_baseline(age: int, baseline: int) -> None:
    n = deliver(first_navi(baseline, timedelta(seconds=age)), exited(10, "web", pid=8), oom_kill=baseline)
    assert n is not None and n.type == "crash"


def test_a_respawned_navi_without_a_state_never_takes_the_counted_kills() -> None:
    """They may be kills the Navi before it reported already."""
    c = Core(ORIGIN, T0, 1, LIMITS, own_pid=99, cgroup_path=CGROUP)
    c.first_log("2026-12-01 03:00:00,000 INFO spawned: 'navi' with pid 7\n" + FIRST_LOG)
    n = deliver(c, exited(10, "web", pid=8), oom_kill=1)
    assert n is not None and n.type == "crash"


def test_a_saved_reading_wins_over_the_first_start() -> None:
    c = first_navi(2, timedelta(seconds=30))
    c.restore(decode(State, encode(last_state(1))), T0)
    n = deliver(c, exited(10, "web", pid=8), oom_kill=2)
    assert n is not None and n.type == "oom" and n.memory is not None and n.memory.oom_kill_rise == 1
    assert not any("first Navi" in note for note in n.notes)
    assert c.classifier.unclaimed_kills == 0


def test_navi_killed_by_the_oom_killer_is_reported_as_navi_not_the_program() -> None:
    """No program's death claims the kill: at the next TICK it is the dead Navi's."""
    c = navi_core(baseline=1, state=last_state(0))
    assert deliver(c, exited(10, "navi", pid=7), oom_kill=1) is None
    n = deliver(c, tick(11), oom_kill=1)
    assert n is not None and n.type == "oom" and (n.process.name, n.process.pid) == ("navi", 7)
    assert n.exit.signal == "SIGKILL" and n.count == 1
    assert n.summary.startswith("Navi itself (navi) was killed by the kernel's OOM killer")
    assert "not the customer's program" in n.notes[0]
    assert deliver(c, tick(12), oom_kill=1) is None  # once


def test_a_program_killed_with_navi_takes_the_kill_first() -> None:
    """Navi SIGKILLed by someone, web OOM-killed at the same time: the kill is web's."""
    c = navi_core(baseline=1, state=last_state(0))
    assert deliver(c, exited(10, "navi", pid=7), oom_kill=1) is None
    n = deliver(c, exited(11, "web", pid=8), oom_kill=1)
    assert n is not None and n.type == "oom" and n.process.name == "web"
    assert deliver(c, tick(12), oom_kill=1) is None


def test_navi_killed_otherwise_is_no_incident() -> None:
    c = navi_core(baseline=0, state=last_state(0))
    assert deliver(c, exited(10, "navi", pid=7), oom_kill=0) is None
    assert deliver(c, tick(11), oom_kill=0) is None


# -- what a notification tells ------------------------------------------------------


def words(*stderr: str, at_death: bool = True) -> Output:
    """A program's last words, as the shell reads them."""
    data = "".join(line + "\n" for line in stderr).encode()
    return lastwords.output(lastwords.Window("/mnt/log/web.err", data), lastwords.Window("/mnt/log/web.out"), at_death)


def published(actions: list[Action]) -> list[Notification]:
    return [a.out.notification for a in actions if isinstance(a, Publish)]


def last_words_death(c: Core, serial: int, program: str, now: datetime, out: Output) -> list[Notification]:
    log = f"{now:%Y-%m-%d %H:%M:%S},000 WARN exited: {program} (exit status 1; not expected)\n"
    readings = Readings(now, log_read=True, log=log, memory_read=True, memory=snapshot(), output_read=True, output=out)
    return published(c.handle(exited(serial, program), readings))


def test_a_death_carries_its_last_words_and_its_counts() -> None:
    c = core()
    (n,) = last_words_death(c, 1, "web", T0, words("loading", "Error: Cannot find module 'express'", ""))
    assert n.summary.endswith(" \u2014 Error: Cannot find module 'express'")
    assert n.output is not None and n.output.stderr.lines == ["loading", "Error: Cannot find module 'express'", ""]
    assert n.deaths is not None and (n.deaths.total, n.deaths.recent, n.deaths.crash_loop) == (1, 1, False)
    assert not n.notes
    (late,) = last_words_death(c, 2, "web", T0, words("Error", at_death=False))
    assert "read at its event, not at its death" in late.notes[-1]


def test_the_fifth_death_begins_a_crash_loop_said_beside_it_and_fatal_ends_it() -> None:
    c = looping()
    for serial in range(1, 5):
        last_words_death(c, serial, "web", T0 + timedelta(seconds=serial), words(f"boom {serial}"))
    crash, loop = last_words_death(c, 5, "web", T0 + timedelta(seconds=5), words("boom 5"))
    assert crash.type == "crash" and loop.type == "crash_loop"
    assert loop.id == crash.id + ":1"
    assert loop.crash_loop is not None and loop.crash_loop.phase == "began" and loop.crash_loop.deaths == 5
    assert loop.crash_loop.first_death == T0 + timedelta(seconds=1)
    assert loop.summary.startswith("web is in a crash loop: 5 deaths in 4 s") and loop.summary.endswith("boom 5")
    assert loop.exit.code == 1 and loop.output == crash.output
    fatal = event(6, "PROCESS_STATE_FATAL", "processname:web groupname:web from_state:BACKOFF")
    gave_up, over = published(c.handle(fatal, Readings(T0 + timedelta(seconds=6), memory_read=True, memory=snapshot())))
    assert gave_up.type == "fatal" and gave_up.output == crash.output and gave_up.summary.endswith("boom 5")
    assert over.crash_loop is not None and over.crash_loop.phase == "ended" and over.crash_loop.why_ended == "FATAL"


def test_a_crash_loop_ends_when_stopped_or_after_calm_at_a_tick() -> None:
    c = looping()
    for serial in range(1, 6):
        for program in ("a", "b"):
            last_words_death(c, serial * 2 + (program == "b"), program, T0, words("x"))
    stopped = event(20, "PROCESS_STATE_STOPPED", "processname:a groupname:a from_state:STOPPING pid:7")
    (over,) = published(c.handle(stopped, Readings(T0 + timedelta(seconds=1))))
    assert over.process.name == "a" and over.crash_loop is not None and over.crash_loop.why_ended == "stopped"
    quiet = Readings(T0 + timedelta(seconds=31), oom_kill_read=True, oom_kill=0, rss=(), pressure_read=True)
    (calm,) = published(c.handle(tick(21), quiet))
    assert calm.process.name == "b" and calm.crash_loop is not None and calm.crash_loop.phase == "ended"
    assert calm.deaths is not None and not calm.deaths.crash_loop


def pressed(share: float) -> PressureReading:
    limit = 64 << 20
    return PressureReading(limit, int(limit * share), 0, 0, None, None, None)


def test_pressure_begins_at_a_tick_with_who_held_the_memory_and_an_oom_names_the_episode() -> None:
    c = core()
    at_tick = Readings(T0, oom_kill_read=True, oom_kill=0, rss=(), pressure_read=True, pressure=pressed(0.8))
    assert c.needs(tick(1), at_tick) == Needs(memory=True)  # for the notification's figures
    (began,) = published(c.handle(tick(1), replace(at_tick, memory_read=True, memory=snapshot())))
    assert began.type == "pressure" and began.process.name is None and began.pressure is not None
    assert began.pressure.phase == "began" and began.summary.startswith("the container is near its memory limit")
    assert began.memory is not None and began.memory.limit_bytes == 64 << 20
    log = "2026-12-01 03:00:05,000 WARN exited: web (terminated by SIGKILL; not expected)\n"
    kill = Readings(T0 + timedelta(seconds=2), log_read=True, log=log, memory_read=True, memory=snapshot(1))
    (oom,) = published(c.handle(exited(2, "web"), kill))
    assert oom.type == "oom" and oom.pressure is not None and oom.pressure.episode == began.pressure.episode


def test_pressure_is_sampled_between_events_while_high_and_named_after_the_last_event() -> None:
    c = core()
    assert c.sample_in(T0) is None
    at_tick = Readings(T0, oom_kill_read=True, oom_kill=0, rss=(), pressure_read=True, pressure=pressed(0.7))
    assert not published(c.handle(tick(7), at_tick))
    assert c.sample_in(T0 + timedelta(milliseconds=400)) == timedelta(milliseconds=600)
    later = Readings(T0 + timedelta(seconds=1))
    assert c.sample_needs(later) == Needs(pressure=True)
    high = replace(later, pressure_read=True, pressure=pressed(0.9))
    assert c.sample_needs(high) == Needs(memory=True, rss=True)
    actions = c.sample(replace(high, memory_read=True, memory=snapshot(), rss=()))
    (began,) = published(actions)
    assert isinstance(actions[0], Save)  # saved before it is written, as any decision
    (name,) = [a.out.name for a in actions if isinstance(a, Publish)]
    assert name == "20261201T030000.000000Z-000000000007_1.json"
    assert began.pressure is not None and began.id == f"{began.pressure.episode}:began:1"
    assert began.pressure.episode == "h:boot:1:100:pressure:20261201T030001.000000Z"


def test_a_starting_program_is_watched_from_its_spawned_line() -> None:
    c = core()
    starting = event(1, "PROCESS_STATE_STARTING", "processname:web groupname:web from_state:BACKOFF tries:1")
    assert c.needs(starting, Readings(T0)) == Needs(log=True)
    log = "2026-12-01 03:00:00,000 INFO spawned: 'web' with pid 4242\n"
    actions = c.handle(starting, Readings(T0, log_read=True, log=log))
    assert actions[-1] == WatchPids(frozenset({4242}))
    backoff = event(2, "PROCESS_STATE_BACKOFF", "processname:web groupname:web from_state:STARTING")
    assert c.handle(backoff, Readings(T0, log_read=True, memory_read=True, memory=snapshot()))[-1] == WatchPids(
        frozenset()
    )


def test_a_restarted_navi_ends_the_episode_the_last_one_began_under_its_own_id() -> None:
    """Both samples follow the same last event, so their names may meet (the
    spool writes the second beside the first); their ids never do."""
    c = core()
    c.handle(tick(7), Readings(T0, oom_kill_read=True, oom_kill=0, rss=(), pressure_read=True, pressure=pressed(0.7)))
    high = Readings(T0 + timedelta(seconds=1), pressure_read=True, pressure=pressed(0.9), memory_read=True, rss=())
    (began,) = published(c.sample(high))
    again = core()
    again.restore(decode(State, encode(c.state(T0 + timedelta(seconds=1)))), T0 + timedelta(seconds=2))
    for s in (2, 40):
        low = Readings(T0 + timedelta(seconds=s), pressure_read=True, pressure=pressed(0.3), memory_read=True, rss=())
        ended = published(again.sample(low))
    (over,) = ended
    assert over.pressure is not None and began.pressure is not None
    assert over.pressure.phase == "ended" and over.pressure.episode == began.pressure.episode
    assert over.id != began.id


def test_the_tick_a_dead_navi_was_busy_with_comes_first_and_leaves_the_kill_to_its_death() -> None:
    """The OOM killer took Navi while it handled a TICK: supervisord hands
    that TICK to the next Navi before Navi's own EXITED (seen in the VM
    tier).  The kill waits for that death, which claims it."""
    c = Core(ORIGIN, T0, 1, LIMITS, own_pid=99, cgroup_path=CGROUP)
    c.first_log(
        "2026-12-01 03:00:00,000 INFO spawned: 'navi' with pid 7\n"
        "2026-12-01 03:00:05,100 WARN exited: navi (terminated by SIGKILL; not expected)\n"
        "2026-12-01 03:00:05,200 INFO spawned: 'navi' with pid 99\n"
    )
    c.restore(decode(State, encode(last_state(0))), T0)
    assert deliver(c, tick(10), oom_kill=1) is None  # the TICK it was busy with
    assert deliver(c, exited(11, "navi", pid=7), oom_kill=1) is None
    n = deliver(c, tick(12), oom_kill=1)
    assert n is not None and n.type == "oom" and (n.process.name, n.process.pid) == ("navi", 7)
