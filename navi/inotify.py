"""Linux inotify, through ctypes (the standard library has none): which
directories have new entries, without polling them.

``parse`` is pure (the kernel's event records in, events out); ``Inotify``
is the thin shell around the three system calls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from typing import Any

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000

# Navi publishes with link(): IN_CREATE of the final name.  Others may
# rename a file in (IN_MOVED_TO) or write one in place (IN_CLOSE_WRITE once
# it is whole).  The *_SELF events: the directory itself went away.
NEW_ENTRY = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
MASK = NEW_ENTRY | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class Unavailable(Exception):
    """Why inotify cannot be used here, in one line."""


@dataclass(frozen=True)
class Event:
    wd: int  # -1 for IN_Q_OVERFLOW
    mask: int
    name: str  # empty for events about the directory itself

    @property
    def overflow(self) -> bool:
        return bool(self.mask & IN_Q_OVERFLOW)


def parse(data: bytes) -> list[Event]:
    """The events in what one read() of an inotify fd returned (the kernel
    only ever returns whole records)."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, os.fsdecode(raw)))
    return events


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "inotify_init1") else None
    except OSError:
        return None


class Inotify:
    def __init__(self) -> None:
        self._libc = _libc()
        if self._libc is None:
            raise Unavailable("this system has no inotify")
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            hint = " (fs.inotify.max_user_instances)" if err == errno.EMFILE else ""
            raise Unavailable(f"inotify_init1: {os.strerror(err)}{hint}")
        self.fd: int = fd

    def fileno(self) -> int:
        return self.fd

    def watch_fd(self, dir_fd: int, mask: int = MASK) -> int:
        """Watch the directory open at ``dir_fd`` (through /proc, so that it
        is that very directory, whatever its path names now)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(f"/proc/self/fd/{dir_fd}"), mask)
        if wd < 0:
            err = ctypes.get_errno()
            hint = " (fs.inotify.max_user_watches)" if err == errno.ENOSPC else ""
            raise OSError(err, f"inotify_add_watch: {os.strerror(err)}{hint}")
        return int(wd)

    def unwatch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails harmlessly if the kernel removed it already

    def read(self) -> list[Event]:
        """Every event queued now (none if there are none)."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            if not data:
                return events
            events += parse(data)

    def close(self) -> None:
        os.close(self.fd)
