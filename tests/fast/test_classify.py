from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from navi.listener.classify import Classifier, Evidence, Incident, Origin, event_id, triage
from navi.listener.procs import RssSample
from navi.listener.protocol import Event
from tests.helpers import ORIGIN, event, exited, fatal, memory, record

NOW = datetime(2026, 11, 24, 23, 5, 1, 250000, tzinfo=timezone.utc)


def backoff(name: str = "web", serial: int = 1) -> Event:
    return event("PROCESS_STATE_BACKOFF", f"processname:{name} groupname:{name} from_state:STARTING tries:1", serial)


def evidence(how: Optional[str] = "exit status 3", oom_kill: Optional[int] = 0) -> Evidence:
    return Evidence(
        observed_at=NOW,
        exit=record(how) if how else None,
        exit_problem=None if how else "supervisord has no main log file",
        oom_kill=oom_kill,
        memory=memory(oom_kill),
    )


@pytest.mark.parametrize(
    ("ev", "incident"),
    [
        (exited(expected=0), Incident.EXIT),
        (exited(expected=1), None),
        (backoff(), Incident.EXIT),
        (fatal(), Incident.FATAL),
        # Navi's own pool: only a previous Navi's death is looked at (an OOM kill's victim?)
        (exited(name="navi"), Incident.OWN_DEATH),
        (exited(name="navi", expected=1), None),
        (event("PROCESS_STATE_RUNNING", "processname:navi groupname:navi from_state:STARTING pid:4"), None),
        (event("PROCESS_STATE_STOPPED", "processname:web groupname:web from_state:STOPPING pid:4"), None),
        (event("PROCESS_STATE_RUNNING", "processname:web groupname:web from_state:STARTING pid:4"), None),
        (event("TICK_5", "when:1"), None),
        (event("SUPERVISOR_STATE_CHANGE_RUNNING", ""), None),
    ],
)
def test_triage(ev: Event, incident: Optional[Incident]) -> None:
    assert triage(ev, ORIGIN) is incident


def test_crash_with_exit_code() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(exited(), evidence("exit status 3"))
    assert n is not None
    assert n.type == "crash"
    assert (n.exit.code, n.exit.signal, n.exit.signal_number, n.exit.core_dumped) == (3, None, None, False)
    assert n.exit.during_startup is False
    assert (n.process.name, n.process.group, n.process.pid) == ("web", "web", 42)
    assert n.summary == "web crashed: exit status 3"
    assert n.memory is not None and n.memory.oom_kill_rise == 0
    assert n.notes == []


def test_sigkill_without_counter_rise_is_a_crash() -> None:
    n = Classifier(ORIGIN, oom_baseline=2).decide(exited(), evidence("terminated by SIGKILL", oom_kill=2))
    assert n is not None and n.type == "crash"
    assert (n.exit.signal, n.exit.signal_number, n.exit.code) == ("SIGKILL", 9, None)


def test_exit_137_without_counter_rise_is_a_crash() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(exited(), evidence("exit status 137", oom_kill=0))
    assert n is not None and n.type == "crash" and n.exit.code == 137


def test_counter_rise_is_an_oom_kill() -> None:
    c = Classifier(ORIGIN, oom_baseline=1)
    n = c.decide(exited(), evidence("terminated by SIGKILL", oom_kill=2))
    assert n is not None and n.type == "oom"
    assert n.memory is not None
    assert (n.memory.oom_kill, n.memory.oom_kill_rise, n.memory.limit_bytes) == (2, 1, 64 << 20)
    assert "OOM killer" in n.summary and "64.0 MiB" in n.summary
    # The next death without a new kill is a crash again.
    again = c.decide(exited(serial=2), evidence("terminated by SIGKILL", oom_kill=2))
    assert again is not None and again.type == "crash"


def test_two_kills_are_claimed_by_two_deaths() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    first = c.decide(exited(serial=1), evidence("terminated by SIGKILL", oom_kill=2))
    second = c.decide(exited(serial=2), evidence("exit status 137", oom_kill=2))
    assert first is not None and second is not None
    assert (first.type, second.type) == ("oom", "oom")
    assert c.unclaimed_kills == 0


def test_two_sigkills_and_one_kill_is_said_to_be_ambiguous() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    ev = Evidence(
        observed_at=NOW, exit=record("terminated by SIGKILL"), oom_kill=1, memory=memory(1), sigkills_waiting=1
    )
    first = c.decide(exited(serial=1), ev)
    assert first is not None and first.type == "oom"
    assert any("does not say which process it killed" in note for note in first.notes)
    second = c.decide(exited(serial=2), evidence("terminated by SIGKILL", oom_kill=1))
    assert second is not None and second.type == "crash"


def test_a_childs_kill_is_the_containers_at_once() -> None:
    """A child killed while its program lives on: the TICK that counts the
    kill finds no death in the log to claim it, and says so for the container,
    naming who held the memory; a kill -9 later is not blamed on the OOM killer."""
    c = Classifier(ORIGIN, oom_baseline=0)
    samples = (
        RssSample("web", "web", 40, 150 << 20, NOW - timedelta(seconds=3)),
        RssSample("worker", "worker", 41, 20 << 20, NOW - timedelta(seconds=3)),
    )
    tick = event("TICK_5", "when:1", serial=7)
    n = c.decide(tick, Evidence(observed_at=NOW, oom_kill=1, memory=memory(1), exits_waiting=0, rss=samples))
    assert n is not None and n.type == "oom" and n.count == 1 and n.process.name is None
    assert n.memory is not None and n.memory.victim is None
    assert [(p.name, p.rss_bytes) for p in n.memory.programs] == [("web", 150 << 20), ("worker", 20 << 20)]
    assert "no supervised program died" in n.summary and "largest program: web (150.0 MiB)" in n.summary
    assert n.header["eventname"] == "TICK_5"
    later = Evidence(
        observed_at=NOW + timedelta(minutes=3), exit=record("terminated by SIGKILL"), oom_kill=1, memory=memory(1)
    )
    crash = c.decide(exited(), later)
    assert crash is not None and crash.type == "crash"


def test_an_oom_names_the_victims_last_sample() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    samples = (RssSample("web", "web", 42, 60 << 20, NOW), RssSample("db", "db", 43, 2 << 20, NOW))
    ev = Evidence(observed_at=NOW, exit=record("terminated by SIGKILL"), oom_kill=1, memory=memory(1), rss=samples)
    n = c.decide(exited(), ev)
    assert n is not None and n.type == "oom" and n.memory is not None
    assert n.memory.victim is not None and (n.memory.victim.name, n.memory.victim.rss_bytes) == ("web", 60 << 20)


def test_another_signal_never_claims_a_kill() -> None:
    # A segfault handled just after someone else's OOM kill was counted.
    c = Classifier(ORIGIN, oom_baseline=0)
    segv = c.decide(exited(serial=1), evidence("terminated by SIGSEGV", oom_kill=1))
    assert segv is not None and segv.type == "crash"
    assert any("SIGSEGV is not the OOM killer's signal" in note for note in segv.notes)
    victim = c.decide(exited(serial=2), evidence("terminated by SIGKILL", oom_kill=1))
    assert victim is not None and victim.type == "oom"
    assert victim.memory is not None and victim.memory.oom_kill_rise == 0


def test_a_plain_exit_leaves_the_kill_to_a_waiting_sigkilled_program() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    ev = Evidence(observed_at=NOW, exit=record("exit status 3"), oom_kill=1, memory=memory(1), sigkills_waiting=1)
    n = c.decide(exited(serial=1), ev)
    assert n is not None and n.type == "crash"
    assert any("left to it" in note for note in n.notes)
    assert c.unclaimed_kills == 1


def test_kills_no_death_claims_go_to_the_container_on_a_tick() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    segv = c.decide(exited(serial=1), evidence("terminated by SIGSEGV", oom_kill=1))
    assert segv is not None and segv.type == "crash" and c.unclaimed_kills == 1
    tick = event("TICK_5", "when:1", serial=2)
    # A death is still in the log, to come: it may claim the kill.
    assert c.decide(tick, Evidence(observed_at=NOW, oom_kill=1, memory=memory(1), exits_waiting=1)) is None
    later = NOW + timedelta(seconds=11)
    n = c.decide(tick, Evidence(observed_at=later, oom_kill=1, memory=memory(1), exits_waiting=1))
    assert n is not None and n.type == "oom" and n.count == 1 and c.unclaimed_kills == 0
    assert (n.process.name, n.process.group, n.process.pid) == (None, None, None)
    assert n.exit.unavailable and "no supervised program exited" in n.exit.unavailable


def test_oom_of_a_child_is_said_so() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(exited(), evidence("exit status 1", oom_kill=1))
    assert n is not None and n.type == "oom" and n.exit.code == 1
    assert "child" in n.summary


def test_backoff_is_a_death_during_startup() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(backoff(), evidence("exit status 1"))
    assert n is not None and n.type == "crash" and n.exit.during_startup
    assert n.summary == "web crashed during startup: exit status 1"
    assert n.process.pid == 42  # from the log's spawned line: BACKOFF carries none


def test_fatal_carries_the_last_exit() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    c.decide(backoff(serial=1), evidence("exit status 1"))
    c.decide(backoff(serial=2), evidence("exit status 2"))
    n = c.decide(fatal(), Evidence(observed_at=NOW, oom_kill=0, memory=memory(0)))
    assert n is not None and n.type == "fatal"
    assert n.exit.code == 2 and n.exit.during_startup
    assert n.summary == "supervisord gave up restarting web (FATAL); its last exit: exit status 2"


def test_fatal_without_earlier_exit() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(fatal(), Evidence(observed_at=NOW, oom_kill=0, memory=memory(0)))
    assert n is not None and n.type == "fatal" and n.exit.code is None
    assert n.exit.unavailable and "FATAL" in n.exit.unavailable
    assert n.summary == "supervisord gave up restarting web (FATAL)"


def test_unknown_exit_status_is_null_with_reason() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(exited(), evidence(how=None))
    assert n is not None
    assert (n.exit.code, n.exit.signal, n.exit.core_dumped) == (None, None, None)
    assert n.exit.unavailable == "supervisord has no main log file"
    assert any("exit status unknown" in note for note in n.notes)


@pytest.mark.parametrize(
    ("baseline", "counter", "note"),
    [
        (0, None, "could not be read"),
        (None, 1, "no earlier oom_kill reading"),
        (5, 1, "went back from 5 to 1"),
    ],
)
def test_no_counter_means_crash_with_evidence_never_a_guess(
    baseline: Optional[int], counter: Optional[int], note: str
) -> None:
    c = Classifier(ORIGIN, oom_baseline=baseline)
    n = c.decide(exited(), evidence("terminated by SIGKILL", oom_kill=counter))
    assert n is not None and n.type == "crash"
    assert n.memory is not None and n.memory.oom_kill_rise is None
    assert any(note in x for x in n.notes)
    if counter is not None:
        assert c.oom_baseline == counter  # compared from here on


def test_no_memory_cgroup() -> None:
    ev = Evidence(
        observed_at=NOW,
        exit=record("terminated by SIGKILL"),
        memory=None,
        memory_problem="cannot read /proc/self/cgroup: Permission denied",
    )
    n = Classifier(ORIGIN, oom_baseline=None).decide(exited(), ev)
    assert n is not None and n.type == "crash" and n.memory is None
    assert any("Permission denied" in x and "cannot be told" in x for x in n.notes)


def test_no_notification_for_other_events() -> None:
    c = Classifier(ORIGIN, oom_baseline=0)
    assert c.decide(exited(expected=1), evidence()) is None
    assert c.decide(exited(name="navi"), evidence()) is None


def test_ids_are_stable_and_distinct() -> None:
    assert event_id(ORIGIN, exited(serial=5)) == event_id(ORIGIN, exited(serial=5))
    assert event_id(ORIGIN, exited(serial=5)) != event_id(ORIGIN, exited(serial=6))
    other = Origin(**{**ORIGIN.__dict__, "supervisord_key": "boot:7:12346"})
    assert event_id(ORIGIN, exited(serial=5)) != event_id(other, exited(serial=5))


def test_json_has_the_required_keys() -> None:
    n = Classifier(ORIGIN, oom_baseline=0).decide(exited(name="wëb"), evidence("terminated by SIGSEGV (core dumped)"))
    assert n is not None
    doc = json.loads(n.to_json())
    assert doc["schema"] == 1
    assert doc["type"] == "crash"
    assert doc["time"] == "2026-11-24T23:05:01.250000Z"
    assert doc["process"] == {"name": "wëb", "group": "wëb", "pid": 42}
    assert doc["exit"]["signal"] == "SIGSEGV" and doc["exit"]["signal_number"] == 11
    assert doc["exit"]["core_dumped"] is True and doc["exit"]["code"] is None
    # A consumer of the original Navi still finds these, where it looked.
    assert doc["Header"]["eventname"] == "PROCESS_STATE_EXITED"
    assert doc["Metadata"]["processname"] == "wëb" and doc["Metadata"]["pid"] == "42"
    assert set(doc) >= {"schema", "id", "type", "time", "process", "exit", "Header", "Metadata"}


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["terminated by SIGKILL", "exit status 137", "terminated by SIGSEGV", "exit status 3"]),
        ),
        max_size=30,
    )
)
def test_each_kill_is_claimed_at_most_once_and_never_by_another_signal(deaths: list[tuple[int, str]]) -> None:
    c = Classifier(ORIGIN, oom_baseline=10)
    counter, ooms = 10, 0
    for serial, (rise, how) in enumerate(deaths):
        counter += rise
        n = c.decide(exited(serial=serial), evidence(how, oom_kill=counter))
        assert n is not None and n.memory is not None and n.memory.oom_kill_rise == rise
        if how == "terminated by SIGSEGV":
            assert n.type == "crash"
        if how in ("terminated by SIGKILL", "exit status 137") and c.unclaimed_kills + (n.type == "oom") > 0:
            assert n.type == "oom"  # a SIGKILL death claims a pending kill
        ooms += n.type == "oom"
    assert ooms + c.unclaimed_kills == counter - 10
