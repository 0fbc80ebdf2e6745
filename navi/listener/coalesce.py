"""What to write now, and what to fold into a later notification.  No I/O.

A program that crashes as fast as supervisord restarts it must not fill the
volume it shares with the application.  Per program and type, the first
incidents are written one by one (a burst), then one per pace period; the
incidents in between are held, counted, and folded into the next
notification written for that program and type.  Notifications that could
not be written (directory full, disk full) are held the same way.  Nothing
is dropped: the ``count`` of every notification written, plus what is held,
is the number of incidents.

The whole of it, the rate of each program as well as what is held, is
:meth:`Coalescer.save`d across a restart of Navi: a Navi killed again and
again must neither lose a count nor grant each new Navi a fresh burst.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Optional

from navi.notification import DEATHS, Coalesced, Notification


@dataclass(frozen=True)
class RateLimit:
    burst: int = 5
    pace: timedelta = timedelta(minutes=1)
    # A storm is over when its program has been quiet this long: what it
    # left held is written then, without waiting for the pace.
    quiet: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class Outgoing:
    """A notification decided, and the file name it is published under."""

    name: str
    notification: Notification


@dataclass(frozen=True)
class Held:
    """Incidents held for one program and type, as saved."""

    count: int
    first: datetime
    reason: str
    latest: Outgoing  # the last incident held: written, later, for all of them


@dataclass(frozen=True)
class Rate:
    """One program and type's rate limit, and what it holds, as saved."""

    key: str
    tokens: float
    refilled: datetime
    held: Optional[Held] = None


@dataclass
class _Key:
    tokens: float
    refilled: datetime
    latest: Optional[Outgoing] = None
    count: int = 0
    first: Optional[datetime] = None
    reason: str = ""


MAX_KEYS = 1024


def key_of(n: Notification) -> str:
    return f"{n.process.group}:{n.process.name}:{n.type}"


class Coalescer:
    def __init__(self, limit: RateLimit = RateLimit()) -> None:
        self.limit = limit
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self.changes = 0  # grows whenever what is saved changes: when to save it

    @property
    def held(self) -> int:
        """Incidents held, not yet in a notification written."""
        return sum(k.count for k in self._keys.values())

    def admit(self, out: Outgoing, now: datetime) -> Optional[Outgoing]:
        """``out`` to write now, with the incidents held for its program and
        type folded in; or None when the rate limit holds it back."""
        key = self._key(out.notification, now)
        self.changes += 1
        # Only deaths are held back: a give-up comes once per program, and
        # episodes begin and end at most once per window.
        if out.notification.type in DEATHS:
            if key.tokens < 1:
                self._hold(key, out, "rate limit")
                return None
            key.tokens -= 1
        if key.count == 0:
            return out
        self._hold(key, out, key.reason)
        return self._release(key)

    def failed(self, out: Outgoing, reason: str, now: datetime) -> None:
        """``out`` could not be written: hold its incidents for a later try."""
        self._hold(self._key(out.notification, now), out, reason)

    def due(self, now: datetime) -> list[Outgoing]:
        """Held incidents to write now (call it on a TICK): one notification
        per program and type whose rate limit allows one, or whose storm is
        over."""
        out = []
        for key in self._keys.values():
            if key.count == 0:
                continue
            self._refill(key, now)
            assert key.latest is not None
            latest = key.latest.notification
            if latest.type in DEATHS and now - latest.time < self.limit.quiet:
                if key.tokens < 1:
                    continue
                key.tokens -= 1
            out.append(self._release(key))
        return out

    def save(self, now: datetime) -> list[Rate]:
        """Every program's rate and what it holds.  A rate back at a full
        burst with nothing held is as good as none, and is left out."""
        for key in self._keys.values():
            self._refill(key, now)
        return [
            Rate(
                name,
                key.tokens,
                key.refilled,
                Held(key.count, key.first, key.reason, key.latest)
                if key.count and key.latest is not None and key.first is not None
                else None,
            )
            for name, key in self._keys.items()
            if key.count or key.tokens < self.limit.burst
        ]

    def restore(self, rates: list[Rate], now: datetime) -> None:
        """Take on what a previous Navi saved: its rates (the lower, where
        this Navi has one of its own already) and what it held."""
        for rate in rates:
            key = self._keys.get(rate.key)
            if key is None:
                key = self._keys[rate.key] = _Key(
                    tokens=min(float(self.limit.burst), rate.tokens), refilled=min(rate.refilled, now)
                )
            else:
                key.tokens = min(key.tokens, rate.tokens)
            if rate.held is not None:
                h = rate.held
                n = replace(
                    h.latest.notification,
                    count=h.count,
                    coalesced=Coalesced(first=h.first, last=h.latest.notification.time, reason=h.reason),
                )
                self._hold(key, Outgoing(h.latest.name, n), h.reason)

    def _key(self, n: Notification, now: datetime) -> _Key:
        name = key_of(n)
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = _Key(tokens=float(self.limit.burst), refilled=now)
            # Forget the rate of programs long quiet; never what is held.
            for old in [k for k, h in self._keys.items() if h.count == 0][: max(0, len(self._keys) - MAX_KEYS)]:
                del self._keys[old]
        self._keys.move_to_end(name)
        self._refill(key, now)
        return key

    def _refill(self, key: _Key, now: datetime) -> None:
        if now > key.refilled:
            gained = (now - key.refilled) / self.limit.pace
            key.tokens = min(float(self.limit.burst), key.tokens + gained)
        key.refilled = now

    def _hold(self, key: _Key, out: Outgoing, reason: str) -> None:
        n = _unsummed(out.notification)
        out = Outgoing(out.name, n)
        first = n.coalesced.first if n.coalesced else n.time
        key.first = first if key.first is None else min(key.first, first)
        # Held incidents were never written, so the one chosen to stand for
        # them all names a file no notification has had.
        if key.latest is None or n.time >= key.latest.notification.time:
            key.latest = out
        key.count += n.count
        key.reason = reason
        self.changes += 1

    def _release(self, key: _Key) -> Outgoing:
        """The latest incident held, standing for all of them."""
        assert key.latest is not None and key.first is not None
        out = key.latest
        n = out.notification
        if key.count > 1:
            n = replace(
                n,
                count=key.count,
                coalesced=Coalesced(first=key.first, last=n.time, reason=key.reason),
                summary=n.summary + _held_back(key.count, key.first, key.reason),
            )
        key.latest, key.count, key.first, key.reason = None, 0, None, ""
        self.changes += 1
        return Outgoing(out.name, n)


def _held_back(count: int, first: datetime, reason: str) -> str:
    return f" ({count} times since {first:%H:%M:%S} UTC; held back by {reason})"


def _unsummed(n: Notification) -> Notification:
    """``n`` without the words a release added to its summary: a written
    notification that failed comes back to be held again."""
    if n.coalesced is not None:
        words = _held_back(n.count, n.coalesced.first, n.coalesced.reason)
        if n.summary.endswith(words):
            return replace(n, summary=n.summary[: -len(words)])
    return n
