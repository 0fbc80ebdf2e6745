"""Deaths the moment they happen, and supervisord woken to report them.

supervisord notices a child's death only when its main loop wakes, which
it does once a second when nothing else happens (a SIGCHLD does not wake
it: Python retries the interrupted poll).  So Navi watches a pidfd of each
running program, and when one dies makes one cheap XML-RPC call: activity
on supervisord's socket ends its poll, it reaps the child and sends the
EXITED event at once.  Without pidfds (Linux before 5.3) or without the
socket, events come at supervisord's own pace.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Iterable
from typing import Callable, Optional

log = logging.getLogger("navi")


class DeathWatch:
    def __init__(
        self, wake: Optional[Callable[[], None]], woken: Callable[[list[int]], None] = lambda pids: None
    ) -> None:
        self._wake = wake
        self._woken = woken  # told which pids died, once supervisord is woken (it has reaped them then)
        self._poll = select.poll()
        self._fds: dict[int, int] = {}  # pid -> pidfd
        self._pids: dict[int, int] = {}  # pidfd -> pid
        self.enabled = hasattr(os, "pidfd_open") and wake is not None
        self._wake_failed = False
        # Seen dead, their events not handled yet (watch() still wants them).
        self._fired: set[int] = set()

    def watch(self, pids: Iterable[int]) -> None:
        """Watch exactly these pids (the running programs)."""
        if not self.enabled:
            return
        wanted = set(pids)
        for pid in [p for p in self._fds if p not in wanted]:
            self._forget(pid)
        self._fired &= wanted
        dead = False
        for pid in wanted.difference(self._fds, self._fired):
            try:
                fd = os.pidfd_open(pid)
            except OSError as e:
                if e.errno == errno.ESRCH:  # dead already: its event is due
                    dead = True
                    continue
                log.warning(
                    "cannot watch pid %d (%s): its death is reported at supervisord's pace; no more deaths are watched",
                    pid,
                    e.strerror,
                )
                self.enabled = False
                return
            self._fds[pid] = fd
            self._pids[fd] = pid
            self._poll.register(fd, select.POLLIN)
        if dead:
            self._wake_supervisord()

    def wait_for_input(self, fd: int, timeout: Optional[float] = None) -> bool:
        """Block until ``fd`` is readable (or closed), handling deaths
        meanwhile; False when ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._poll.register(fd, select.POLLIN)
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = [f for f, _ in self._poll.poll(None if left is None else left * 1000)]
                dead = [self._pids[f] for f in ready if f in self._pids]
                for pid in dead:
                    self._forget(pid)
                    self._fired.add(pid)
                if dead:  # one wake for all: supervisord reaps every dead child in one pass
                    # Its answer comes after it has reaped them, drained their
                    # pipes into their logs, and before it starts them again.
                    self._wake_supervisord()
                    self._woken(dead)
                if fd in ready:
                    return True
                if not ready and left is not None and left <= 0:
                    return False
        finally:
            self._poll.unregister(fd)

    def dying(self) -> int:
        """Watched programs dead now whose events are not handled yet: an OOM
        kill counted meanwhile may be theirs, before supervisord logs it."""
        if not self.enabled:
            return 0
        ready = sum(1 for fd, _ in self._poll.poll(0) if fd in self._pids)
        return ready + len(self._fired)

    def _forget(self, pid: int) -> None:
        fd = self._fds.pop(pid)
        del self._pids[fd]
        self._poll.unregister(fd)
        os.close(fd)

    def _wake_supervisord(self) -> None:
        assert self._wake is not None
        try:
            self._wake()
        except Exception as e:  # the event still comes, at supervisord's pace
            if not self._wake_failed:
                log.warning("cannot wake supervisord (%s): this death is reported at its pace", e)
            self._wake_failed = True
        else:
            self._wake_failed = False

    def close(self) -> None:
        for pid in list(self._fds):
            self._forget(pid)
