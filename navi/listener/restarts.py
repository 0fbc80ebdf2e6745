"""How often each program has died, and its crash loops.  No I/O.

supervisord restarts a program that dies after ``startsecs`` for ever and
never says FATAL.  Each unexpected death is counted here, per program:
since supervisord started (as Kubernetes' restartCount), and within a
recent window.  A program enters a crash loop when ``deaths`` deaths fall
within ``window``, and leaves it when it has gone ``calm`` without one, or
when supervisord no longer runs it (stopped, FATAL).  Entering and leaving
are reported once each.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from navi.notification import CrashLoop, Deaths

# Bursts remembered per program: a window of 10 minutes holds at most 601.
# Beyond, the oldest two merge: every death is still counted, its time less
# precisely.
MAX_RECENT = 1000
MAX_PROGRAMS = 1024
BURST = timedelta(seconds=1)


@dataclass(frozen=True)
class LoopLimits:
    deaths: int = 5
    window: timedelta = timedelta(minutes=10)
    calm: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class Burst:
    """Deaths within BURST of the first: a storm of them is one entry,
    whatever its size (they leave the window together, up to BURST early)."""

    first: datetime
    deaths: int = 1


@dataclass(frozen=True)
class ProgramDeaths:
    """One program's deaths, as saved."""

    key: str  # group:name
    total: int
    last: datetime
    recent: list[Burst] = field(default_factory=list)  # within the window
    loop_began: Optional[datetime] = None
    loop_first: Optional[datetime] = None  # its first death
    loop_deaths: int = 0


@dataclass
class _Program:
    last: datetime
    total: int = 0
    recent: deque[Burst] = field(default_factory=deque)
    loop_began: Optional[datetime] = None
    loop_first: Optional[datetime] = None
    loop_deaths: int = 0


def _count(recent: deque[Burst]) -> int:
    return sum(b.deaths for b in recent)


class Restarts:
    def __init__(self, limits: LoopLimits = LoopLimits()) -> None:
        self.limits = limits
        self._programs: dict[str, _Program] = {}
        self.changes = 0

    def death(self, key: str, when: datetime) -> Optional[CrashLoop]:
        """Count a death; the crash loop it begins, if it does."""
        p = self._programs.get(key)
        if p is None:
            p = self._programs[key] = _Program(when)
            if len(self._programs) > MAX_PROGRAMS:  # forget the quietest first
                del self._programs[min(self._programs, key=lambda k: self._programs[k].last)]
        self.changes += 1
        p.total += 1
        p.last = max(p.last, when)
        self._add(p.recent, when)
        self._forget_old(p, when)
        if p.loop_began is not None:
            p.loop_deaths += 1
            return None
        recent = _count(p.recent)
        if recent < self.limits.deaths:
            return None
        p.loop_began, p.loop_first, p.loop_deaths = when, p.recent[0].first, recent
        return self._loop(p, when)

    def deaths(self, key: str, now: datetime) -> Deaths:
        """Its counts, as a notification carries them."""
        p = self._programs.get(key)
        if p is not None:
            self._forget_old(p, now)
        return Deaths(
            total=p.total if p else 0,
            recent=_count(p.recent) if p else 0,
            window_seconds=int(self.limits.window.total_seconds()),
            crash_loop=p is not None and p.loop_began is not None,
        )

    def ended(self, key: str, now: datetime, why: str) -> Optional[CrashLoop]:
        """The program is no longer run (stopped, FATAL): its loop is over."""
        p = self._programs.get(key)
        if p is None or p.loop_began is None:
            return None
        return self._end(p, now, why)

    def calmed(self, now: datetime) -> list[tuple[str, CrashLoop]]:
        """Loops over because their program has not died for ``calm``."""
        calm = self.limits.calm
        why = f"no death for {calm.total_seconds():g} s"
        return [
            (key, self._end(p, now, why))
            for key, p in self._programs.items()
            if p.loop_began is not None and now - p.last >= calm
        ]

    def _end(self, p: _Program, now: datetime, why: str) -> CrashLoop:
        loop = self._loop(p, now, ended=now, why=why)
        p.loop_began, p.loop_first, p.loop_deaths = None, None, 0
        self.changes += 1
        return loop

    def _loop(
        self, p: _Program, now: datetime, ended: Optional[datetime] = None, why: Optional[str] = None
    ) -> CrashLoop:
        assert p.loop_began is not None and p.loop_first is not None
        return CrashLoop(
            phase="began" if ended is None else "ended",
            began=p.loop_began,
            ended=ended,
            why_ended=why,
            deaths=p.loop_deaths,
            first_death=p.loop_first,
            last_death=p.last,
        )

    @staticmethod
    def _add(recent: deque[Burst], when: datetime) -> None:
        last = recent[-1] if recent else None
        if last is not None and last.first <= when < last.first + BURST:
            recent[-1] = Burst(last.first, last.deaths + 1)
            return
        if len(recent) >= MAX_RECENT:
            oldest = recent.popleft()
            recent[0] = Burst(oldest.first, oldest.deaths + recent[0].deaths)
        recent.append(Burst(when))

    def _forget_old(self, p: _Program, now: datetime) -> None:
        while p.recent and now - p.recent[0].first > self.limits.window:
            p.recent.popleft()

    def save(self) -> list[ProgramDeaths]:
        return [
            ProgramDeaths(key, p.total, p.last, list(p.recent), p.loop_began, p.loop_first, p.loop_deaths)
            for key, p in self._programs.items()
        ]

    def restore(self, saved: list[ProgramDeaths]) -> None:
        """A previous Navi's counts, of the same supervisord; where this Navi
        has counted a program already, its own counts go on from them."""
        for s in saved:
            p = _Program(s.last, s.total, deque(s.recent), s.loop_began, s.loop_first, s.loop_deaths)
            mine = self._programs.get(s.key)
            if mine is not None:
                p.last, p.total = max(p.last, mine.last), p.total + mine.total
                p.recent = deque(sorted([*p.recent, *mine.recent], key=lambda b: b.first))
                if p.loop_began is None:
                    p.loop_began, p.loop_first, p.loop_deaths = mine.loop_began, mine.loop_first, mine.loop_deaths
            self._programs[s.key] = p
        self.changes += 1
