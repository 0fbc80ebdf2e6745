from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from navi.classify import Classifier, Evidence
from navi.coalesce import Coalescer, RateLimit, SavedState
from navi.notification import Notification, decode, encode
from tests.test_classify import ORIGIN, exited, fatal, memory, record

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)
LIMIT = RateLimit(burst=3, refill=timedelta(seconds=60), quiet=timedelta(seconds=10))


def crash(serial: int, at: datetime, name: str = "web", how: str = "exit status 3") -> Notification:
    n = Classifier(ORIGIN, oom_baseline=0).decide(
        exited(name=name, serial=serial), Evidence(observed_at=at, exit=record(how), oom_kill=0, memory=memory(0))
    )
    assert n is not None
    return n


def test_a_burst_is_written_then_held() -> None:
    c = Coalescer(LIMIT)
    out = [c.admit(crash(i, T0 + timedelta(seconds=i)), T0 + timedelta(seconds=i)) for i in range(10)]
    assert [n is not None for n in out] == [True] * 3 + [False] * 7
    assert c.held == 7


def test_held_incidents_are_folded_into_the_next_written() -> None:
    c = Coalescer(LIMIT)
    for i in range(10):  # 3 written, 7 held
        c.admit(crash(i, T0 + timedelta(seconds=i)), T0 + timedelta(seconds=i))
    later = T0 + timedelta(seconds=70)  # one token back
    n = c.admit(crash(10, later), later)
    assert n is not None and n.count == 8 and c.held == 0
    assert n.coalesced is not None
    assert (n.coalesced.first, n.coalesced.last, n.coalesced.reason) == (T0 + timedelta(seconds=3), later, "rate limit")
    assert n.summary.startswith("web crashed: exit status 3 (8 times since 03:00:03 UTC; held back by rate limit)")


def test_the_end_of_a_storm_is_flushed_on_a_tick() -> None:
    c = Coalescer(LIMIT)
    for i in range(5):
        c.admit(crash(i, T0), T0)
    assert c.due(T0 + timedelta(seconds=5)) == []  # no token yet, and still storming
    (n,) = c.due(T0 + timedelta(seconds=10))  # quiet for 10 s: the storm is over
    assert n.count == 2 and n.header["serial"] == "4" and c.held == 0
    assert c.due(T0 + timedelta(seconds=200)) == []


def test_a_long_storm_writes_one_notification_per_refill() -> None:
    c = Coalescer(LIMIT)
    now, written = T0, []
    for serial in range(600):  # a crash every second for ten minutes
        now += timedelta(seconds=1)
        admitted = c.admit(crash(serial, now), now)
        written += [admitted] if admitted else []
        if serial % 5 == 0:
            written += c.due(now)
    assert 3 + 9 <= len(written) <= 3 + 11  # the burst, then one a minute
    now += timedelta(seconds=10)
    written += c.due(now)
    assert sum(n.count for n in written) == 600 and c.held == 0


def test_programs_and_types_are_limited_separately_and_fatal_never() -> None:
    c = Coalescer(RateLimit(burst=1, refill=timedelta(hours=1)))
    assert c.admit(crash(1, T0, name="a"), T0) is not None
    assert c.admit(crash(2, T0, name="b"), T0) is not None
    assert c.admit(crash(3, T0, name="a"), T0) is None
    oom = replace(crash(4, T0, name="a"), type="oom")
    assert c.admit(oom, T0) is not None
    for serial in (5, 6):
        f = Classifier(ORIGIN, oom_baseline=0).decide(fatal(name="a", serial=serial), Evidence(observed_at=T0))
        assert f is not None and c.admit(f, T0) is not None


def test_a_failed_write_is_retried_with_its_count() -> None:
    c = Coalescer(LIMIT)
    first = c.admit(crash(1, T0), T0)
    assert first is not None
    c.failed(first, "disk full", T0)
    assert c.held == 1
    (again,) = c.due(T0 + timedelta(seconds=5))
    assert again.count == 1 and again.id == first.id  # the same notification, not a summary
    c.failed(again, "disk full", T0 + timedelta(seconds=5))
    both = c.admit(crash(2, T0 + timedelta(seconds=6)), T0 + timedelta(seconds=6))  # the third token
    assert both is not None and both.count == 2 and both.header["serial"] == "2"
    assert both.coalesced is not None and both.coalesced.reason == "disk full"
    assert c.held == 0 and c.due(T0 + timedelta(seconds=10)) == []


ops = st.lists(
    st.tuples(
        st.sampled_from(["crash a", "crash b", "fatal a", "tick", "fail"]),
        st.integers(0, 120),  # seconds since the previous operation
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(ops)
def test_no_incident_is_lost_and_the_storm_ends_flushed(operations: list[tuple[str, int]]) -> None:
    c = Coalescer(LIMIT)
    now, incidents, written, serial = T0, 0, 0, 0
    last: Notification | None = None
    for op, gap in operations:
        now += timedelta(seconds=gap)
        serial += 1
        if op == "tick":
            out = c.due(now)
        elif op == "fail":
            if last is not None:  # the last write failed after all
                written -= last.count
                c.failed(last, "disk full", now)
                last = None
            continue
        else:
            incidents += 1
            kind, name = op.split()
            if kind == "fatal":
                n = Classifier(ORIGIN, oom_baseline=0).decide(
                    fatal(name=name, serial=serial), Evidence(observed_at=now)
                )
                assert n is not None
            else:
                n = crash(serial, now, name=name)
            admitted = c.admit(n, now)
            out = [admitted] if admitted else []
        for n in out:
            written += n.count
            last = n
        assert written + c.held == incidents
    # Quiet: a tick per refill period empties what is held.
    for _ in range(3):
        now += LIMIT.refill
        written += sum(n.count for n in c.due(now))
    assert c.held == 0 and written == incidents


def test_what_is_held_survives_a_restart() -> None:
    c = Coalescer(LIMIT)
    for i in range(8):
        c.admit(crash(i, T0 + timedelta(seconds=i)), T0 + timedelta(seconds=i))
    saved = encode(c.save())
    again = Coalescer(LIMIT)
    again.restore(decode(SavedState, saved), T0 + timedelta(seconds=30))
    assert again.held == 5
    (n,) = again.due(T0 + timedelta(seconds=30))
    assert n.count == 5 and n.header["serial"] == "7" and n.coalesced is not None
    assert n.coalesced.first == T0 + timedelta(seconds=3)
