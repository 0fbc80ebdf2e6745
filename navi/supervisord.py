"""The supervisord that feeds Navi: who it is, and its main log.

The main log is read as a tail: ``supervisor.readLog(-n, 0)`` over
``SUPERVISOR_SERVER_URL`` (or the log file itself), and the new part found
after the last line Navi has already seen.  readLog gives no file size, so
there are no absolute offsets to lose when the log rotates: a tail that does
not hold the last seen line is all new.
"""

from __future__ import annotations

import http.client
import os
import socket
import xmlrpc.client
from datetime import datetime, timezone
from typing import Callable, Optional

FIRST_TAIL = 1 << 20  # at start, enough for the current supervisord's recent past
TAIL = 16 << 10
MAX_TAIL = 4 << 20
RPC_TIMEOUT = 2.0


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


class LogTail:
    """New lines of supervisord's main log, each time it is asked."""

    def __init__(self, tail: Callable[[int], str], description: str) -> None:
        self._tail = tail
        self.description = description
        self._anchor: Optional[str] = None

    def read_new(self) -> str:
        size = FIRST_TAIL if self._anchor is None else TAIL
        while True:
            text = self._tail(size)
            whole = len(text.encode("utf-8", "surrogateescape")) < size - 3
            lines, anchor = new_lines(text, self._anchor, whole or size >= MAX_TAIL)
            if lines is not None:
                self._anchor = anchor
                return lines
            size *= 4


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


def rpc(url: str, timeout: float = RPC_TIMEOUT) -> xmlrpc.client.ServerProxy:
    """A proxy for supervisord's XML-RPC at ``unix:///path`` or ``http://host:port``."""
    if url.startswith("unix://"):
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(url[7:], timeout))
    if url.startswith("http://"):
        return xmlrpc.client.ServerProxy(url.rstrip("/") + "/RPC2")
    raise LogUnavailable(f"supervisor URL {url!r} is neither unix:// nor http://")


def rpc_tail(url: str) -> Callable[[int], str]:
    proxy = rpc(url)

    def tail(size: int) -> str:
        # A tail that starts inside a multi-byte character makes supervisord
        # fail to decode it: start up to three bytes later.
        for skip in range(4):
            try:
                return str(proxy.supervisor.readLog(-(size - skip), 0))
            except xmlrpc.client.Fault as e:
                if e.faultCode == 20:  # NO_FILE
                    raise LogUnavailable(
                        "supervisord has no main log file (logfile=syslog?): exit statuses are only in its log"
                    ) from None
                fault = e.faultString
            except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as e:
                raise LogUnavailable(f"cannot reach supervisord at {url}: {e}") from None
        raise LogUnavailable(f"supervisord could not read its log: {fault}")

    return tail


def file_tail(path: str) -> Callable[[int], str]:
    def tail(size: int) -> str:
        try:
            with open(path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(0, end - size))
                return f.read(size).decode("utf-8", "replace")
        except OSError as e:
            raise LogUnavailable(f"cannot read supervisord's log {path}: {e.strerror}") from None

    return tail


def started_at(pid: int, proc_root: str = "/proc") -> Optional[datetime]:
    """When process ``pid`` started (UTC), from its stat and the boot time."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as f:
            stat = f.read().decode("ascii", "replace")
        with open(os.path.join(proc_root, "stat"), "rb") as f:
            btime = next(
                int(line.split()[1]) for line in f.read().decode("ascii", "replace").splitlines()
                if line.startswith("btime ")
            )
        # Field 22, counted after the ")" that ends the command name.
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(btime + ticks / os.sysconf("SC_CLK_TCK"), timezone.utc)
