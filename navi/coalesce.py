"""What to write now, and what to fold into a later notification.  No I/O.

A program that crashes as fast as supervisord restarts it must not fill the
volume it shares with the application.  Per program and type, the first
incidents are written one by one (a burst), then one per refill period; the
incidents in between are held, counted, and folded into the next
notification written for that program and type.  Notifications that could
not be written (directory full, disk full) are held the same way.  Nothing
is dropped: the ``count`` of every notification written, plus what is held,
is the number of incidents.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Optional

from navi.notification import Coalesced, Notification


@dataclass(frozen=True)
class RateLimit:
    burst: int = 5
    refill: timedelta = timedelta(minutes=1)
    # A storm is over when its program has been quiet this long: what it
    # left held is written then, without waiting for the refill.
    quiet: timedelta = timedelta(seconds=10)


@dataclass
class _Held:
    tokens: float
    refilled: datetime
    latest: Optional[Notification] = None  # the last incident held, written for all of them
    count: int = 0
    first: Optional[datetime] = None
    reason: str = ""


MAX_KEYS = 1024


@dataclass(frozen=True)
class HeldState:
    """What is held, as saved across a restart of Navi."""

    count: int
    first: datetime
    reason: str
    latest: Notification


@dataclass(frozen=True)
class SavedState:
    held: list[HeldState]
    version: int = 1


class Coalescer:
    def __init__(self, limit: RateLimit = RateLimit()) -> None:
        self.limit = limit
        self._keys: OrderedDict[str, _Held] = OrderedDict()
        self.changes = 0  # grows whenever what is held changes: when to save it

    @property
    def held(self) -> int:
        """Incidents held, not yet in a notification written."""
        return sum(h.count for h in self._keys.values())

    def admit(self, n: Notification, now: datetime) -> Optional[Notification]:
        """``n`` to write now, with the incidents held for its program and
        type folded in; or None when the rate limit holds it back."""
        key = self._key(n, now)
        if n.type != "fatal":  # once per program's give-up: never a storm
            if key.tokens < 1:
                self._hold(key, n, "rate limit")
                return None
            key.tokens -= 1
        if key.count == 0:
            return n
        self._hold(key, n, key.reason)
        return self._release(key)

    def failed(self, n: Notification, reason: str, now: datetime) -> None:
        """``n`` could not be written: hold its incidents for a later try."""
        self._hold(self._key(n, now), n, reason)

    def due(self, now: datetime) -> list[Notification]:
        """Held incidents to write now (call it on a TICK): one notification
        per program and type whose rate limit allows one, or whose storm is
        over."""
        out = []
        for held in self._keys.values():
            if held.count == 0:
                continue
            self._refill(held, now)
            assert held.latest is not None
            if held.latest.type != "fatal" and now - held.latest.time < self.limit.quiet:
                if held.tokens < 1:
                    continue
                held.tokens -= 1
            out.append(self._release(held))
        return out

    def save(self) -> SavedState:
        return SavedState(
            held=[
                HeldState(count=h.count, first=h.first, reason=h.reason, latest=h.latest)
                for h in self._keys.values()
                if h.count and h.latest is not None and h.first is not None
            ]
        )

    def restore(self, state: SavedState, now: datetime) -> None:
        """Hold again what a previous Navi held when it stopped."""
        for h in state.held:
            n = replace(h.latest, count=h.count,
                        coalesced=Coalesced(first=h.first, last=h.latest.time, reason=h.reason))
            self._hold(self._key(n, now), n, h.reason)

    def _key(self, n: Notification, now: datetime) -> _Held:
        name = f"{n.process.group}:{n.process.name}:{n.type}"
        held = self._keys.get(name)
        if held is None:
            held = self._keys[name] = _Held(tokens=float(self.limit.burst), refilled=now)
            # Forget the rate of programs long quiet; never what is held.
            for old in [k for k, h in self._keys.items() if h.count == 0][: max(0, len(self._keys) - MAX_KEYS)]:
                del self._keys[old]
        self._keys.move_to_end(name)
        self._refill(held, now)
        return held

    def _refill(self, held: _Held, now: datetime) -> None:
        if now > held.refilled:
            gained = (now - held.refilled) / self.limit.refill
            held.tokens = min(float(self.limit.burst), held.tokens + gained)
        held.refilled = now

    def _hold(self, held: _Held, n: Notification, reason: str) -> None:
        first = n.coalesced.first if n.coalesced else n.time
        held.first = first if held.first is None else min(held.first, first)
        if held.latest is None or n.time >= held.latest.time:
            held.latest = n
        held.count += n.count
        held.reason = reason
        self.changes += 1

    def _release(self, held: _Held) -> Notification:
        """The latest incident held, standing for all of them."""
        assert held.latest is not None and held.first is not None
        n = held.latest
        if held.count > 1:
            n = replace(
                n,
                count=held.count,
                coalesced=Coalesced(first=held.first, last=n.time, reason=held.reason),
                summary=f"{n.summary} ({held.count} times since {held.first:%H:%M:%S} UTC; held back by {held.reason})",
            )
        held.latest, held.count, held.first, held.reason = None, 0, None, ""
        self.changes += 1
        return n
