"""A program's last words: the end of what it wrote on stdout and stderr
before it died, made safe to carry in a notification.  No I/O.

The text is the application's own, so it is hostile input: any bytes, a
line of any length, NULs, escape sequences meant for a terminal.  The lines
keep what the program wrote, with invalid UTF-8 and NULs replaced; the one
line that goes into a summary also loses every control character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from navi.notification import Output, StreamTail

MAX_LINES = 40
MAX_BYTES = 4096  # of each stream
SUMMARY_CHARS = 200

# ANSI escape sequences (CSI, OSC, two-character ones), then any other
# C0/C1 control character: none of them belongs in a line a person reads.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_])|[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Window:
    """The end of one log file, as read: at most MAX_BYTES, or why not."""

    file: Optional[str]
    data: bytes = b""
    whole: bool = True  # data is all there was (else it starts inside the file)
    unavailable: Optional[str] = None


@dataclass(frozen=True)
class Where:
    """Where supervisord writes one stream of a program: a file, or why none."""

    file: Optional[str]
    unavailable: Optional[str] = None


def where(config: dict[str, object], stream: str) -> Where:
    """Where ``stream`` (stdout or stderr) goes, from supervisord's
    ``getAllConfigInfo`` entry for the program."""
    if stream == "stderr" and config.get("redirect_stderr"):
        return Where(None, "stderr goes to stdout (redirect_stderr=true)")
    path = config.get(f"{stream}_logfile")
    if isinstance(path, str) and path and path.upper() != "NONE":
        return Where(path)
    if config.get(f"{stream}_syslog"):
        return Where(None, f"{stream} goes to syslog only ({stream}_syslog=true, {stream}_logfile=NONE)")
    return Where(None, f"{stream}_logfile=NONE: supervisord keeps no log of it")


def tail(window: Window) -> StreamTail:
    """The last lines of a window, at most MAX_LINES of its MAX_BYTES."""
    if window.unavailable is not None:
        return StreamTail(lines=[], file=window.file, cut=False, unavailable=window.unavailable)
    data = window.data[-MAX_BYTES:]
    whole = window.whole and len(data) == len(window.data)
    text = data.decode("utf-8", "replace").replace("\x00", "\ufffd")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    partial = not whole and len(lines) > 1
    if partial:
        lines.pop(0)  # the end of a line that began before the window
    cut = not whole
    if len(lines) > MAX_LINES:
        lines, cut = lines[-MAX_LINES:], True
    return StreamTail(lines=[line.rstrip("\r") for line in lines], file=window.file, cut=cut, unavailable=None)


def output(stderr: Window, stdout: Window, at_death: bool) -> Output:
    return Output(stderr=tail(stderr), stdout=tail(stdout), at_death=at_death)


def last_line(out: Optional[Output]) -> Optional[str]:
    """The last non-empty line of stderr (of stdout, where stderr goes
    there), fit for a summary: no control characters, at most SUMMARY_CHARS."""
    if out is None:
        return None
    stream = out.stdout if out.stderr.unavailable is not None else out.stderr
    for line in reversed(stream.lines):
        # What a terminal shows of a line rewritten with \r: its last part.
        clean = " ".join(_ESCAPES.sub(" ", line.rsplit("\r", 1)[-1]).split())
        if clean:
            return clean if len(clean) <= SUMMARY_CHARS else clean[: SUMMARY_CHARS - 1] + "…"
    return None
