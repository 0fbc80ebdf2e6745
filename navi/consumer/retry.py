"""What a receiver's answer means for the notification sent (pure: the answer,
the attempts so far, the time and a random number in; a verdict out).

- 2xx: delivered.
- 401 and 403: the receiver refuses Navi's credentials, not the
  notification: retried, and all sending paused meanwhile (an expired token
  must not set every notification of every container aside).
- Any other 4xx but 408 and 429: rejected, with the reason; it is set aside,
  and the others go on.
- 5xx, 408, 429, no answer in time, no connection: retried after a capped
  exponential backoff with jitter, and not before the receiver's
  ``Retry-After`` (seconds, or an HTTP date).
- Anything else (a redirect, say): retried too.  It is no answer to the
  event, and nothing is lost by waiting while a person corrects ``--to``.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Union

# The receiver's Retry-After is honoured up to this: a wrong or hostile
# value must not stop the forwarding for a day.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Answer:
    """What came back for one request.  ``status`` None: no HTTP answer."""

    status: Optional[int]
    text: str = ""  # the status line's reason and the body's first line, or the error
    retry_after: Optional[str] = None  # the header, as received
    timed_out: bool = False


@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class Rejected:
    reason: str  # one line, for the .reason file and the log


@dataclass(frozen=True)
class Retry:
    delay: float  # seconds until this notification is sent again
    kind: str  # one of KINDS: a metric's label, so a small fixed set
    why: str  # one line for the log
    receiver_wait: float = 0.0  # the receiver's Retry-After, seconds: send it nothing before then


Verdict = Union[Delivered, Rejected, Retry]
KINDS = ("5xx", "408", "429", "refused", "timeout", "connection", "other")
REFUSED = (401, 403)  # the receiver's answer to the credentials


@dataclass(frozen=True)
class Backoff:
    """``first`` seconds after the first failure, doubling up to ``cap``;
    each delay is drawn from its upper half (jitter), so that directories
    that failed together do not come back together."""

    first: float = 0.5
    cap: float = 60.0

    def delay(self, failures: int, jitter: float) -> float:
        """The delay after the ``failures``-th failure in a row (1 or more);
        ``jitter`` is a random number in [0, 1)."""
        ceiling = min(self.cap, self.first * 2.0 ** min(max(failures, 1) - 1, 64))
        return ceiling * (0.5 + 0.5 * jitter)


def retry_after(value: Optional[str], now: datetime) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an
    HTTP date (RFC 9110 10.2.3), at most MAX_RETRY_AFTER; None when absent
    or unreadable (a date in the past is 0)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by the RFC
        when = when.replace(tzinfo=timezone.utc)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)


def _kind(answer: Answer) -> str:
    if answer.status is None:
        return "timeout" if answer.timed_out else "connection"
    if answer.status in (408, 429):
        return str(answer.status)
    if answer.status in REFUSED:
        return "refused"
    return "5xx" if 500 <= answer.status <= 599 else "other"


def judge(answer: Answer, failures: int, now: datetime, jitter: float, backoff: Backoff = Backoff()) -> Verdict:
    """The verdict on ``answer``.  ``failures``: how many attempts at this
    notification failed before this one; ``now``: the wall clock, for a
    Retry-After date; ``jitter``: a random number in [0, 1)."""
    status = answer.status
    if status is not None and 200 <= status <= 299:
        return Delivered()
    if status is not None and 400 <= status <= 499 and status not in (408, 429, *REFUSED):
        return Rejected(f"the receiver answered {status}" + (f": {answer.text}" if answer.text else ""))
    delay = backoff.delay(failures + 1, jitter)
    wait = retry_after(answer.retry_after, now) if status is not None else None
    if status is None:
        why = answer.text or ("no answer in time" if answer.timed_out else "no connection")
    else:
        why = f"the receiver answered {status}" + (f": {answer.text}" if answer.text else "")
        if status in REFUSED:
            why += " (it refuses the credentials: see --headers)"
    if wait is not None:
        why += f" (Retry-After: {wait:g} s)"
    elif status in REFUSED:
        wait = delay  # nothing else would be let in either: all wait
    return Retry(max(delay, wait or 0.0), _kind(answer), why, wait or 0.0)
