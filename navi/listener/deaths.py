"""Deaths the moment they happen, and supervisord woken to report them.

supervisord notices a child's death only when its main loop wakes, which
it does once a second when nothing else happens (a SIGCHLD does not wake
it: Python retries the interrupted poll).  So Navi watches a pidfd of each
running program, and when one dies makes one cheap XML-RPC call: activity
on supervisord's socket ends its poll, it reaps the child and sends the
EXITED event at once.  Without pidfds (Linux before 5.3) or without the
socket, events come at supervisord's own pace.

The wake is made in two steps, so that a program's last words can be read
at the one moment they are all in its logs and nothing of the next
process's is yet.  Navi connects: supervisord wakes to accept, and in that
same pass reaps the dead child, which drains its pipes into its logs,
writes its ``exited:`` line and closes its end of those pipes last.  It
starts the program again only on its next pass, which waits for the
request.  So Navi waits (briefly) for those pipes to be closed, has the last
words read, and only then sends the request.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import time
from collections.abc import Iterable
from typing import Callable, Optional

# How long a death waits for supervisord to have logged all the dead process
# wrote (a child it left behind may hold its pipes open for ever).
DRAIN_WAIT = 0.05

log = logging.getLogger("navi")


class DeathWatch:
    def __init__(
        self,
        wake: Optional[Callable[[Callable[[], None]], None]],
        dead: Callable[[list[int]], None] = lambda pids: None,
        proc_root: str = "/proc",
        supervisord: Optional[int] = None,
    ) -> None:
        # wake(connected): connect to supervisord, call connected(), then ask it something.
        self._wake = wake
        self._dead = dead  # told which pids died, once their output is logged, before they can be restarted
        self._proc = proc_root
        self._supervisord = os.getppid() if supervisord is None else supervisord
        self._outputs: dict[int, set[str]] = {}  # pid -> its stdout and stderr pipes, as /proc names them
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
            self._outputs[pid] = self._pipes(pid)
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
                self._take(ready)
                if fd in ready:
                    return True
                if not ready and left is not None and left <= 0:
                    return False
        finally:
            self._poll.unregister(fd)

    def catch_up(self) -> None:
        """Deaths that came while Navi was busy, before it answers
        supervisord (the answer wakes it too, and it would restart them)."""
        if self._fds:
            self._take([f for f, _ in self._poll.poll(0)])

    def _take(self, ready: list[int]) -> None:
        """The deaths among the ready fds: once what they wrote is logged,
        say so, then wake supervisord, once for all (it reaps every dead
        child in one pass)."""
        dead = [self._pids[f] for f in ready if f in self._pids]
        if not dead:
            return
        pipes: set[str] = set()
        for pid in dead:
            pipes |= self._outputs.get(pid, set())
            self._fired.add(pid)

        def logged() -> None:
            self._wait_for_logs(pipes, [self._fds[pid] for pid in dead])
            self._dead(dead)

        try:
            self._wake_supervisord(logged)
        finally:
            for pid in dead:
                self._forget(pid)

    def dying(self) -> int:
        """Watched programs dead now whose events are not handled yet: an OOM
        kill counted meanwhile may be theirs, before supervisord logs it."""
        if not self.enabled:
            return 0
        ready = sum(1 for fd, _ in self._poll.poll(0) if fd in self._pids)
        return ready + len(self._fired)

    def _pipes(self, pid: int) -> set[str]:
        """The pipes of ``pid``'s stdout and stderr, as "pipe:[inode]".  A
        process just forked has not had them put in place yet: a moment."""
        deadline = time.monotonic() + DRAIN_WAIT
        while True:
            found = set()
            for fd in (1, 2):
                try:
                    target = os.readlink(f"{self._proc}/{pid}/fd/{fd}")
                except OSError:
                    continue  # closed, or not ours to look at
                if target.startswith("pipe:"):
                    found.add(target)
            if found or time.monotonic() > deadline or not self._open_files(pid):
                return found
            time.sleep(0.0005)

    def _open_files(self, pid: int) -> bool:
        """Whether ``pid`` has files open: not when it is gone, or a zombie."""
        try:
            return bool(os.listdir(f"{self._proc}/{pid}/fd"))
        except OSError:
            return False

    def _wait_for_logs(self, pipes: set[str], pidfds: list[int]) -> None:
        """Until supervisord has closed its end of these pipes: it does when
        it reaps their process, once it has logged all it wrote.  Where its
        fds are not Navi's to look at (it changed its user at start, which
        makes it undumpable), until it has reaped the processes, and a moment
        for the rest of that."""
        fds = f"{self._proc}/{self._supervisord}/fd"
        deadline = time.monotonic() + DRAIN_WAIT
        while pipes and time.monotonic() < deadline:
            try:
                held = set()
                for fd in os.listdir(fds):
                    with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                        held.add(os.readlink(f"{fds}/{fd}"))
            except OSError:
                self._wait_for_reaping(pidfds, deadline)
                return
            if not pipes & held:
                return
            time.sleep(0.0005)

    @staticmethod
    def _wait_for_reaping(pidfds: list[int], deadline: float) -> None:
        while pidfds and time.monotonic() < deadline:
            try:
                signal.pidfd_send_signal(pidfds[-1], 0)
            except ProcessLookupError:  # reaped: its logs are written just after
                pidfds.pop()
                if not pidfds:
                    time.sleep(0.001)
                continue
            except OSError:
                return
            time.sleep(0.0005)

    def _forget(self, pid: int) -> None:
        self._outputs.pop(pid, None)
        fd = self._fds.pop(pid)
        del self._pids[fd]
        self._poll.unregister(fd)
        os.close(fd)

    def _wake_supervisord(self, connected: Callable[[], None] = lambda: None) -> None:
        assert self._wake is not None
        done = False

        def once() -> None:
            nonlocal done
            done = True
            connected()

        try:
            self._wake(once)
        except Exception as e:  # the event still comes, at supervisord's pace
            if not done:
                once()
            if not self._wake_failed:
                log.warning("cannot wake supervisord (%s): this death is reported at its pace", e)
            self._wake_failed = True
        else:
            self._wake_failed = False

    def close(self) -> None:
        for pid in list(self._fds):
            self._forget(pid)
