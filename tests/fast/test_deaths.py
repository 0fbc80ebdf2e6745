"""The death watch: pidfds of running programs, and supervisord woken at a
death.  tests/e2e/test_deaths.py watches under real supervisord."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from typing import Callable

import pytest

from navi.listener.deaths import DeathWatch
from tests.helpers import pidfds

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no os.pidfd_open on this platform")


class Pipe:
    """stdin as the listener sees it, and a wake that writes to it."""

    def __init__(self, fail: bool = False) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.wakes = 0
        self.fail = fail

    def wake(self, connected: Callable[[], None]) -> None:
        connected()  # before the request: what waits for the dead's logs
        self.wakes += 1
        os.write(self.write_fd, b"x")  # as supervisord sends the event once woken
        if self.fail:
            raise ConnectionRefusedError("refused")

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close()


def test_a_death_wakes_supervisord_once(pipe: Pipe) -> None:
    child = subprocess.Popen(["sleep", "60"])
    watch = DeathWatch(pipe.wake)
    watch.watch([child.pid])
    child.kill()
    child.wait()  # reaped: the pidfd still reports the death
    watch.wait_for_input(pipe.read_fd)
    assert pipe.wakes == 1
    watch.watch([])  # forgotten already; nothing left open
    assert not pidfds()


def test_a_death_is_dying_until_its_event_is_handled(pipe: Pipe) -> None:
    """Dead, then woken for, then no longer watched (its EXITED handled)."""
    child = subprocess.Popen(["sleep", "60"])
    other = subprocess.Popen(["sleep", "60"])
    watch = DeathWatch(pipe.wake)
    watch.watch([child.pid, other.pid])
    assert watch.dying() == 0
    child.kill()
    child.wait()
    assert watch.dying() == 1  # before supervisord is woken
    watch.wait_for_input(pipe.read_fd)
    assert watch.dying() == 1  # woken: its event is on its way
    watch.watch([child.pid, other.pid])  # an unrelated change: still dying, not watched again
    assert watch.dying() == 1 and pipe.wakes == 1
    watch.watch([other.pid])
    assert watch.dying() == 0
    other.kill()
    other.wait()
    watch.watch([])
    assert not pidfds()


def test_deaths_together_make_one_wake(pipe: Pipe) -> None:
    """supervisord reaps all its dead children in one pass: a burst of
    deaths is one call, not one each (200 calls took 25 s in a burst)."""
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(5)]
    watch = DeathWatch(pipe.wake)
    watch.watch(c.pid for c in children)
    for c in children:
        c.kill()
        c.wait()
    watch.wait_for_input(pipe.read_fd)
    assert pipe.wakes == 1 and not pidfds()


def test_only_the_running_are_watched(pipe: Pipe) -> None:
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    watch = DeathWatch(pipe.wake)
    try:
        watch.watch(c.pid for c in children)
        assert sorted(pidfds().values()) == sorted(c.pid for c in children)
        watch.watch([children[0].pid])
        assert list(pidfds().values()) == [children[0].pid]
    finally:
        watch.close()
        for c in children:
            c.kill()
            c.wait()
    assert pipe.wakes == 0 and not pidfds()


def test_a_program_dead_before_it_is_watched_wakes_at_once(pipe: Pipe) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    watch = DeathWatch(pipe.wake)
    watch.watch([child.pid])  # ESRCH: its event is due
    assert pipe.wakes == 1


def test_a_failed_wake_is_said_once_and_input_still_comes(caplog: pytest.LogCaptureFixture) -> None:
    pipe = Pipe(fail=True)
    try:
        watch = DeathWatch(pipe.wake)
        for _ in range(2):
            child = subprocess.Popen(["true"])
            watch.watch([child.pid])
            child.wait()
            watch.wait_for_input(pipe.read_fd)
            os.read(pipe.read_fd, 10)
        assert pipe.wakes == 2
        assert [r.message for r in caplog.records if "cannot wake" in r.message] == [
            "cannot wake supervisord (refused): this death is reported at its pace"
        ]
    finally:
        pipe.close()


def test_without_a_wake_nothing_is_watched(pipe: Pipe) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        watch = DeathWatch(None)
        watch.watch([child.pid])
        assert not pidfds()
        os.write(pipe.write_fd, b"x")
        watch.wait_for_input(pipe.read_fd)  # still the way stdin is read
    finally:
        child.kill()
        child.wait()


def test_the_last_words_are_taken_once_supervisord_closed_the_pipes_before_it_is_asked(pipe: Pipe) -> None:
    """This test plays supervisord: it holds the read end of the child's
    stdout, and closes it only a moment after the child died (as supervisord
    does when it reaps it); the dead are told of only then, and before the
    request that lets supervisord start them again."""
    child = subprocess.Popen(["sh", "-c", "read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    order: list[str] = []

    def dead(pids: list[int]) -> None:
        order.append("dead: pipe closed" if child.stdout is None or child.stdout.closed else "dead: pipe open")

    def wake(connected: Callable[[], None]) -> None:
        connected()
        order.append("asked")
        pipe.wake(lambda: None)

    watch = DeathWatch(wake, dead, supervisord=os.getpid())
    watch.watch([child.pid])
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()  # it ends
    child.wait()
    timer = threading.Timer(0.01, child.stdout.close)  # "reaped" 10 ms later
    timer.start()
    watch.wait_for_input(pipe.read_fd)
    timer.join()
    assert order == ["dead: pipe closed", "asked"]


def test_where_supervisords_fds_cannot_be_read_the_last_words_wait_for_the_reaping(pipe: Pipe) -> None:
    """supervisord that changed its user at start is undumpable: its fds are
    not Navi's to look at.  Then the reaping (by this test, 10 ms after the
    death) is what Navi waits for."""
    child = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE)
    seen: list[bool] = []

    def wake(connected: Callable[[], None]) -> None:
        connected()
        pipe.wake(lambda: None)

    def dead(pids: list[int]) -> None:
        seen.append(os.path.exists(f"/proc/{child.pid}"))  # a zombie is there until it is reaped

    watch = DeathWatch(wake, dead, supervisord=2**22 + 1)  # no such pid
    watch.watch([child.pid])
    child.kill()
    timer = threading.Timer(0.01, child.wait)
    timer.start()
    watch.wait_for_input(pipe.read_fd)
    timer.join()
    assert seen == [False]  # reaped before the dead were told of
    assert child.stdout is not None
    child.stdout.close()
