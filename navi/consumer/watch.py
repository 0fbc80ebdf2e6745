"""Following many notification directories at once (``navi watch``).

The directories are given as glob patterns, for example one for every
container's volume on a host; the patterns are expanded again every few
seconds, so that new containers are picked up and removed ones dropped.  New
entries are noticed through inotify where there is one, by polling
otherwise.  Idle, it sleeps in ``poll()``: no busy loop.

Without ``claim``, files are only read: each notification is given once
while it stays in its directory.  With ``claim``, each is claimed first and
given only if this watcher won it, so several watchers (or a restarted one)
never give the same file twice.  With a ``gate`` too, a directory's next
entry is claimed only when the gate lets it (``navi forward`` takes one at a
time per directory, and leaves the rest waiting where Navi counts them).

``items()`` is the whole loop.  A caller that has other work to interleave
(answers from other threads, its own timers) runs its parts itself:
``start()``, then ``look()`` and ``wait()`` in turn, with ``wake()`` from
another thread to cut a wait short.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import select
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Union, cast

import inotify_simple  # type: ignore[import-untyped]

from navi import names
from navi.consumer.entries import shown
from navi.consumer.inbox import ConsumerError, Found, Inbox, Pending, Problem
from navi.names import CLAIM_DIR

RETRY = 0.25  # seconds until a publication in progress is looked at again
PRUNE_EVERY = 3600.0

# Navi publishes with link(): IN_CREATE of the final name.  Others may
# rename a file in (IN_MOVED_TO) or write one in place (IN_CLOSE_WRITE once
# it is whole).  The *_SELF events: the directory itself went away.
_flags = inotify_simple.flags
NEW_ENTRY: int = _flags.CREATE | _flags.MOVED_TO | _flags.CLOSE_WRITE
GONE: int = _flags.DELETE_SELF | _flags.MOVE_SELF | _flags.UNMOUNT | _flags.IGNORED
MASK: int = NEW_ENTRY | _flags.DELETE_SELF | _flags.MOVE_SELF | _flags.ONLYDIR
IGNORED: int = _flags.IGNORED  # the kernel removed the watch
OVERFLOW: int = _flags.Q_OVERFLOW  # events were lost


class InotifyUnavailable(Exception):
    """Why inotify cannot be used here, in one line."""


class _Event(Protocol):
    wd: int  # -1 for an overflow
    mask: int
    name: str  # empty for events about the directory itself


class Inotify(Protocol):
    """What Watch uses of ``inotify_simple.INotify``."""

    def fileno(self) -> int: ...
    def add_watch(self, path: str, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def read(self, timeout: Optional[int] = None) -> list[_Event]: ...
    def close(self) -> None: ...


def open_inotify() -> Inotify:
    """A non-blocking inotify instance, or InotifyUnavailable."""
    try:
        return cast(Inotify, inotify_simple.INotify(nonblocking=True))
    except AttributeError:  # a libc without inotify_init1
        raise InotifyUnavailable("this system has no inotify") from None
    except OSError as e:
        hint = " (fs.inotify.max_user_instances)" if e.errno == errno.EMFILE else ""
        raise InotifyUnavailable(f"inotify_init1: {e.strerror or e}{hint}") from None


def _watch_fd(ino: Inotify, dir_fd: int) -> int:
    """Watch the directory open at ``dir_fd`` (through /proc, so that it is
    that very directory, whatever its path names now)."""
    try:
        return ino.add_watch(f"/proc/self/fd/{dir_fd}", MASK)
    except OSError as e:
        hint = " (fs.inotify.max_user_watches)" if e.errno == errno.ENOSPC else ""
        raise OSError(e.errno, f"inotify_add_watch: {e.strerror}{hint}") from None


@dataclass(frozen=True)
class Notice:
    """What happened to the watching itself (a directory found, gone or
    refused, inotify unavailable), in one line."""

    text: str
    started: Optional[str] = None  # the directory now watched, when that is the news
    stopped: Optional[str] = None  # the directory no longer watched, likewise


Item = Union[Found, Problem, Notice]


@dataclass
class _Watched:
    inbox: Inbox
    wd: Optional[int]  # None: polled
    dirty: bool = True
    gated: bool = False  # the gate stopped it: wait for resume()
    retry_at: Optional[float] = None
    blocked_until: float = 0.0  # its claim directory is unusable until then
    pruned_at: float = float("-inf")
    delivered: set[str] = field(default_factory=set)  # read-only: names already given
    noted: dict[str, tuple[int, ...]] = field(default_factory=dict)  # problems said, by the entry's stat


class Watch:
    def __init__(
        self,
        patterns: Sequence[str],
        *,
        claim: bool = False,
        claim_dir: str = CLAIM_DIR,
        keep: Optional[float] = None,
        use_inotify: Optional[bool] = None,
        interval: float = 2.0,
        rescan: float = 5.0,
        gate: Optional[Callable[[str], bool]] = None,
    ) -> None:
        """``keep``: with ``claim``, remove claimed and quarantined files
        older than this many seconds (None: never).  ``use_inotify``: None
        for where it works, False to poll every ``interval`` seconds.
        ``rescan``: how often the patterns are expanded again.  ``gate``:
        with ``claim``, asked with the directory before each claim; when it
        says no, the directory's entries wait until :meth:`resume`.  With a
        gate, the caller moves each claimed notification on when done with
        it (``Inbox.move_on``): what is still at the top of the claim
        directory is unfinished, and never pruned."""
        self.patterns = list(patterns)
        self.claim = claim
        self.gate = gate
        self.claim_dir = claim_dir
        self.keep = keep
        self.interval = interval
        self.rescan = rescan
        self._use_inotify = use_inotify
        self._inotify: Optional[Inotify] = None
        self._watched: dict[str, _Watched] = {}
        self._by_wd: dict[int, _Watched] = {}
        self._said: dict[str, str] = {}  # path or pattern -> the last thing said about it
        self._next_glob = 0.0
        self._next_poll = 0.0
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    @property
    def mode(self) -> str:
        return "inotify" if self._inotify is not None else f"polling every {self.interval:g} s"

    def stop(self) -> None:
        """End :meth:`items` soon; safe from a signal handler or a thread."""
        self._stopped = True
        self.wake()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def wake(self) -> None:
        """End the current :meth:`wait` now; safe from a signal handler or a thread."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def resume(self, directory: str) -> None:
        """Look at ``directory`` again at the next :meth:`look`, after the
        gate stopped it."""
        w = self._watched.get(directory)
        if w is not None:
            w.gated = False
            w.dirty = True

    @property
    def directories(self) -> list[str]:
        """The directories watched now."""
        return list(self._watched)

    def inbox(self, directory: str) -> Optional[Inbox]:
        """The open :class:`Inbox` of a watched directory (None: not watched)."""
        w = self._watched.get(directory)
        return None if w is None else w.inbox

    def close(self) -> None:
        for path in list(self._watched):
            self._drop(path)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        # A late wake() (a thread still finishing) must not write into a
        # file that reuses the number.
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def release(self, found: Found) -> bool:
        """Put back a notification this watcher claimed but could not pass on."""
        for w in self._watched.values():
            if w.inbox.directory == found.directory:
                return w.inbox.release(found)
        return False

    def items(self) -> Iterator[Item]:
        """Notifications (and problems, and notices) as they come, until
        :meth:`stop`."""
        yield from self.start()
        while not self._stopped:
            yield from self.look()
            if not self._stopped:
                self.wait()

    def start(self) -> Iterator[Notice]:
        """Set up inotify, where it works (before the first :meth:`look`)."""
        if self._use_inotify is not False:
            try:
                self._inotify = open_inotify()
            except InotifyUnavailable as e:
                yield Notice(f"{e}: polling every {self.interval:g} s instead")

    def look(self) -> Iterator[Item]:
        """One round: the patterns expanded again when due, then what is new
        in every directory that may have changed."""
        now = time.monotonic()
        if now >= self._next_glob:
            self._next_glob = now + self.rescan
            yield from self._refresh()
        if now >= self._next_poll:
            self._next_poll = now + self.interval
            for w in self._watched.values():
                w.dirty = w.dirty or w.wd is None
        for w in list(self._watched.values()):
            due = w.dirty or (w.retry_at is not None and w.retry_at <= now)
            if due and w.blocked_until <= now:
                yield from self._process(w, now)
            if self._stopped:
                return

    def wait(self, until: Optional[float] = None) -> None:
        """Sleep until something may have changed, the next rescan or poll,
        ``until`` (a ``time.monotonic()``), or :meth:`wake`."""
        now = time.monotonic()
        wake = [self._next_glob] + [w.retry_at for w in self._watched.values() if w.retry_at is not None]
        if any(w.wd is None and not w.gated for w in self._watched.values()):
            wake.append(self._next_poll)
        if until is not None:
            wake.append(until)
        if any(w.dirty and w.blocked_until <= now for w in self._watched.values()):
            wake.append(now)  # resumed since the last look: no sleep
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if self._inotify is not None:
            poller.register(self._inotify.fileno(), select.POLLIN)
        poller.poll(max(0.0, min(wake) - now) * 1000 + 1)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        if self._inotify is None:
            return
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:  # inotify_simple 1.3.0 reads even when nothing is queued
            events = []
        for event in events:
            if event.mask & OVERFLOW:  # events were lost: look everywhere
                for w in self._watched.values():
                    w.dirty = True
                continue
            watched = self._by_wd.get(event.wd)
            if watched is None:
                continue
            if event.mask & GONE:
                if event.mask & IGNORED:
                    self._by_wd.pop(event.wd, None)
                    watched.wd = None
                self._next_glob = now  # find out at once what became of it
            elif event.name and names.skipped(event.name) is None and not watched.gated:
                watched.dirty = True

    def _refresh(self) -> Iterator[Notice]:
        """Expand the patterns again: watch what is new, drop what is gone."""
        paths: list[str] = []
        for pattern in self.patterns:
            matched = sorted(glob.glob(pattern))
            if not matched:
                yield from self._say(pattern, f"nothing matches {shown(pattern)} (yet)")
            else:
                self._said.pop(pattern, None)
            paths += [p for p in matched if p not in paths]
        for path in list(self._watched):
            w = self._watched[path]
            if path not in paths or not w.inbox.still_there():
                self._drop(path)
                yield Notice(f"stopped watching {shown(path)}: it is gone or was replaced", stopped=path)
        for path in paths:
            if path not in self._watched:
                yield from self._add(path)

    def _add(self, path: str) -> Iterator[Notice]:
        try:
            inbox = Inbox(path, self.claim_dir)
        except ConsumerError as e:
            yield from self._say(path, f"not watching {e}")
            return
        same = [p for p, w in self._watched.items() if w.inbox.identity == inbox.identity]
        if same:
            inbox.close()
            yield from self._say(path, f"{shown(path)} is the directory {shown(same[0])}, watched already")
            return
        self._said.pop(path, None)
        wd = None
        if self._inotify is not None:
            try:
                wd = _watch_fd(self._inotify, inbox.fileno())
            except OSError as e:
                yield Notice(f"{shown(path)}: {e.strerror}: polling it every {self.interval:g} s")
        w = _Watched(inbox, wd)
        self._watched[path] = w
        if wd is not None:
            self._by_wd[wd] = w
        how = "inotify" if wd is not None else f"polling every {self.interval:g} s"
        yield Notice(f"watching {shown(path)} ({how})", started=path)

    def _drop(self, path: str) -> None:
        w = self._watched.pop(path)
        if w.wd is not None and self._inotify is not None:
            self._by_wd.pop(w.wd, None)
            with contextlib.suppress(OSError):  # the kernel removed it already
                self._inotify.rm_watch(w.wd)
        w.inbox.close()

    def _say(self, key: str, text: str) -> Iterator[Notice]:
        """Say something about a path once, not at every rescan."""
        if self._said.get(key) != text:
            self._said[key] = text
            yield Notice(text)

    def _closed_by_gate(self, w: _Watched) -> bool:
        if self.claim and self.gate is not None and not self.gate(w.inbox.directory):
            w.gated = True
            return True
        return False

    def _process(self, w: _Watched, now: float) -> Iterator[Union[Found, Problem, Notice]]:
        """Give every entry of one directory not given yet, in order."""
        w.dirty = False
        w.retry_at = None
        if self._closed_by_gate(w):
            return
        try:
            names = w.inbox.names()
        except OSError as e:
            self._next_glob = now
            yield Notice(f"cannot list {shown(w.inbox.directory)}: {e.strerror}")
            return
        present = set(names)
        w.delivered &= present
        w.noted = {name: state for name, state in w.noted.items() if name in present}
        for name in names:
            if self._stopped:
                return
            if name in w.delivered:
                continue
            st = w.inbox.lstat(name)
            if st is None:
                continue
            state = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)
            if w.noted.get(name) == state:
                continue
            if self._closed_by_gate(w):
                return
            try:
                result = w.inbox.claim(name) if self.claim else w.inbox.look(name)
            except ConsumerError as e:
                w.blocked_until = now + self.rescan
                w.dirty = True
                yield from self._say(w.inbox.directory, str(e))
                return
            if isinstance(result, Pending):
                w.retry_at = now + RETRY
                if self.gate is not None:
                    return  # one at a time, in order: nothing after it before it
            elif isinstance(result, Found):
                if not self.claim:
                    w.delivered.add(name)
                yield result
            elif isinstance(result, Problem):
                if result.quarantined is None:
                    w.noted[name] = state
                yield result
        if self.claim and self.keep is not None and now - w.pruned_at >= PRUNE_EVERY:
            w.pruned_at = now
            with contextlib.suppress(OSError, ConsumerError):
                w.inbox.prune(self.keep, held=self.gate is None)
