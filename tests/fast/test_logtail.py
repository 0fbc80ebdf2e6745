from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener.mainlog import FileLog, LogTail, LogUnavailable, RpcLog, new_lines
from navi.listener.procs import Identity, identity
from tests.helpers import examples


class GrowingLog:
    """A log file as readLog(-n, 0) shows it, with rotation."""

    def __init__(self) -> None:
        self.data = b""
        self.since_calls = 0

    def write(self, text: str) -> None:
        self.data += text.encode()

    def rotate(self) -> None:
        self.data = b""

    def tail(self, size: int) -> str:
        return self.data[-size:].decode("utf-8", "replace")

    def since(self, offset: int) -> str:
        self.since_calls += 1
        try:
            return self.data[offset:].decode()
        except UnicodeDecodeError:  # as supervisord fails, with an HTTP 500
            raise LogUnavailable("500 Internal Server Error") from None


def test_first_read_takes_the_recent_past() -> None:
    log = GrowingLog()
    log.write("one\ntwo\nthree\n")
    assert LogTail(log, "test").read_new() == "one\ntwo\nthree\n"


def test_only_new_complete_lines() -> None:
    log = GrowingLog()
    reader = LogTail(log, "test")
    log.write("a\nb\n")
    assert reader.read_new() == "a\nb\n"
    assert reader.read_new() == ""
    log.write("c\npartial")
    assert reader.read_new() == "c\n"
    log.write(" line\n")
    assert reader.read_new() == "partial line\n"


def test_a_repeated_line_is_new() -> None:
    log = GrowingLog()
    reader = LogTail(log, "test")
    log.write("a\nx\n")
    reader.read_new()
    log.write("x\n")
    assert reader.read_new() == "x\n"
    log.write("x\n")
    assert reader.read_new() == "x\n"


def test_rotation_makes_everything_new() -> None:
    log = GrowingLog()
    reader = LogTail(log, "test")
    log.write("old 1\nold 2\n")
    reader.read_new()
    log.rotate()
    log.write("new 1\n")
    assert reader.read_new() == "new 1\n"


def test_after_seeing_the_whole_log_it_reads_from_its_offset() -> None:
    log = GrowingLog()
    reader = LogTail(log, "test")
    log.write("a\n")
    reader.read_new()
    log.write("wëb\nc\n")
    assert reader.read_new() == "wëb\nc\n"
    assert reader.read_new() == ""
    assert log.since_calls == 2


def test_a_long_burst_widens_the_tail() -> None:
    log = GrowingLog()
    reader = LogTail(log, "test")
    log.write("start\n")
    reader.read_new()
    burst = "".join(f"line {i:06d} {'x' * 80}\n" for i in range(3000))  # ~270 KB, more than one tail
    log.write(burst)
    assert reader.read_new() == burst


def test_new_lines_needs_more_when_the_anchor_is_out_of_sight() -> None:
    assert new_lines("tial\nb\nc\n", "a", whole=False) == (None, "a")
    assert new_lines("a\nb\nc\n", "a", whole=True) == ("b\nc\n", "a\nb\nc")
    assert new_lines("xa\nb\n", "a", whole=True) == ("xa\nb\n", "xa\nb")  # "xa" is not the line "a"


@settings(max_examples=examples(200))
@given(st.lists(st.tuples(st.lists(st.text(alphabet="abcé é\t", max_size=20), max_size=5), st.booleans()), max_size=20))
def test_every_line_is_read_exactly_once(writes: list[tuple[list[str], bool]]) -> None:
    # Each line starts with a distinct stamp, as supervisord's carry the time
    # to the millisecond; the text after it repeats freely.
    log = GrowingLog()
    reader = LogTail(log, "test")
    seen, expected, stamp = "", "", 0
    for lines, rotate in writes:
        if rotate:
            seen += reader.read_new()  # caught up before the rotation
            log.rotate()
        text = ""
        for line in lines:
            stamp += 1
            text += f"{stamp:06d} {line}\n"
        log.write(text)
        expected += text
        seen += reader.read_new()
    assert seen == expected


def test_file_tail(tmp_path: Path) -> None:
    path = tmp_path / "supervisord.log"
    path.write_text("a\nb\n")
    reader = LogTail(FileLog(str(path)), str(path))
    assert reader.read_new() == "a\nb\n"
    with path.open("a") as f:
        f.write("c\n")
    assert reader.read_new() == "c\n"


def test_file_tail_missing(tmp_path: Path) -> None:
    with pytest.raises(LogUnavailable, match="No such file"):
        LogTail(FileLog(str(tmp_path / "none.log")), "x").read_new()


def test_rpc_unreachable(tmp_path: Path) -> None:
    with pytest.raises(LogUnavailable, match="cannot reach supervisord"):
        RpcLog(f"unix://{tmp_path}/no.sock").tail(100)
    with pytest.raises(LogUnavailable, match="neither unix:// nor http://"):
        RpcLog("ftp://x")


def test_identity_of_this_process() -> None:
    me = identity(os.getpid())
    assert me.started is not None and me.key is not None
    assert timedelta(0) <= datetime.now(timezone.utc) - me.started < timedelta(hours=2)
    assert me.key == identity(os.getpid()).key  # stable
    assert f":{os.getpid()}:" in me.key
    assert identity(os.getpid(), "/nonexistent") == Identity(None, None)


def test_file_tail_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "supervisord.log"
    os.mkfifo(fifo)
    with pytest.raises(LogUnavailable, match="not a regular file"):
        FileLog(str(fifo)).tail(100)  # would block forever without O_NONBLOCK
