"""Which held notification to send next (pure: what is held, what ended and
the time in; the directories to send for out).

Each directory holds at most one notification at a time, its oldest (the
watch claims the next only once this one is done with), and has at most one
request in flight: so a container's notifications reach the receiver in
their order.  Across directories:

- at most ``limit`` requests are in flight at once;
- of those ready, the one ready longest goes first, so that a directory with
  a long backlog does not starve the others;
- after a failure, a directory waits its backoff before its next attempt;
- while the receiver asked to wait (``Retry-After``), nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from navi.consumer.retry import Delivered, Rejected, Retry, Verdict


@dataclass
class _Held:
    incident: float  # the notification's time, seconds since the epoch
    due: float  # monotonic: not to be sent before
    order: int  # when it became due, for first-ready-first-sent
    failures: int = 0
    sending: bool = False


class Schedule:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit is at least 1")
        self.limit = limit
        self._held: dict[str, _Held] = {}
        self._paused_until = float("-inf")
        self._order = 0

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def hold(self, directory: str, incident: float, now: float) -> None:
        """``directory`` holds its next notification (of the incident at
        ``incident``), ready to send from ``now``."""
        if directory in self._held:
            raise ValueError(f"{directory} already holds a notification")
        self._held[directory] = _Held(incident, now, self._next_order())

    def holds(self, directory: str) -> bool:
        """It holds a notification: the watch must not claim its next."""
        return directory in self._held

    def failures(self, directory: str) -> int:
        """Failed attempts at the notification ``directory`` holds."""
        return self._held[directory].failures

    def sending(self, directory: str) -> bool:
        """A request for ``directory`` is in flight."""
        held = self._held.get(directory)
        return held is not None and held.sending

    @property
    def in_flight(self) -> int:
        return sum(h.sending for h in self._held.values())

    def start(self, now: float) -> list[str]:
        """The directories to send for now, first ready first; each is
        counted in flight until :meth:`ended`."""
        if now < self._paused_until:
            return []
        room = self.limit - self.in_flight
        ready = sorted((h.due, h.order, d) for d, h in self._held.items() if not h.sending and h.due <= now)
        chosen = [d for _, _, d in ready[: max(room, 0)]]
        for d in chosen:
            self._held[d].sending = True
        return chosen

    def ended(self, directory: str, verdict: Verdict, now: float) -> None:
        """The request for ``directory`` ended with ``verdict``: delivered or
        rejected, the directory is free for its next; to retry, it waits."""
        held = self._held[directory]
        if not held.sending:
            raise ValueError(f"{directory} has no request in flight")
        if isinstance(verdict, (Delivered, Rejected)):
            del self._held[directory]
            return
        assert isinstance(verdict, Retry)
        held.sending = False
        held.failures += 1
        held.due = now + verdict.delay
        held.order = self._next_order()
        if verdict.receiver_wait > 0:
            self._paused_until = max(self._paused_until, now + verdict.receiver_wait)

    def drop(self, directory: str) -> None:
        """Forget what ``directory`` holds (it is gone, or its notification
        could not be sent at all)."""
        self._held.pop(directory, None)

    def wake_at(self) -> Optional[float]:
        """When :meth:`start` may next have something to send, if nothing
        ends before (None: not until a request ends or more is held)."""
        if self.in_flight >= self.limit:
            return None
        waiting = [h.due for h in self._held.values() if not h.sending]
        return max(min(waiting), self._paused_until) if waiting else None

    def oldest(self) -> Optional[float]:
        """The incident time of the oldest notification held (none: None)."""
        return min((h.incident for h in self._held.values()), default=None)
