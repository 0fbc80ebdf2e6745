"""Memory pressure before the OOM kill: when an episode begins and ends.  No I/O.

The measure is the working set against the limit: usage without the page
cache the kernel drops before it ever kills (``inactive_file``), as the
kubelet counts it.  Raw usage, and the limit hits that come with it, sit
near the limit in any healthy container that reads files; they are kept as
evidence, not taken as the sign.  Going over ``memory.high`` (v2) is a sign
of its own: the kernel is throttling the container.

An episode begins when the working set reaches ``begin`` of the limit, or
the container is throttled; it ends when the working set has stayed below
``end`` for ``calm``.  While the working set is above ``watch`` of the limit
(or an episode lasts), Navi samples every ``fast`` instead of at each
TICK_5, so that a fast climb is seen in time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Optional

from navi.listener.cgroup import PressureReading
from navi.notification import Pressure


@dataclass(frozen=True)
class PressureLimits:
    begin: float = 0.75
    end: float = 0.65
    calm: timedelta = timedelta(seconds=30)
    watch: float = 0.6
    fast: timedelta = timedelta(seconds=1)


@dataclass(frozen=True)
class Episode:
    """The episode going on, as saved."""

    id: str
    began: datetime
    peak_bytes: Optional[int]
    hits_before: Optional[int]  # the counters when it began
    throttled_before: Optional[int]
    below_since: Optional[datetime] = None


def working_set(r: PressureReading) -> Optional[int]:
    if r.usage_bytes is None:
        return None
    return max(0, r.usage_bytes - (r.inactive_file_bytes or 0))


def _rise(now: Optional[int], before: Optional[int]) -> Optional[int]:
    return None if now is None or before is None else max(0, now - before)


class PressureWatch:
    def __init__(self, limits: PressureLimits = PressureLimits()) -> None:
        self.limits = limits
        self.episode: Optional[Episode] = None
        self._last: Optional[PressureReading] = None
        self._last_at: Optional[datetime] = None
        self.changes = 0

    def _share(self, r: PressureReading) -> Optional[float]:
        ws = working_set(r)
        if ws is None or not r.limit_bytes:
            return None
        return ws / r.limit_bytes

    def step(self, r: PressureReading, now: datetime, new_id: str) -> tuple[Optional[Episode], Optional[Pressure]]:
        """What a reading would make of the episode, without taking it: the
        episode after it, and the begin or end it makes, if it makes one (a
        new episode is named ``new_id``)."""
        share = self._share(r)
        ws = working_set(r)
        throttled = _rise(r.throttled, self._last.throttled if self._last else None)
        episode = self.episode
        if episode is None:
            if (share is not None and share >= self.limits.begin) or throttled:
                episode = Episode(new_id, now, ws, r.limit_hits, r.throttled)
                return episode, describe(episode, r)
            return None, None
        if ws is not None and (episode.peak_bytes is None or ws > episode.peak_bytes):
            episode = replace(episode, peak_bytes=ws)
        if share is None or share >= self.limits.end or throttled:
            episode = replace(episode, below_since=None)
        elif episode.below_since is None:
            episode = replace(episode, below_since=now)
        if episode.below_since is None or now - episode.below_since < self.limits.calm:
            return episode, None
        return None, describe(episode, r, ended=now)

    def observe(self, r: PressureReading, now: datetime, new_id: str) -> Optional[Pressure]:
        """Take a reading; the episode that begins or ends with it, if one does."""
        episode, change = self.step(r, now, new_id)
        if change is not None:  # its peak and calm are saved with whatever is saved next
            self.changes += 1
        self.episode, self._last, self._last_at = episode, r, now
        return change

    def info(self) -> Pressure:
        """The episode going on, with the evidence of the last reading."""
        assert self.episode is not None
        return describe(self.episode, self._last or PressureReading(None, None, None, None, None, None, None))

    def restore(self, episode: Optional[Episode]) -> None:
        if self.episode is None and episode is not None:
            self.episode = episode
            self.changes += 1

    def sample_in(self, now: datetime) -> Optional[timedelta]:
        """How soon to read again, when sooner than the next TICK_5: while
        the working set is high, or an episode lasts."""
        if self._last is None or self._last_at is None:
            return None
        share = self._share(self._last)
        if self.episode is None and (share is None or share < self.limits.watch):
            return None
        return max(timedelta(0), self.limits.fast - (now - self._last_at))


def describe(e: Episode, r: PressureReading, ended: Optional[datetime] = None) -> Pressure:
    """An episode, with the evidence of the reading ``r``."""
    return Pressure(
        phase="began" if ended is None else "ended",
        episode=e.id,
        began=e.began,
        ended=ended,
        working_set_bytes=working_set(r),
        limit_bytes=r.limit_bytes,
        peak_working_set_bytes=e.peak_bytes,
        limit_hits=_rise(r.limit_hits, e.hits_before),
        throttled=_rise(r.throttled, e.throttled_before),
        stall_some_avg10=r.stall_some_avg10,
        stall_full_avg10=r.stall_full_avg10,
    )
