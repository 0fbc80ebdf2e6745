"""``navi postmortem``'s judgement (pure): the notification for OOM kills
no Navi lived to report, from what outlives the container."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Optional

from navi.listener.cgroup import MemorySnapshot, PressureReading
from navi.listener.classify import Origin
from navi.listener.core import Counter, RunningProgram, State
from navi.listener.postmortem import Remains, judge
from navi.listener.pressure import Episode
from navi.listener.procs import RssSample

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
CGROUP = "/sys/fs/cgroup/kubepods/pod1/ctr"
ORIGIN = Origin("web-7f9c2", 1, T0, "boot:1:100", "navi", "navi", "2.0.0")


def memory(oom_kill: Optional[int]) -> MemorySnapshot:
    return MemorySnapshot(2, CGROUP, 192 << 20, 190 << 20, 192 << 20, oom_kill, ())


def state(oom_kill: int, kills: int = 0) -> State:
    return State(
        supervisord="boot:1:100",
        applied=41,
        counter=Counter(CGROUP, oom_kill, [T0] * kills),
        running=[RunningProgram("web", "web", 8), RunningProgram("worker", "worker", 9)],
        samples=[RssSample("web", "web", 8, 150 << 20, T0), RssSample("worker", "worker", 9, 20 << 20, T0)],
        origin=ORIGIN,
        stamp=T0,
    )


def test_a_group_kill_names_the_programs_and_sorts_after_navis_last_file() -> None:
    out = judge(Remains(state(0), memory(4), group_kills=1), "host", T0)
    assert out is not None
    n = out.notification
    assert (n.type, n.count, n.process.name) == ("oom", 1, None)
    assert n.summary.startswith(
        "the kernel's OOM killer killed the whole container at once (memory.oom.group): "
        "supervisord, Navi and web, worker"
    )
    assert n.memory is not None and n.memory.oom_kill_rise == 4 and n.memory.limit_bytes == 192 << 20
    assert [p.name for p in n.memory.programs] == ["web", "worker"]
    assert out.name == "20261201T030000.000000Z-000000000042.json"  # after event 41, Navi's last
    assert n.id == "web-7f9c2:boot:1:100:postmortem:4"  # the same however often it is run


def test_nothing_when_navi_reported_every_kill() -> None:
    assert judge(Remains(state(3), memory(3), group_kills=0), "host", T0) is None


def test_kills_navi_counted_but_had_not_placed_are_reported_on_v1_too() -> None:
    out = judge(Remains(state(3, kills=1), memory(3), group_kills=None), "host", T0)
    assert out is not None and out.notification.count == 1
    assert "did not live to report" in out.notification.summary


def test_without_a_state_every_kill_counted_is_reported_and_that_is_said() -> None:
    out = judge(Remains(None, memory(2), group_kills=None), "host", T0)
    assert out is not None and out.notification.count == 2
    assert any("Navi left no state" in note for note in out.notification.notes)


def test_an_unreadable_counter_reports_nothing() -> None:
    assert judge(Remains(state(0), memory(None), group_kills=None), "host", T0) is None


def test_the_kill_names_the_pressure_episode_navi_saw_begin() -> None:
    episode = Episode("web-7f9c2:boot:1:100:pressure:20261201T025950.000000Z", T0, 180 << 20, 10, None)
    figures = PressureReading(192 << 20, 30 << 20, 0, 52, None, None, None)
    out = judge(Remains(replace(state(0), pressure=episode), memory(1), 1, figures), "host", T0)
    assert out is not None and out.notification.pressure is not None
    p = out.notification.pressure
    assert (p.episode, p.began, p.peak_working_set_bytes, p.limit_hits) == (episode.id, T0, 180 << 20, 42)
    without = judge(Remains(state(0), memory(1), 1, figures), "host", T0)
    assert without is not None and without.notification.pressure is None
