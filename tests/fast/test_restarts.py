"""Each program's deaths and its crash loops (navi/listener/restarts.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener.core import State
from navi.listener.restarts import LoopLimits, Restarts
from navi.notification import decode, encode
from tests.helpers import examples

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
LIMITS = LoopLimits(deaths=5, window=timedelta(minutes=10), calm=timedelta(minutes=10))


def test_five_deaths_in_ten_minutes_begin_a_loop_once() -> None:
    r = Restarts(LIMITS)
    began = [r.death("web:web", T0 + timedelta(minutes=2 * i)) for i in range(7)]
    assert [b is not None for b in began] == [False] * 4 + [True, False, False]
    loop = began[4]
    assert loop is not None and loop.phase == "began" and loop.deaths == 5
    assert (loop.first_death, loop.last_death) == (T0, T0 + timedelta(minutes=8))
    counts = r.deaths("web:web", T0 + timedelta(minutes=12))
    assert (counts.total, counts.recent, counts.crash_loop) == (7, 6, True)  # the first is out of the window


def test_slow_deaths_never_loop_and_recent_counts_the_window() -> None:
    r = Restarts(LIMITS)
    assert all(r.death("web:web", T0 + timedelta(minutes=3 * i)) is None for i in range(20))
    counts = r.deaths("web:web", T0 + timedelta(minutes=57))
    assert (counts.total, counts.recent, counts.window_seconds) == (20, 4, 600)
    assert r.deaths("other:other", T0).total == 0


def test_a_loop_ends_after_calm_or_when_the_program_is_no_longer_run() -> None:
    r = Restarts(LIMITS)
    for i in range(5):
        r.death("a:a", T0 + timedelta(seconds=i))
        r.death("b:b", T0 + timedelta(seconds=i))
    assert r.calmed(T0 + timedelta(minutes=9)) == []
    assert r.ended("b:b", T0 + timedelta(minutes=1), "stopped") is not None
    assert r.ended("b:b", T0 + timedelta(minutes=1), "stopped") is None  # once
    [(key, loop)] = r.calmed(T0 + timedelta(minutes=10, seconds=5))
    assert key == "a:a" and loop.phase == "ended" and loop.ended is not None
    assert loop.why_ended == "no death for 600 s" and loop.deaths == 5
    assert r.calmed(T0 + timedelta(hours=1)) == [] and not r.deaths("a:a", T0 + timedelta(hours=1)).crash_loop


def test_counts_and_loops_survive_a_save_and_restore() -> None:
    r = Restarts(LIMITS)
    for i in range(6):
        r.death("web:web", T0 + timedelta(seconds=i))
    saved = decode(State, encode(State(supervisord="boot:1:100", applied=6, deaths=r.save())))
    again = Restarts(LIMITS)
    again.restore(saved.deaths)
    assert again.death("web:web", T0 + timedelta(seconds=7)) is None  # still in the loop: not begun again
    counts = again.deaths("web:web", T0 + timedelta(seconds=7))
    assert (counts.total, counts.recent, counts.crash_loop) == (7, 7, True)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "restart", "tick", "stop a"]), st.integers(0, 400)), max_size=120))
def test_loops_alternate_and_totals_count_every_death(steps: list[tuple[str, int]]) -> None:
    """Whatever the deaths' timing: a program's loop begins and ends in turn,
    its total is every death, its recent count those in the window, and a
    save and restore at any point changes nothing."""
    r = Restarts(LIMITS)
    now = T0
    phases: dict[str, list[str]] = {"a:a": [], "b:b": []}
    deaths: dict[str, list[datetime]] = {"a:a": [], "b:b": []}
    for what, gap in steps:
        now += timedelta(seconds=gap)
        if what in ("a", "b"):
            key = f"{what}:{what}"
            deaths[key].append(now)
            loop = r.death(key, now)
            if loop:
                phases[key].append(loop.phase)
        elif what == "tick":
            for key, loop in r.calmed(now):
                phases[key].append(loop.phase)
        elif what == "stop a":
            loop = r.ended("a:a", now, "stopped")
            if loop:
                phases["a:a"].append(loop.phase)
        else:  # a restart of Navi
            again = Restarts(LIMITS)
            again.restore(r.save())
            r = again
    for key, seen in phases.items():
        assert seen == ["began", "ended"] * (len(seen) // 2) + ["began"] * (len(seen) % 2)
        counts = r.deaths(key, now)
        assert counts.total == len(deaths[key])
        # Whole seconds apart, each burst is deaths at one moment: exact.
        assert counts.recent == sum(1 for t in deaths[key] if now - t <= LIMITS.window)
        assert counts.crash_loop == (len(seen) % 2 == 1)


def test_a_storm_is_counted_exactly_and_kept_small() -> None:
    """5,000 deaths within 50 s: every one counted in the window, kept as
    one entry per second; an hour later none is recent, and all are total."""
    r = Restarts(LIMITS)
    for i in range(5000):
        r.death("web:web", T0 + timedelta(milliseconds=10 * i))
    counts = r.deaths("web:web", T0 + timedelta(seconds=50))
    assert (counts.total, counts.recent) == (5000, 5000)
    [saved] = r.save()
    assert len(saved.recent) == 50 and saved.recent[0].first == T0
    later = r.deaths("web:web", T0 + timedelta(hours=1))
    assert (later.total, later.recent) == (5000, 0)


def test_more_bursts_than_kept_merge_the_oldest_and_lose_no_count() -> None:
    r = Restarts(LoopLimits(deaths=5, window=timedelta(hours=2), calm=timedelta(minutes=10)))
    for i in range(1500):  # one death every 2 s for 50 minutes: 1,500 bursts
        r.death("web:web", T0 + timedelta(seconds=2 * i))
    [saved] = r.save()
    assert len(saved.recent) == 1000 and saved.recent[0].first == T0
    assert r.deaths("web:web", T0 + timedelta(hours=1)).recent == 1500
