from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener.classify import Classifier, Evidence
from navi.listener.coalesce import Coalescer, Outgoing, Rate, RateLimit
from navi.notification import decode, encode
from tests.helpers import ORIGIN, examples, exited, fatal, memory, record

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)
LIMIT = RateLimit(burst=3, pace=timedelta(seconds=60), quiet=timedelta(seconds=10))


def crash(serial: int, at: datetime, name: str = "web", how: str = "exit status 3") -> Outgoing:
    n = Classifier(ORIGIN, oom_baseline=0).decide(
        exited(name=name, serial=serial), Evidence(observed_at=at, exit=record(how), oom_kill=0, memory=memory(0))
    )
    assert n is not None
    return Outgoing(f"{serial:012d}.json", n)


def fatal_of(name: str, serial: int, at: datetime) -> Outgoing:
    n = Classifier(ORIGIN, oom_baseline=0).decide(fatal(name=name, serial=serial), Evidence(observed_at=at))
    assert n is not None
    return Outgoing(f"{serial:012d}.json", n)


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
    out = c.admit(crash(10, later), later)
    assert out is not None and out.name == f"{10:012d}.json"
    n = out.notification
    assert n.count == 8 and c.held == 0
    assert n.coalesced is not None
    assert (n.coalesced.first, n.coalesced.last, n.coalesced.reason) == (T0 + timedelta(seconds=3), later, "rate limit")
    assert n.summary == "web crashed: exit status 3 (8 times since 03:00:03 UTC; held back by rate limit)"


def test_the_end_of_a_storm_is_flushed_on_a_tick() -> None:
    c = Coalescer(LIMIT)
    for i in range(5):
        c.admit(crash(i, T0), T0)
    assert c.due(T0 + timedelta(seconds=5)) == []  # no token yet, and still storming
    (out,) = c.due(T0 + timedelta(seconds=10))  # quiet for 10 s: the storm is over
    assert out.notification.count == 2 and out.notification.header["serial"] == "4" and c.held == 0
    assert out.name == f"{4:012d}.json"
    assert c.due(T0 + timedelta(seconds=200)) == []


def test_a_long_storm_writes_one_notification_per_pace() -> None:
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
    assert sum(o.notification.count for o in written) == 600 and c.held == 0
    assert len({o.name for o in written}) == len(written)  # each its own file


def test_programs_and_types_are_limited_separately_and_fatal_never() -> None:
    c = Coalescer(RateLimit(burst=1, pace=timedelta(hours=1)))
    assert c.admit(crash(1, T0, name="a"), T0) is not None
    assert c.admit(crash(2, T0, name="b"), T0) is not None
    assert c.admit(crash(3, T0, name="a"), T0) is None
    a = crash(4, T0, name="a")
    assert c.admit(Outgoing(a.name, replace(a.notification, type="oom")), T0) is not None
    for serial in (5, 6):
        assert c.admit(fatal_of("a", serial, T0), T0) is not None


def test_a_failed_write_is_retried_with_its_count() -> None:
    c = Coalescer(LIMIT)
    first = c.admit(crash(1, T0), T0)
    assert first is not None
    c.failed(first, "disk full", T0)
    assert c.held == 1
    (again,) = c.due(T0 + timedelta(seconds=5))
    assert again == first  # the same notification, not a summary
    c.failed(again, "disk full", T0 + timedelta(seconds=5))
    both = c.admit(crash(2, T0 + timedelta(seconds=6)), T0 + timedelta(seconds=6))  # the third token
    assert both is not None and both.notification.count == 2 and both.notification.header["serial"] == "2"
    assert both.notification.coalesced is not None and both.notification.coalesced.reason == "disk full"
    assert c.held == 0 and c.due(T0 + timedelta(seconds=10)) == []


def test_a_summary_failed_again_keeps_one_account_of_the_hold() -> None:
    c = Coalescer(LIMIT)
    for i in range(5):
        c.admit(crash(i, T0), T0)
    (out,) = c.due(T0 + timedelta(seconds=10))
    c.failed(out, "disk full", T0 + timedelta(seconds=10))
    (again,) = c.due(T0 + timedelta(seconds=20))
    assert again.notification.count == 2
    held_back = "(2 times since 03:00:00 UTC; held back by disk full)"
    assert again.notification.summary == f"web crashed: exit status 3 {held_back}"


ops = st.lists(
    st.tuples(
        st.sampled_from(["crash a", "crash b", "fatal a", "tick", "fail", "restart"]),
        st.integers(0, 120),  # seconds since the previous operation
    ),
    max_size=60,
)


@settings(max_examples=examples(300))
@given(ops)
def test_no_incident_is_lost_and_the_storm_ends_flushed(operations: list[tuple[str, int]]) -> None:
    c = Coalescer(LIMIT)
    now, incidents, written, serial = T0, 0, 0, 0
    last: Optional[Outgoing] = None
    for op, gap in operations:
        now += timedelta(seconds=gap)
        serial += 1
        if op == "tick":
            out = c.due(now)
        elif op == "restart":  # what a new Navi restores
            saved = c.save(now)
            c = Coalescer(LIMIT)
            c.restore(decode(list[Rate], encode(saved)), now)
            continue
        elif op == "fail":
            if last is not None:  # the last write failed after all
                written -= last.notification.count
                c.failed(last, "disk full", now)
                last = None
            continue
        else:
            incidents += 1
            kind, name = op.split()
            o = fatal_of(name, serial, now) if kind == "fatal" else crash(serial, now, name=name)
            admitted = c.admit(o, now)
            out = [admitted] if admitted else []
        for o in out:
            written += o.notification.count
            last = o
        assert written + c.held == incidents
    # Quiet: a tick per pace period empties what is held.
    for _ in range(3):
        now += LIMIT.pace
        written += sum(o.notification.count for o in c.due(now))
    assert c.held == 0 and written == incidents


def test_what_is_held_and_the_rate_survive_a_restart() -> None:
    c = Coalescer(LIMIT)
    for i in range(8):
        c.admit(crash(i, T0 + timedelta(seconds=i)), T0 + timedelta(seconds=i))
    saved = encode(c.save(T0 + timedelta(seconds=8)))
    again = Coalescer(LIMIT)
    again.restore(decode(list[Rate], saved), T0 + timedelta(seconds=30))
    assert again.held == 5
    # No fresh burst: the rate goes on where the last Navi left it.
    assert again.admit(crash(8, T0 + timedelta(seconds=30)), T0 + timedelta(seconds=30)) is None
    (out,) = again.due(T0 + timedelta(seconds=40))
    n = out.notification
    assert n.count == 6 and n.header["serial"] == "8" and n.coalesced is not None
    assert n.coalesced.first == T0 + timedelta(seconds=3)


def test_a_rate_at_its_full_burst_is_not_saved() -> None:
    c = Coalescer(LIMIT)
    c.admit(crash(1, T0), T0)
    (rate,) = c.save(T0 + timedelta(seconds=30))
    assert (rate.key, rate.tokens, rate.held) == ("web:web:crash", 2.5, None)
    assert c.save(T0 + timedelta(seconds=60)) == []  # the token is back
