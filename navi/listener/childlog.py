"""Programs' last words from their own log files (supervisord's child logs):
where each program's output goes, and the end of it read the moment it
died (:class:`LastWords`).

The files are read without trusting them: the application runs as Navi's
user and may replace its log with a symlink, a FIFO or a device.  Such a
file is never followed, never blocks, and is never read: it is said to be
what it is."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace
from typing import Optional

from navi.fdio import READ_UNTRUSTED
from navi.listener import lastwords, procs, rpc
from navi.listener.lastwords import MAX_BYTES, Window
from navi.listener.protocol import Event
from navi.notification import Output

# Backups read at most: enough to fill MAX_BYTES from logs rotated at 410 bytes.
MAX_BACKUPS = 10


class _NotRegular(Exception):
    pass


def _end(path: str, size: int) -> tuple[bytes, bool]:
    """The last ``size`` bytes of the regular file ``path``, and whether that
    is all of it."""
    fd = os.open(path, READ_UNTRUSTED)
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


def _key(event: Event) -> str:
    return f"{event.fields.get('groupname', '')}:{event.fields.get('processname', '')}"


class LastWords:
    """Where each program ("group:name") writes, and what was read at deaths
    for their events."""

    def __init__(self, supervisor_url: Optional[str], proc_root: str) -> None:
        self._url = supervisor_url
        self._proc = proc_root
        self._where: dict[str, tuple[lastwords.Where, lastwords.Where]] = {}  # stderr, stdout
        self._problem = "" if supervisor_url else "no supervisor URL to ask where its output goes"
        self._said: dict[str, tuple[int, Output]] = {}  # read at a death: its pid, its words

    def find(self) -> None:
        """Where each program's stdout and stderr go, from supervisord's
        configuration of it (asked again for a program new to Navi)."""
        if not self._url:
            return
        try:
            infos = rpc.call(self._url, "supervisor.getAllConfigInfo")
            self._problem = ""
        except (rpc.RpcError, rpc.Fault) as e:
            self._problem = f"supervisord's configuration could not be read ({e})"
            return
        for info in infos if isinstance(infos, list) else ():
            if isinstance(info, dict):
                where = (lastwords.where(info, "stderr"), lastwords.where(info, "stdout"))
                self._where[f"{info.get('group')}:{info.get('name')}"] = where

    def read(self, key: str, at_death: bool) -> Output:
        """The end of what the program ``key`` wrote, from its log files."""
        if key not in self._where:
            self.find()
        unknown = lastwords.Where(None, self._problem or "not a program supervisord knows")
        windows = [
            read_end(w.file) if w.file else Window(None, unavailable=w.unavailable)
            for w in self._where.get(key, (unknown, unknown))
        ]
        return lastwords.output(windows[0], windows[1], at_death)

    def at_death(self, programs: list[tuple[str, str, int]], dead: list[int]) -> None:
        """The programs ``dead`` died, all they wrote is logged, and
        supervisord has not been asked to restart them: their words now, to
        the last, and nothing of the next process's."""
        read = {f"{g}:{n}": (pid, self.read(f"{g}:{n}", at_death=True)) for g, n, pid in programs if pid in dead}
        # Something else may have woken supervisord first, to reap and start
        # them again: a child of its that Navi does not know of yet may be a
        # new process, whose first words may be among those read.
        known = {pid for _, _, pid in programs} | {os.getpid()}
        children = procs.children(os.getppid(), self._proc)
        if children is None or children - known:
            read = {key: (pid, replace(words, at_death=False)) for key, (pid, words) in read.items()}
        self._said.update(read)

    def of(self, event: Event) -> Output:
        """The last words of the event's program: those read at its death,
        if that was its pid (BACKOFF names none), or read now."""
        said = self._said.get(_key(event))
        pid = event.fields.get("pid", "")
        if said is not None and (not pid.isdigit() or int(pid) == said[0]):
            return said[1]
        return self.read(_key(event), at_death=False)

    def handled(self, event: Event) -> None:
        """What was read at a death is for its own EXITED or BACKOFF event,
        or no one's (a stop, a new start).  Only its RUNNING may come before:
        supervisord moves a program past startsecs in the pass that then
        reaps it."""
        said = self._said.get(_key(event))
        if said is not None and not (event.name == "PROCESS_STATE_RUNNING" and event.fields.get("pid") == str(said[0])):
            del self._said[_key(event)]
