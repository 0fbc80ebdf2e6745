from __future__ import annotations

import errno
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from navi.listener.spool import Spool, SpoolError
from navi.names import notification_name as file_name


def test_publish_writes_the_whole_file_and_no_temp(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    assert spool.publish("a.json", b'{"id": "x"}\n', "x") == "a.json"
    assert (tmp_path / "a.json").read_bytes() == b'{"id": "x"}\n'
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").stat().st_nlink == 1


def test_the_same_notification_twice_is_one_file(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    assert spool.publish("a.json", b'{"id": "x", "time": 1}', "x") == "a.json"
    # Delivered again after a restart: another time, the same id.
    assert spool.publish("a.json", b'{"id": "x", "time": 2}', "x") is None
    assert (tmp_path / "a.json").read_bytes() == b'{"id": "x", "time": 1}'
    assert os.listdir(tmp_path) == ["a.json"]


def test_names_sort_in_incident_order_and_hold_no_event_text() -> None:
    started = datetime(2026, 11, 24, 23, 0, tzinfo=timezone.utc)
    names = [file_name(started, serial) for serial in ("9", "10", "100", "2000")]
    assert names == sorted(names)
    assert names[0] == "20261124T230000.000000Z-000000000009.json"
    # A later supervisord's first serial sorts after the earlier one's last.
    assert file_name(started + timedelta(seconds=1), "1") > names[-1]


def test_stale_temp_files_of_a_killed_navi_are_removed(tmp_path: Path) -> None:
    alive = os.getppid()  # a live process that is not this one
    names = {
        "old": f".x.json.{alive}.1.tmp",  # an hour old: whoever has that pid now
        "fresh": f".y.json.{alive}.1.tmp",  # a live writer's
        "own": f".z.json.{os.getpid()}.1.tmp",  # this process's own
        "killed": f".w.json.{_ended_pid()}.2.tmp",  # its writer is gone
        "other": ".other",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    for key in ("old", "other"):
        os.utime(tmp_path / names[key], (time.time() - 7200, time.time() - 7200))
    Spool(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([names["fresh"], names["own"], names["other"]])


def _ended_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("plant", ["symlink", "fifo", "other file", "directory"])
def test_something_planted_at_the_final_name_is_left_alone(tmp_path: Path, plant: str) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    target = spool_dir / "a.json"
    if plant == "symlink":
        target.symlink_to(outside)
    elif plant == "fifo":
        os.mkfifo(target)  # opening it for reading without O_NONBLOCK would hang
    elif plant == "other file":
        target.write_bytes(b'{"id": "forged"}')
    else:
        target.mkdir()
    assert Spool(str(spool_dir)).publish("a.json", b'{"id": "x"}', "x") == "a.1.json"
    assert (spool_dir / "a.1.json").read_bytes() == b'{"id": "x"}'
    assert outside.read_bytes() == b"precious"
    assert sorted(os.listdir(spool_dir)) == ["a.1.json", "a.json"]


def test_links_planted_at_temp_names_are_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    for n in range(1, 4):  # the next temp names are predictable: plant them
        (spool_dir / f".a.json.{os.getpid()}.{n}.tmp").symlink_to(outside)
    assert Spool(str(spool_dir)).publish("a.json", b'{"id": "x"}', "x") == "a.json"
    assert outside.read_bytes() == b"precious"
    assert (spool_dir / "a.json").read_bytes() == b'{"id": "x"}'


def test_a_directory_swapped_for_a_link_is_noticed(tmp_path: Path) -> None:
    spool_dir, elsewhere = tmp_path / "spool", tmp_path / "elsewhere"
    spool_dir.mkdir()
    elsewhere.mkdir()
    spool = Spool(str(spool_dir))
    spool_dir.rename(tmp_path / "moved")
    spool_dir.symlink_to(elsewhere)
    with pytest.raises(SpoolError, match="was replaced"):
        spool.publish("a.json", b'{"id": "x"}', "x")
    assert os.listdir(elsewhere) == [] and os.listdir(tmp_path / "moved") == []


def test_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(SpoolError, match="link: not a directory"):
        Spool(str(tmp_path / "link"))


def test_missing_directory_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SpoolError) as info:
        Spool(str(tmp_path / "nope"))
    assert str(info.value) == f"notifications directory {tmp_path / 'nope'}: No such file or directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_unwritable_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(SpoolError, match="not writable"):
            Spool(str(tmp_path))
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("step", ["fsync", "link"])
def test_full_disk_is_an_error_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    spool = Spool(str(tmp_path))

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, step, full)
    with pytest.raises(SpoolError, match="disk or quota full"):
        spool.publish("a.json", b'{"id": "x"}', "x")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
