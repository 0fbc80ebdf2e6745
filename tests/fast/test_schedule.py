"""Which held notification is sent when (navi/consumer/schedule.py): one in
flight per directory, at most ``limit`` at once, first ready first sent, a
failed one after its backoff, nothing while the receiver asked to wait; and
a whole forwarder simulated on it, against a receiver that fails at random:
every notification delivered once, in order per directory."""

from __future__ import annotations

import random
from collections import deque
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.consumer.retry import Answer, Delivered, Rejected, Retry, Verdict, judge
from navi.consumer.schedule import Schedule
from tests.helpers import examples

RETRY = Retry(2.0, "5xx", "the receiver answered 500")
NOW_WALL = datetime(2026, 12, 7, tzinfo=timezone.utc)


def test_one_in_flight_per_directory_and_at_most_the_limit() -> None:
    s = Schedule(limit=2)
    for i, d in enumerate(["a", "b", "c"]):
        s.hold(d, incident=100.0 + i, now=0.0)
    assert s.start(0.0) == ["a", "b"]  # first held, first sent; c waits for room
    assert s.start(0.0) == [] and s.in_flight == 2 and s.wake_at() is None
    s.ended("a", Delivered(), 0.1)
    assert not s.holds("a") and s.start(0.1) == ["c"]
    with pytest.raises(ValueError):
        s.hold("b", 0.0, 0.1)  # it holds one already


def test_a_failed_one_waits_its_delay_and_goes_after_those_ready_before_it() -> None:
    s = Schedule(limit=1)
    s.hold("a", 1.0, 0.0)
    s.hold("b", 2.0, 0.0)
    assert s.start(0.0) == ["a"]
    s.ended("a", RETRY, 1.0)
    assert s.failures("a") == 1 and s.holds("a")
    assert s.start(1.0) == ["b"]
    s.ended("b", Rejected("the receiver answered 400"), 1.5)
    assert s.wake_at() == 3.0 and s.start(2.9) == []
    assert s.start(3.0) == ["a"]


def test_nothing_is_sent_while_the_receiver_asked_to_wait() -> None:
    s = Schedule(limit=4)
    for d in "abc":
        s.hold(d, 0.0, 0.0)
    assert s.start(0.0) == ["a", "b", "c"]
    s.ended("a", Retry(1.0, "429", "429", receiver_wait=30.0), 5.0)
    s.ended("b", Delivered(), 5.0)
    s.hold("b", 0.0, 5.0)  # its next
    assert s.start(6.0) == [] and s.start(34.9) == []
    assert s.wake_at() == 35.0
    assert s.start(35.0) == ["b", "a"]  # b was ready first (at 5.0), a after its delay (at 6.0)
    assert s.oldest() == 0.0


def test_a_dropped_directory_is_forgotten() -> None:
    s = Schedule(limit=1)
    s.hold("a", 7.0, 0.0)
    assert s.oldest() == 7.0
    s.drop("a")
    assert not s.holds("a") and s.start(1.0) == [] and s.wake_at() is None and s.oldest() is None
    with pytest.raises(ValueError):
        Schedule(limit=0)


@given(
    limit=st.integers(min_value=1, max_value=5),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["hold", "start", "end", "drop"]),
            st.integers(min_value=0, max_value=5),  # a directory
            st.floats(min_value=0, max_value=10),  # time passing
            st.sampled_from(["delivered", "rejected", "retry", "wait"]),
        ),
        max_size=60,
    ),
)
@settings(max_examples=examples(300))
def test_the_rules_hold_whatever_happens(limit: int, ops: list[tuple[str, int, float, str]]) -> None:
    s = Schedule(limit)
    now = 0.0
    due: dict[str, float] = {}
    paused_until = 0.0
    sending: set[str] = set()
    for op, n, dt, outcome in ops:
        d = f"d{n}"
        now += dt
        if op == "hold" and not s.holds(d):
            s.hold(d, incident=float(n), now=now)
            due[d] = now
        elif op == "start":
            chosen = s.start(now)
            for c in chosen:
                assert c not in sending and due[c] <= now and now >= paused_until
            sending |= set(chosen)
            ready = [x for x in due if x not in sending and due[x] <= now]
            assert len(sending) == limit or not ready or now < paused_until  # none left waiting with room
        elif op == "end" and d in sending:
            verdicts: dict[str, Verdict] = {
                "delivered": Delivered(),
                "rejected": Rejected("400"),
                "retry": Retry(dt, "5xx", "500"),
                "wait": Retry(dt, "429", "429", receiver_wait=2 * dt),
            }
            verdict = verdicts[outcome]
            s.ended(d, verdict, now)
            sending.discard(d)
            if isinstance(verdict, Retry):
                due[d] = now + verdict.delay
                if verdict.receiver_wait > 0:
                    paused_until = max(paused_until, now + verdict.receiver_wait)
            else:
                del due[d]
        elif op == "drop" and d not in sending:
            s.drop(d)
            due.pop(d, None)
        assert s.in_flight == len(sending) <= limit
        assert s.oldest() == min((float(x[1:]) for x in due), default=None)
        wake = s.wake_at()
        if wake is not None:
            assert wake >= paused_until and any(due[x] <= wake for x in due if x not in sending)


@given(
    limit=st.integers(min_value=1, max_value=4),
    backlog=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=8),
    seed=st.integers(min_value=0, max_value=2**32),
    failing=st.floats(min_value=0, max_value=0.9),
)
@settings(max_examples=examples(200))
def test_a_forwarder_on_it_delivers_everything_once_in_order_per_directory(
    limit: int, backlog: list[int], seed: int, failing: float
) -> None:
    """Directories with backlogs, a receiver that fails (500, 429 with
    Retry-After, timeouts) at random, answers coming back in any order:
    once it stops failing, each notification was delivered exactly once, and
    each directory's in its order."""
    rng = random.Random(seed)
    waiting = {f"d{i}": deque(range(n)) for i, n in enumerate(backlog)}
    s = Schedule(limit)
    delivered: dict[str, list[int]] = {d: [] for d in waiting}
    in_flight: list[str] = []
    now = 0.0

    def take(d: str) -> None:  # the watch's gate: the next one only when none is held
        if waiting[d] and not s.holds(d):
            s.hold(d, incident=float(waiting[d][0]), now=now)

    for d in waiting:
        take(d)
    for step in range(10_000):
        in_flight += s.start(now)
        if not in_flight:
            wake = s.wake_at()
            if wake is None:
                break
            now = max(now, wake)
            continue
        d = in_flight.pop(rng.randrange(len(in_flight)))  # answers in any order
        healthy = step > 2_000 or rng.random() >= failing
        answer = Answer(200) if healthy else rng.choice([Answer(500), Answer(429, retry_after="1"), Answer(None)])
        verdict = judge(answer, s.failures(d), NOW_WALL, rng.random())
        now += rng.random()
        s.ended(d, verdict, now)
        if isinstance(verdict, Delivered):
            delivered[d].append(waiting[d].popleft())
            take(d)
    assert delivered == {d: list(range(n)) for d, n in zip(waiting, backlog)}
    assert s.in_flight == 0 and s.oldest() is None
