"""Watch over inotify_simple where inotify fails: no instance (polling, in
one line), no watch left for a directory (that one polled), and a queue
that overflowed (a look everywhere)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any, Optional

import inotify_simple  # type: ignore[import-untyped]
import pytest

from navi.consumer import watch as watch_module
from navi.consumer.watch import Notice, Watch
from tests.helpers import WAIT, Collector, count, inotify_works, name_of, publish, sample


def start(directory: Path, collectors: list[Collector]) -> Collector:
    c = Collector(Watch([str(directory)], interval=0.1, rescan=0.2))
    collectors.append(c)
    c.wait_for(
        lambda items: any(isinstance(i, Notice) and i.text.startswith("watching") for i in items), "the watch to start"
    )
    return c


def test_no_inotify_instance_means_polling_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collectors: list[Collector]
) -> None:
    def refused(**kwargs: Any) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(inotify_simple, "INotify", refused)
    c = start(tmp_path, collectors)
    publish(tmp_path, 1)
    c.wait_for(count(1), "the notification, by polling")
    c.stop()
    assert c.notices() == [
        "inotify_init1: Too many open files (fs.inotify.max_user_instances): polling every 0.1 s instead",
        f"watching {tmp_path} (polling every 0.1 s)",
    ]
    assert [f.notification for f in c.found()] == [sample(1)]


def test_no_watch_left_polls_that_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collectors: list[Collector]
) -> None:
    if not inotify_works():
        pytest.skip("no inotify here")
    real = watch_module.open_inotify

    def full() -> Any:
        ino = real()

        def add_watch(path: str, mask: int) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ino, "add_watch", add_watch)
        return ino

    monkeypatch.setattr(watch_module, "open_inotify", full)
    c = start(tmp_path, collectors)
    publish(tmp_path, 1)
    c.wait_for(count(1), "the notification, by polling")
    c.stop()
    assert c.notices() == [
        f"{tmp_path}: inotify_add_watch: No space left on device (fs.inotify.max_user_watches): polling it every 0.1 s",
        f"watching {tmp_path} (polling every 0.1 s)",
    ]


class _Overflowing:
    """A real inotify instance whose queue overflows at will: events are
    lost while ``losing``, then one IN_Q_OVERFLOW says so."""

    def __init__(self) -> None:
        self.real = inotify_simple.INotify(nonblocking=True)
        self.losing = False
        self.lost: list[str] = []
        self.overflowed = False

    def fileno(self) -> int:
        return int(self.real.fileno())

    def add_watch(self, path: str, mask: int) -> int:
        return int(self.real.add_watch(path, mask))

    def rm_watch(self, wd: int) -> None:
        self.real.rm_watch(wd)

    def read(self, timeout: Optional[int] = None) -> list[Any]:
        try:
            events = list(self.real.read(timeout=timeout))
        except BlockingIOError:  # inotify_simple 1.3.0, when nothing is queued
            events = []
        if self.losing:
            self.lost += [e.name for e in events]
            return []
        if self.overflowed:
            self.overflowed = False
            return [inotify_simple.Event(-1, inotify_simple.flags.Q_OVERFLOW, 0, ""), *events]
        return events

    def close(self) -> None:
        self.real.close()


def test_an_overflowed_queue_means_a_look_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collectors: list[Collector]
) -> None:
    if not inotify_works():
        pytest.skip("no inotify here")
    made: list[_Overflowing] = []

    def overflowing() -> _Overflowing:
        made.append(_Overflowing())
        return made[-1]

    monkeypatch.setattr(watch_module, "open_inotify", overflowing)
    first, second = tmp_path / "c1", tmp_path / "c2"
    first.mkdir()
    second.mkdir()
    c = Collector(Watch([str(tmp_path / "c*")], interval=0.1, rescan=0.2))
    collectors.append(c)
    c.wait_for(lambda items: sum(isinstance(i, Notice) for i in items) >= 2, "both directories watched")
    assert c.notices() == [f"watching {first} (inotify)", f"watching {second} (inotify)"]
    (ino,) = made
    ino.losing = True
    publish(first, 1)
    deadline = time.monotonic() + WAIT
    while name_of(1) not in ino.lost:  # the watch read them: gone
        assert time.monotonic() < deadline, "the events were never read"
        time.sleep(0.01)
    time.sleep(0.5)  # a few more turns of the loop: nothing comes without the events
    assert c.found() == []
    ino.losing, ino.overflowed = False, True
    c.wait_for(count(1), "the notification, found by the look everywhere")
    publish(second, 2)  # and events come again
    c.wait_for(count(2), "the next one")
    c.stop()
    assert [f.notification for f in c.found()] == [sample(1), sample(2)]
