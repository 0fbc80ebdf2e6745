"""Memory pressure episodes (navi/listener/pressure.py): early enough to
matter, no alarm for a container that steadily runs at 70%."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener.cgroup import PressureReading
from navi.listener.pressure import PressureLimits, PressureWatch, working_set
from tests.helpers import examples

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
LIMIT = 192 << 20
TICK = timedelta(seconds=5)


def reading(share: float, cache: float = 0.0, hits: int = 0, throttled: Optional[int] = None) -> PressureReading:
    """The container at ``share`` of its limit in working set, plus ``cache``
    of it in page cache the kernel can drop."""
    usage = int(LIMIT * (share + cache))
    return PressureReading(LIMIT, usage, int(LIMIT * cache), hits, throttled, None, None)


def play(shares: list[float]) -> list[tuple[datetime, str]]:
    """Sample as the listener does: at each TICK_5, and every `fast` while
    the core asks; returns when episodes began and ended."""
    w = PressureWatch(PressureLimits())
    changes: list[tuple[datetime, str]] = []
    now, i = T0, 0
    while i < len(shares):
        change = w.observe(reading(shares[i]), now, f"episode@{now:%H%M%S}")
        if change is not None:
            changes.append((now, change.phase))
        due = w.sample_in(now)  # right after a reading: a whole `fast` away
        now += TICK if due is None else min(due, TICK)
        i = int((now - T0).total_seconds())
    return changes


def test_a_steady_70_percent_is_no_alarm_even_with_its_cache_at_the_limit() -> None:
    w = PressureWatch()
    for s in range(600):
        wobble = 0.03 if s % 7 == 0 else 0.0
        # Usage, with the page cache, sits at the limit: never the sign.
        assert w.observe(reading(0.70 + wobble, cache=0.29, hits=s * 40), T0 + timedelta(seconds=s), "e") is None
    assert w.episode is None


def test_a_climb_from_half_to_over_the_limit_in_30_s_is_told_10_s_before() -> None:
    """The issue's ramp: 50% to 100% of the limit in 30 s (the kill at 100%)."""
    ramp = [0.5 + 0.5 * s / 30 for s in range(31)]
    (began, phase), *_ = play(ramp)
    assert phase == "began"
    assert (T0 + timedelta(seconds=30)) - began >= timedelta(seconds=10)


def test_an_episode_ends_after_calm_below_the_end_share() -> None:
    # Below 65% for 20 s, back above it (not above 75%: no new episode), then down.
    shares = [0.8] * 20 + [0.7] * 60 + [0.6] * 20 + [0.68] * 40 + [0.3] * 100
    changes = play(shares)
    assert [phase for _, phase in changes] == ["began", "ended"]
    calm_from = T0 + timedelta(seconds=140)
    assert timedelta(seconds=30) <= changes[1][0] - calm_from <= timedelta(seconds=31)


def test_the_evidence_of_an_episode() -> None:
    w = PressureWatch()
    began = w.observe(reading(0.8, cache=0.1, hits=100, throttled=3), T0, "e1")
    assert began is not None and began.episode == "e1" and began.began == T0
    assert began.working_set_bytes == working_set(reading(0.8, cache=0.1)) and began.limit_bytes == LIMIT
    assert (began.limit_hits, began.throttled) == (0, 0)
    w.observe(reading(0.95, hits=150, throttled=9), T0 + timedelta(seconds=1), "e2")
    now = w.info()
    assert now.episode == "e1" and now.peak_working_set_bytes == int(LIMIT * 0.95)
    assert (now.limit_hits, now.throttled) == (50, 6)


def test_throttling_over_memory_high_begins_an_episode() -> None:
    w = PressureWatch()
    assert w.observe(reading(0.3, throttled=10), T0, "e") is None  # the first reading: no rise yet
    began = w.observe(reading(0.3, throttled=12), T0 + TICK, "e")
    assert began is not None and began.phase == "began"


def test_sampling_is_faster_only_while_the_working_set_is_high() -> None:
    w = PressureWatch()
    assert w.sample_in(T0) is None
    w.observe(reading(0.5), T0, "e")
    assert w.sample_in(T0) is None
    w.observe(reading(0.66), T0, "e")
    assert w.sample_in(T0 + timedelta(milliseconds=300)) == timedelta(milliseconds=700)
    assert w.sample_in(T0 + timedelta(seconds=3)) == timedelta(0)


def test_no_limit_or_no_reading_is_no_pressure() -> None:
    w = PressureWatch()
    assert w.observe(PressureReading(None, LIMIT, 0, None, None, None, None), T0, "e") is None
    assert w.observe(PressureReading(LIMIT, None, None, None, None, None, None), T0, "e") is None
    assert w.sample_in(T0) is None


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.floats(0, 1.2), min_size=1, max_size=300))
def test_episodes_begin_and_end_in_turn_at_the_thresholds(shares: list[float]) -> None:
    w = PressureWatch()
    phases = []
    low_since: Optional[datetime] = None
    for s, share in enumerate(shares):
        now = T0 + timedelta(seconds=s)
        lasting = w.episode is not None
        change = w.observe(reading(share), now, f"e{s}")
        low_since = (low_since or now) if share < 0.65 else None
        if change is None:
            continue
        phases.append(change.phase)
        if change.phase == "began":
            assert not lasting and share >= 0.75
        else:
            assert lasting and low_since is not None and now - low_since >= timedelta(seconds=30)
    assert phases == ["began", "ended"] * (len(phases) // 2) + ["began"] * (len(phases) % 2)
