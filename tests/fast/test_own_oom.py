"""Navi's own OOM kill, told by the next Navi (classify.py): the kill waits
for the programs dying with it, and is Navi's at the first TICK it is due."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from navi.listener.classify import Classifier, Evidence
from navi.listener.protocol import Event
from tests.helpers import ORIGIN, event, exited, memory, record

NOW = datetime(2026, 12, 7, 2, 20, 25, tzinfo=timezone.utc)


def tick(serial: int, seconds: int, exits_waiting: int) -> tuple[Event, Evidence]:
    return (
        event("TICK_5", f"when:{1796610025 + seconds}", serial),
        Evidence(observed_at=NOW + timedelta(seconds=seconds), oom_kill=1, exits_waiting=exits_waiting),
    )


def test_a_tick_with_nothing_due_keeps_the_kill_for_navi() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    died = Evidence(observed_at=NOW, exit=record("terminated by SIGKILL", pid=41), oom_kill=1)
    assert c.decide(exited(name="navi", pid=41, serial=1), died) is None  # Navi's own death: held
    waiting = tick(2, 1, exits_waiting=1)  # another death is in the log, its event still to come
    assert c.decide(*waiting) is None
    due = tick(3, 6, exits_waiting=0)
    n = c.decide(*due)
    assert n is not None and n.type == "oom"
    assert n.process.name == "navi", n.summary


def test_navi_s_death_is_no_kill_of_its_own_once_the_programs_took_them() -> None:
    """The programs dying with Navi claimed every kill: a kill counted later
    is the container's, not the dead Navi's."""
    c = Classifier(ORIGIN, oom_baseline=0)
    died = Evidence(observed_at=NOW, exit=record("terminated by SIGKILL", pid=41), oom_kill=1)
    assert c.decide(exited(name="navi", pid=41, serial=1), died) is None
    web = Evidence(observed_at=NOW, exit=record("terminated by SIGKILL", pid=42), oom_kill=1, memory=memory(1))
    n = c.decide(exited(name="web", pid=42, serial=2), web)
    assert n is not None and n.type == "oom"
    assert c.decide(*tick(3, 5, exits_waiting=0)) is None  # nothing left: Navi's death was no OOM kill
    later = Evidence(observed_at=NOW + timedelta(seconds=20), oom_kill=2, memory=memory(2))
    container = c.decide(event("TICK_5", "when:1796610045", 4), later)
    assert container is not None
    assert container.process.name is None, container.summary
