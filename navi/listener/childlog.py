"""The end of a program's own log file (supervisord's child log), read
without trusting it: the application runs as Navi's user and may replace
its log with a symlink, a FIFO or a device.  Such a file is never followed,
never blocks, and is never read: it is said to be what it is."""

from __future__ import annotations

import errno
import os
import stat

from navi.listener.lastwords import MAX_BYTES, Window

# Backups read at most: enough to fill MAX_BYTES from logs rotated at 410 bytes.
MAX_BACKUPS = 10
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class _NotRegular(Exception):
    pass


def _end(path: str, size: int) -> tuple[bytes, bool]:
    """The last ``size`` bytes of the regular file ``path``, and whether that
    is all of it."""
    fd = os.open(path, _OPEN)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular()
        start = max(0, st.st_size - size)
        return os.pread(fd, size, start), start == 0
    finally:
        os.close(fd)


def read_end(path: str) -> Window:
    """At most MAX_BYTES of the end of ``path``.  Where supervisord rotated
    it, so that it is shorter than that, the rest comes from the ends of
    ``path.1``, ``path.2``, ... (a backup holds ``*_logfile_maxbytes``)."""
    try:
        data, whole = _end(path, MAX_BYTES)
    except _NotRegular:
        return Window(path, unavailable=f"{path} is not a regular file: not read")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Window(path, unavailable=f"{path} is a symbolic link: not followed")
        if e.errno == errno.ENXIO:  # a socket
            return Window(path, unavailable=f"{path} is not a regular file: not read")
        if e.errno == errno.ENOENT:
            return Window(path, unavailable=f"{path} does not exist (rotated away, or never written)")
        return Window(path, unavailable=f"cannot read {path}: {e.strerror}")
    # Into the backups while all of the newer file fitted: ``whole`` stays
    # true only where the next one is missing (or empty: nothing left out).
    for n in range(1, MAX_BACKUPS + 1):
        if not whole:
            break
        try:
            before, whole = _end(f"{path}.{n}", MAX_BYTES - len(data))
        except (OSError, _NotRegular):
            break  # no backup to go on from
        data = before + data
    return Window(path, data, whole)
