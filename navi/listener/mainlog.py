"""supervisord's main log, where the exit statuses are.

It is read over ``SUPERVISOR_SERVER_URL`` with
``supervisor.readLog`` (or from the file itself).  readLog gives no file size,
and fails on a range that starts inside a multi-byte character (logging a
traceback in supervisord's own log), so Navi reads from a known offset at a
line boundary whenever it knows one: always, once it has seen the whole log.
Otherwise (a large log at start, a rotation) it reads a tail and finds its
place after the last lines it has already seen.
"""

from __future__ import annotations

import os
import stat
from typing import Callable, Optional, Protocol

from navi.listener import rpc

FIRST_TAIL = 1 << 20  # at start, enough for the current supervisord's recent past
TAIL = 16 << 10
MAX_TAIL = 4 << 20


class LogUnavailable(Exception):
    """One line saying why supervisord's log could not be read."""


ANCHOR_LINES = 3


def new_lines(tail: str, anchor: Optional[str], whole: bool) -> tuple[Optional[str], Optional[str]]:
    """The complete lines of ``tail`` after ``anchor`` (the last lines already
    seen), and the new anchor; ``(None, anchor)`` when the tail is too short to
    hold the anchor and a longer one is needed.

    The anchor is several lines, each with supervisord's millisecond time
    stamp, so it does not recur in a real log.
    """
    if not whole:
        # The tail starts mid-line (perhaps mid-character): drop that line.
        tail = tail[tail.find("\n") + 1 :] if "\n" in tail else ""
    seen = ""  # the lines before the new ones in this log, for the next anchor
    if anchor is not None:
        at = tail.rfind("\n" + anchor + "\n")
        if at >= 0:
            tail = tail[at + len(anchor) + 2 :]
            seen = anchor + "\n"
        elif tail.startswith(anchor + "\n"):
            tail = tail[len(anchor) + 1 :]
            seen = anchor + "\n"
        elif not whole:
            return None, anchor
        # else: the whole log lacks the anchor: it was rotated or cleared,
        # and all of it is new.
    end = tail.rfind("\n")
    if end < 0:
        return "", anchor if seen else None
    complete = tail[: end + 1]
    seen += complete
    return complete, "\n".join(seen[:-1].rsplit("\n", ANCHOR_LINES)[-ANCHOR_LINES:])


class LogSource(Protocol):
    def tail(self, size: int) -> str:
        """The last ``size`` bytes of the log, decoded."""

    def since(self, offset: int) -> str:
        """The log from byte ``offset`` (a character boundary) to its end."""


class LogTail:
    """New lines of supervisord's main log, each time it is asked."""

    def __init__(self, source: LogSource, description: str) -> None:
        self._source = source
        self.description = description
        self._anchor: Optional[str] = None
        self._end: Optional[int] = None  # byte offset just past the anchor, when known

    def read_new(self) -> str:
        if self._end is not None:
            lines = self._read_since()
            if lines is not None:
                return lines
            self._end = None  # rotated or cleared: find our place from the end
        return self._read_tail()

    def _read_since(self) -> Optional[str]:
        assert self._end is not None
        seen = self._anchor + "\n" if self._anchor is not None else ""
        try:
            text = self._source.since(self._end - _size(seen))
        except LogUnavailable:
            return None
        if not text.startswith(seen):
            return None
        lines, self._anchor = new_lines(text, self._anchor, whole=True)
        self._end += _size(lines or "")
        return lines

    def _read_tail(self) -> str:
        size = FIRST_TAIL if self._anchor is None else TAIL
        while True:
            text = self._source.tail(size)
            whole = _size(text) < size - 3
            lines, anchor = new_lines(text, self._anchor, whole or size >= MAX_TAIL)
            if lines is not None:
                self._anchor = anchor
                if whole:
                    self._end = _size(text[: text.rfind("\n") + 1])
                return lines
            size *= 4


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


class _ReadFailed(LogUnavailable):
    """supervisord answered, but could not read that range of its log."""


class RpcLog:
    """The main log over XML-RPC."""

    def __init__(self, url: str) -> None:
        try:
            rpc.check_url(url)
        except rpc.RpcError as e:
            raise LogUnavailable(str(e)) from None
        self._url = url

    def since(self, offset: int) -> str:
        return self._read(offset)

    def tail(self, size: int) -> str:
        # A tail that starts inside a multi-byte character makes supervisord
        # fail to decode it (an HTTP 500, or a fault): start up to three
        # bytes later.
        for skip in range(3):
            try:
                return self._read(-(size - skip))
            except _ReadFailed:
                pass
        return self._read(-(size - 3))

    def _read(self, offset: int) -> str:
        try:
            return str(rpc.call(self._url, "supervisor.readLog", offset, 0))
        except rpc.Fault as e:
            if e.code == 20:  # NO_FILE
                raise LogUnavailable(
                    "supervisord has no main log file (logfile=syslog?): exit statuses are only in its log"
                ) from None
            raise _ReadFailed(f"supervisord could not read its log: {e.text}") from None
        except rpc.Unreachable as e:
            raise LogUnavailable(str(e)) from None
        except rpc.RpcError as e:
            raise _ReadFailed(f"supervisord could not read its log: {e}") from None


def log_source(supervisord_log: Optional[str], supervisor_url: Optional[str]) -> tuple[LogSource, str]:
    """Where to read supervisord's main log, and its name for a person: the
    file, when one is given, else ``readLog`` over supervisord's URL."""
    if supervisord_log:
        return FileLog(supervisord_log), supervisord_log
    if supervisor_url:
        return RpcLog(supervisor_url), f"readLog at {supervisor_url}"
    raise LogUnavailable("no SUPERVISOR_SERVER_URL and no --supervisord-log: cannot read supervisord's log")


class FileLog:
    """The main log as a file."""

    def __init__(self, path: str) -> None:
        self._path = path

    def since(self, offset: int) -> str:
        return self._read(lambda end: offset)

    def tail(self, size: int) -> str:
        return self._read(lambda end: max(0, end - size))

    def _read(self, start: Callable[[int], int]) -> str:
        try:
            # Non-blocking and regular files only: the application (same
            # uid) could put a FIFO there.
            fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise LogUnavailable(f"supervisord's log {self._path} is not a regular file")
                f.seek(start(f.seek(0, os.SEEK_END)))
                return f.read(MAX_TAIL).decode("utf-8", "surrogateescape")
        except OSError as e:
            raise LogUnavailable(f"cannot read supervisord's log {self._path}: {e.strerror}") from None
