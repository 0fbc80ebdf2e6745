"""A program's last words: the pure part (lastwords.py: a window of a log
file -> lines, the summary's line, where supervisord writes each stream) and
the read of a real log file without trusting it (childlog.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener import childlog
from navi.listener.lastwords import (
    MAX_BYTES,
    MAX_LINES,
    REDIRECTED,
    SUMMARY_CHARS,
    Window,
    last_line,
    output,
    tail,
    where,
)
from navi.notification import Output, StreamTail
from tests.helpers import examples

# ---- a window -> its last lines -----------------------------------------------------------

# Bytes as hostile programs write them: newlines and carriage returns, NULs,
# escape sequences, stray and truncated UTF-8, long runs.
PIECES = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b"\x00", b"\x1b[31m", b"\x1b]0;t\x07", b"\xff", b"\xe2\x82", b"\xe2\x82\xac", b"\xc3"]
)
HOSTILE = st.lists(st.one_of(PIECES, st.binary(max_size=40), st.binary(min_size=200, max_size=2000)), max_size=30).map(
    b"".join
)


def reference(data: bytes) -> list[str]:
    """All the lines of ``data``, decoded as tail() decodes them."""
    lines = data.decode("utf-8", "replace").replace("\x00", "\ufffd").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def check_bounds(t: StreamTail) -> None:
    assert t.unavailable is None
    assert len(t.lines) <= MAX_LINES
    assert len("\n".join(t.lines).encode("utf-8")) <= MAX_BYTES  # strict: valid str, no surrogates
    assert not any("\x00" in line or "\n" in line for line in t.lines)


@settings(max_examples=examples(400))
@given(data=HOSTILE, whole=st.booleans())
def test_any_bytes_give_at_most_40_lines_of_4_kib(data: bytes, whole: bool) -> None:
    t = tail(Window("/log", data, whole))
    check_bounds(t)
    assert t.file == "/log"
    full = reference(data)
    if not t.cut:  # all of it, exactly
        assert whole and t.lines == full
        return
    # The end of it: whole lines, but for the first, which may be the end of one.
    if t.lines:
        rest = t.lines[1:]
        assert full[len(full) - len(rest) :] == rest
        assert full[len(full) - len(t.lines)].endswith(t.lines[0])


@settings(max_examples=examples(200))
@given(lines=st.lists(st.text(st.characters(blacklist_characters="\n\r\x00"), max_size=20), max_size=MAX_LINES))
def test_what_fits_is_kept_as_it_was_written(lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")
    if len(data) > MAX_BYTES:
        return
    t = tail(Window("/log", data))
    assert t.cut is False
    assert t.lines == [line.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for line in lines]


def test_more_than_40_lines_keeps_the_last_40() -> None:
    t = tail(Window("/log", b"".join(b"line %d\n" % i for i in range(100))))
    assert t.lines == [f"line {i}" for i in range(60, 100)]
    assert t.cut is True


def test_a_window_inside_the_file_drops_its_partial_first_line() -> None:
    t = tail(Window("/log", b"nd of a line\nsecond\nthird\n", whole=False))
    assert t.lines == ["second", "third"]
    assert t.cut is True


def test_a_window_inside_one_long_line_keeps_its_end() -> None:
    line = b"x" * (10 << 20) + b" the end"  # 10 MB, no newline
    t = tail(Window("/log", line[-MAX_BYTES:], whole=False))
    assert len(t.lines) == 1 and t.lines[0].endswith(" the end") and len(t.lines[0]) == MAX_BYTES
    assert t.cut is True
    # The whole line handed over (as it never is by childlog): its end all the same.
    assert tail(Window("/log", line)).lines == t.lines


def test_a_window_that_starts_inside_a_character_does_not_show_half_of_it() -> None:
    euro = "€".encode()  # 3 bytes
    t = tail(Window("/log", euro[1:] + "ends here €".encode(), whole=False))
    assert t.lines == ["ends here €"]


def test_replacement_characters_count_in_utf_8_bytes() -> None:
    # Each invalid byte, and each NUL, becomes U+FFFD: 3 bytes of UTF-8.
    for data in (b"\xff" * MAX_BYTES, b"\x00" * MAX_BYTES, b"ok\n" + b"\xff\n" * 40):
        t = tail(Window("/log", data))
        check_bounds(t)
        assert t.lines and set(t.lines[-1]) == {"\ufffd"}
    t = tail(Window("/log", b"\xff" * MAX_BYTES))
    assert t.cut is True and len(t.lines[0]) == MAX_BYTES // 3


def test_invalid_utf_8_and_nul_are_replaced() -> None:
    t = tail(Window("/log", b"caf\xe9 \x00ok\n\xf0\x9f\n"))
    assert t.lines == ["caf\ufffd \ufffdok", "\ufffd"]
    assert t.cut is False


def test_crlf_lines() -> None:
    assert tail(Window("/log", b"one\r\ntwo\r\n")).lines == ["one", "two"]
    assert tail(Window("/log", b"no newline at the end\r")).lines == ["no newline at the end"]


def test_an_empty_window() -> None:
    assert tail(Window("/log", b"")) == StreamTail(lines=[], file="/log", cut=False, unavailable=None)


def test_an_unavailable_window_says_why() -> None:
    t = tail(Window("/log", unavailable="/log is a symbolic link: not followed"))
    assert t == StreamTail(lines=[], file="/log", cut=False, unavailable="/log is a symbolic link: not followed")


# ---- the line for the summary -------------------------------------------------------------


def words(stderr: bytes, stdout: bytes = b"", stderr_unavailable: Optional[str] = None) -> Output:
    return output(Window("/err", stderr, unavailable=stderr_unavailable), Window("/out", stdout), at_death=True)


def test_the_last_non_empty_line_of_stderr() -> None:
    out = words(b"Starting\nError: Cannot find module 'express'\n\n   \n", b"stdout's own\n")
    assert last_line(out) == "Error: Cannot find module 'express'"
    assert out.at_death is True


def test_stdout_when_stderr_goes_there() -> None:
    out = words(b"", b"one\nlast words\n", stderr_unavailable="stderr goes to stdout (redirect_stderr=true)")
    assert last_line(out) == "last words"


def test_not_stdout_when_stderr_cannot_be_read() -> None:
    # stdout's last line is then no error message: "GET /health 200".
    for why in ("/err is a symbolic link: not followed", "stderr_logfile=NONE: supervisord keeps no log of it"):
        assert last_line(words(b"", b"GET /health 200\n", stderr_unavailable=why)) is None


def test_no_line_to_say() -> None:
    assert last_line(None) is None
    assert last_line(words(b"", b"stdout only\n")) is None
    assert last_line(words(b"\n\x1b[0m\n\t\n")) is None


def test_a_progress_line_shows_its_last_part() -> None:
    assert last_line(words(b"downloading 10%\rdownloading 60%\rdownloading 100%\n")) == "downloading 100%"
    assert last_line(words(b"10%\r20%\r\n")) == "20%"
    # Erased to the end of the line: the terminal shows an empty line, so the one before counts.
    assert last_line(words(b"Error: gave up\nwaiting 5 s\r\x1b[K\n")) == "Error: gave up"


def test_escape_sequences_and_control_characters_are_left_out() -> None:
    out = words(b"\x1b[1;31mError:\x1b[0m \x1b]0;title\x07disk\tfull\x08\x7f \x1b(B\x1b[mnow\x1b(0\n")
    assert last_line(out) == "Error: disk full now"


def test_text_direction_and_invisible_characters_are_left_out() -> None:
    out = words("pay \u202eevil\u202c \u200bnow\ufeff \U000e0041\n".encode())
    line = last_line(out)
    assert line is not None and line.isprintable()
    assert line == "pay evil now"


def test_a_long_line_is_cut_to_200_characters() -> None:
    line = last_line(words(b"E" * 10000 + b"\n"))
    assert line == "E" * (SUMMARY_CHARS - 1) + "\u2026"


ESCAPES = st.sampled_from(
    ["\x1b[31m", "\x1b[0m", "\x1b[2K", "\x1b]0;x\x07", "\x1b]8;;http://a\x1b\\", "\x1b(B", "\x07"]
)
WORDS = st.lists(st.text("abcxyzÄ€:'.-0123456789", min_size=1, max_size=10), min_size=1, max_size=8)


@settings(max_examples=examples(200))
@given(words_=WORDS, escapes=st.lists(ESCAPES, max_size=8), where_=st.lists(st.integers(0, 100), max_size=8))
def test_escapes_anywhere_leave_the_words(words_: list[str], escapes: list[str], where_: list[int]) -> None:
    text = " ".join(words_)
    for escape, at in zip(escapes, where_):
        at = min(at, len(text))
        while 0 < at < len(text) and not (text[at - 1] == " " or text[at] == " "):
            at += 1  # between two words, or at a word's edge
        text = text[:at] + escape + text[at:]
    expected = " ".join(words_)
    assert last_line(words(text.encode() + b"\n")) == (
        expected if len(expected) <= SUMMARY_CHARS else expected[: SUMMARY_CHARS - 1] + "\u2026"
    )


@settings(max_examples=examples(400))
@given(stderr=HOSTILE, stdout=HOSTILE, redirected=st.booleans())
def test_a_summary_line_is_printable_and_short(stderr: bytes, stdout: bytes, redirected: bool) -> None:
    line = last_line(words(stderr, stdout, REDIRECTED if redirected else None))
    if line is not None:
        assert line and line.isprintable() and "\x1b" not in line
        assert len(line) <= SUMMARY_CHARS
        assert line == line.strip()


# ---- where each stream goes ---------------------------------------------------------------

# As getAllConfigInfo reports them: supervisord's None is "none", an AUTO
# log is named by then (a path under childlogdir).
AUTO_OUT = "/mnt/log/web-stdout---supervisor-x1y2z3.log"
CONFIG = {
    "name": "web",
    "group": "web",
    "redirect_stderr": False,
    "stdout_logfile": AUTO_OUT,
    "stdout_syslog": False,
    "stderr_logfile": "/mnt/log/web-stderr.log",
    "stderr_syslog": False,
}


def test_where_both_streams_have_a_file() -> None:
    assert where(CONFIG, "stdout").file == AUTO_OUT and where(CONFIG, "stdout").unavailable is None
    assert where(CONFIG, "stderr").file == "/mnt/log/web-stderr.log" and where(CONFIG, "stderr").unavailable is None


def test_where_stderr_is_redirected() -> None:
    config = {**CONFIG, "redirect_stderr": True, "stderr_logfile": "none"}
    assert where(config, "stderr").file is None
    assert where(config, "stderr").unavailable == "stderr goes to stdout (redirect_stderr=true)"
    assert where(config, "stdout").file == AUTO_OUT
    # Even where a file is also named for it: supervisord writes nothing there.
    assert where({**CONFIG, "redirect_stderr": True}, "stderr").file is None


@pytest.mark.parametrize("none", ["none", "NONE", "", None])
def test_where_a_stream_has_no_log(none: Optional[str]) -> None:
    config = {**CONFIG, "stdout_logfile": none}
    assert where(config, "stdout").file is None
    assert where(config, "stdout").unavailable == "stdout_logfile=NONE: supervisord keeps no log of it"


def test_where_a_stream_goes_to_syslog_only() -> None:
    config = {**CONFIG, "stderr_logfile": "none", "stderr_syslog": True}
    assert where(config, "stderr").file is None
    assert where(config, "stderr").unavailable == "stderr goes to syslog only (stderr_syslog=true, stderr_logfile=NONE)"
    # To syslog and to a file: the file.
    assert where({**CONFIG, "stderr_syslog": True}, "stderr").file == "/mnt/log/web-stderr.log"


def test_where_an_auto_log_is_not_named_yet() -> None:
    # getAllConfigInfo says "auto" for a log supervisord has not named.
    found = where({**CONFIG, "stdout_logfile": "auto"}, "stdout")
    assert found.file is None and found.unavailable is not None and "AUTO" in found.unavailable


def test_where_from_a_config_missing_its_keys() -> None:
    assert where({}, "stdout").file is None and where({}, "stderr").file is None
    assert where({"stdout_logfile": 7}, "stdout").file is None


# ---- the real file: childlog --------------------------------------------------------------


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fails (rather than hangs) when the block takes longer: a read that
    blocks is interrupted by SIGALRM."""

    def expired(signum: int, frame: Optional[FrameType]) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_regular_file(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    log.write_bytes(b"one\ntwo\n")
    assert childlog.read_end(str(log)) == Window(str(log), b"one\ntwo\n", True)


def test_a_file_larger_than_4_kib_gives_its_end(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    data = b"".join(b"line %05d\n" % i for i in range(1000))
    log.write_bytes(data)
    window = childlog.read_end(str(log))
    assert window == Window(str(log), data[-MAX_BYTES:], False)
    t = tail(window)
    assert t.lines[-1] == "line 00999" and len(t.lines) == MAX_LINES and t.cut is True


def test_a_10_mb_line(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    with log.open("wb") as f:
        f.write(b"x" * (10 << 20) + b"the end")
    window = childlog.read_end(str(log))
    assert len(window.data) == MAX_BYTES and window.whole is False
    t = tail(window)
    assert len(t.lines) == 1 and t.lines[0].endswith("xthe end") and t.cut is True


def test_a_missing_file(tmp_path: Path) -> None:
    log = str(tmp_path / "gone.log")
    assert childlog.read_end(log) == Window(log, unavailable=f"{log} does not exist (rotated away, or never written)")


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the secret\n")
    log = tmp_path / "web-stderr.log"
    log.symlink_to(secret)
    window = childlog.read_end(str(log))
    assert window == Window(str(log), unavailable=f"{log} is a symbolic link: not followed")
    assert "secret" not in repr(tail(window).lines)


def test_a_fifo_never_blocks(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    os.mkfifo(log)
    with within(5):
        window = childlog.read_end(str(log))
    assert window == Window(str(log), unavailable=f"{log} is not a regular file: not read")


def test_a_fifo_with_a_writer_never_blocks(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    os.mkfifo(log)
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)  # so that a writer can open it
    writer = os.open(log, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"from the pipe\n")
        with within(5):
            window = childlog.read_end(str(log))
        assert window.unavailable == f"{log} is not a regular file: not read" and window.data == b""
    finally:
        os.close(writer)
        os.close(reader)


def test_a_directory(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    log.mkdir()
    assert childlog.read_end(str(log)) == Window(str(log), unavailable=f"{log} is not a regular file: not read")


def test_a_socket(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(log))
        assert childlog.read_end(str(log)) == Window(str(log), unavailable=f"{log} is not a regular file: not read")


def test_after_a_rotation_the_end_of_the_backup_comes_first(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    # supervisord rotates after a write, wherever it ends: mid-line here.
    Path(f"{log}.1").write_bytes(b"older\n" * 2000 + b"Error: half of")
    log.write_bytes(b" a line\nlast\n")
    window = childlog.read_end(str(log))
    assert len(window.data) == MAX_BYTES and window.data.endswith(b"older\nError: half of a line\nlast\n")
    assert window.whole is False
    assert tail(window).lines[-3:] == ["older", "Error: half of a line", "last"]


def test_small_rotated_logs_are_read_back_to_4_kib(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    # stderr_logfile_maxbytes=1KB: each backup holds about 1 KB.
    backups = [b"".join(b"backup %d line %d %s\n" % (n, i, b"." * 80) for i in range(10)) for n in range(1, 8)]
    for n, data in enumerate(backups, 1):
        Path(f"{log}.{n}").write_bytes(data)
    log.write_bytes(b"current\n")
    everything = b"".join(reversed(backups)) + b"current\n"
    window = childlog.read_end(str(log))
    assert window == Window(str(log), everything[-MAX_BYTES:], False)
    # Fewer than 4 KiB in all: all of it, and nothing cut.
    Path(f"{log}.3").unlink()
    window = childlog.read_end(str(log))
    assert window == Window(str(log), backups[1] + backups[0] + b"current\n", True)
    t = tail(window)
    assert t.cut is False and len(t.lines) == 21 and t.lines[0].startswith("backup 2 line 0 ")


def test_a_file_of_exactly_4_kib_with_a_backup_is_cut(tmp_path: Path) -> None:
    log = tmp_path / "web-stderr.log"
    Path(f"{log}.1").write_bytes(b"older\n")
    log.write_bytes(b"y" * (MAX_BYTES - 1) + b"\n")
    window = childlog.read_end(str(log))
    assert window.data == b"y" * (MAX_BYTES - 1) + b"\n" and window.whole is False


@pytest.mark.parametrize("planted", ["symlink", "fifo", "directory"])
def test_a_planted_backup_is_not_read(tmp_path: Path, planted: str) -> None:
    log = tmp_path / "web-stderr.log"
    log.write_bytes(b"short\n")
    secret = tmp_path / "secret"
    secret.write_text("the secret\n")
    backup = Path(f"{log}.1")
    if planted == "symlink":
        backup.symlink_to(secret)
    elif planted == "fifo":
        os.mkfifo(backup)
    else:
        backup.mkdir()
    with within(5):
        window = childlog.read_end(str(log))
    assert window.data == b"short\n" and window.unavailable is None
