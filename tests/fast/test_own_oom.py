"""Navi's own OOM kill, told by the next Navi (classify.py): the kill waits
for the programs dying with it, and is Navi's at the first TICK it is due."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from navi.listener.classify import Classifier, Evidence
from navi.listener.protocol import Event
from tests.helpers import ORIGIN, event, exited, record

NOW = datetime(2026, 12, 7, 2, 20, 25, tzinfo=timezone.utc)


def tick(serial: int, seconds: int, exits_waiting: int) -> tuple[Event, Evidence]:
    return (
        event("TICK_5", f"when:{1796610025 + seconds}", serial),
        Evidence(observed_at=NOW + timedelta(seconds=seconds), oom_kill=1, exits_waiting=exits_waiting),
    )


@pytest.mark.xfail(
    strict=True,
    reason="Classifier._unclaimed takes _own_killed at every TICK, before it knows a kill is due: a TICK "
    "with an exit still waiting in the log (nothing due) drops it, and the kill is reported later as the "
    "container's ('no supervised program died').  Seen in the VM tier (test_unseen, Navi itself killed).",
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
