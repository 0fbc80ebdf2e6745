"""What a receiver's answer means (navi/consumer/retry.py): delivered,
rejected or retried; the backoff and its jitter; Retry-After in both forms."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.consumer.retry import (
    KINDS,
    MAX_RETRY_AFTER,
    Answer,
    Backoff,
    Delivered,
    Rejected,
    Retry,
    judge,
    retry_after,
)
from tests.helpers import examples

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_a_2xx_is_delivered(status: int) -> None:
    assert judge(Answer(status), 3, NOW, 0.5) == Delivered()


@pytest.mark.parametrize("status", [400, 404, 409, 410, 413, 415, 422, 499])
def test_a_4xx_but_408_and_429_is_a_rejection_with_the_reason(status: int) -> None:
    verdict = judge(Answer(status, "Bad Request; invalid event: no source"), 0, NOW, 0.5)
    assert verdict == Rejected(f"the receiver answered {status}: Bad Request; invalid event: no source")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_retried_with_all_sending_paused(status: int) -> None:
    """An expired token is no fault of the notification's: setting them all
    aside would leave every container's notifications to be moved back."""
    verdict = judge(Answer(status, "Unauthorized"), 2, NOW, 0.0)
    assert isinstance(verdict, Retry) and verdict.kind == "refused"
    assert verdict.receiver_wait == verdict.delay == Backoff().first * 4 / 2
    assert verdict.why == f"the receiver answered {status}: Unauthorized (it refuses the credentials: see --headers)"


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (Answer(500, "Internal Server Error"), "5xx"),
        (Answer(503), "5xx"),
        (Answer(599), "5xx"),
        (Answer(408), "408"),
        (Answer(429), "429"),
        (Answer(None, "no answer in 10 s", timed_out=True), "timeout"),
        (Answer(None, "no connection: Connection refused"), "connection"),
        (Answer(301, "Moved Permanently"), "other"),
        (Answer(100), "other"),
    ],
)
def test_5xx_408_429_timeouts_and_the_rest_are_retried(answer: Answer, kind: str) -> None:
    verdict = judge(answer, 0, NOW, 0.0)
    assert isinstance(verdict, Retry)
    assert verdict.kind == kind and kind in KINDS
    assert verdict.delay == Backoff().first / 2  # jitter 0: the lower half's bottom
    assert "\n" not in verdict.why
    assert answer.text in verdict.why and (answer.status is None or str(answer.status) in verdict.why)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first=0.5, cap=60)
    assert [b.delay(n, 0.999999) for n in range(1, 10)] == pytest.approx([0.5, 1, 2, 4, 8, 16, 32, 60, 60], rel=1e-5)
    assert [b.delay(n, 0.0) for n in range(1, 10)] == [0.25, 0.5, 1, 2, 4, 8, 16, 30, 30]


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    first=st.floats(min_value=0.01, max_value=10),
    cap=st.floats(min_value=0.01, max_value=3600),
)
@settings(max_examples=examples(300))
def test_each_delay_is_in_the_upper_half_of_its_ceiling_which_never_passes_the_cap(
    failures: int, jitter: float, first: float, cap: float
) -> None:
    b = Backoff(first, cap)
    ceiling = min(cap, first * 2 ** min(failures - 1, 64))
    assert ceiling / 2 <= b.delay(failures, jitter) <= ceiling <= cap
    assert b.delay(failures, jitter) <= Backoff(first, cap).delay(failures + 1, jitter) or ceiling == cap


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert retry_after("120", NOW) == 120
    assert retry_after(" 0 ", NOW) == 0
    assert retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert retry_after("Mon, 07 Dec 2026 12:00:30 GMT", NOW) == 30
    assert retry_after("Sun, 06 Dec 2026 12:00:00 GMT", NOW) == 0  # in the past: now
    assert retry_after("99999999999", NOW) == MAX_RETRY_AFTER
    assert retry_after(format_datetime(NOW + timedelta(days=3), usegmt=True), NOW) == MAX_RETRY_AFTER
    for unreadable in (None, "", "-5", "1.5", "soon", "٣", "Mon, 99 Foo 2026"):
        assert retry_after(unreadable, NOW) is None, unreadable


@given(st.text(max_size=60))
@settings(max_examples=examples(300))
def test_any_retry_after_is_read_or_ignored_never_an_error(value: str) -> None:
    seconds = retry_after(value, NOW)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER


@given(
    status=st.sampled_from([408, 429, 500, 502, 503, 504]),
    seconds=st.integers(min_value=0, max_value=10**6),
    failures=st.integers(min_value=0, max_value=50),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
@settings(max_examples=examples(200))
def test_a_retry_waits_the_backoff_and_at_least_the_receivers_retry_after(
    status: int, seconds: int, failures: int, jitter: float
) -> None:
    verdict = judge(Answer(status, retry_after=str(seconds)), failures, NOW, jitter)
    assert isinstance(verdict, Retry)
    wait = min(seconds, MAX_RETRY_AFTER)
    assert verdict.receiver_wait == wait
    assert verdict.delay == max(wait, Backoff().delay(failures + 1, jitter))
    assert f"Retry-After: {wait:g} s" in verdict.why


def test_retry_after_on_a_rejection_or_a_success_changes_nothing() -> None:
    assert judge(Answer(200, retry_after="60"), 0, NOW, 0.5) == Delivered()
    assert judge(Answer(404, "Not Found", retry_after="60"), 0, NOW, 0.5) == Rejected(
        "the receiver answered 404: Not Found"
    )
