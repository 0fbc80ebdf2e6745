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

# ANSI escape sequences: CSI; OSC and the other strings ended by BEL or ST;
# the rest, such as ESC ( B, which tput sgr0 writes.  None of them belongs in
# a line a person reads (nor does any other character that is not printable).
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~])")
_CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8's bytes after a character's first


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


REDIRECTED = "stderr goes to stdout (redirect_stderr=true)"


def where(config: dict[str, object], stream: str) -> Where:
    """Where ``stream`` (stdout or stderr) goes, from supervisord's
    ``getAllConfigInfo`` entry for the program."""
    if stream == "stderr" and config.get("redirect_stderr"):
        return Where(None, REDIRECTED)
    path = config.get(f"{stream}_logfile")
    if isinstance(path, str) and path.lower() == "auto":  # named when its program's group starts
        return Where(None, f"{stream}_logfile=AUTO: supervisord has not named its log yet")
    if isinstance(path, str) and path and path.lower() != "none":
        return Where(path)
    if config.get(f"{stream}_syslog"):
        return Where(None, f"{stream} goes to syslog only ({stream}_syslog=true, {stream}_logfile=NONE)")
    return Where(None, f"{stream}_logfile=NONE: supervisord keeps no log of it")


def tail(window: Window) -> StreamTail:
    """The last lines of a window: at most MAX_LINES, and MAX_BYTES once
    decoded (each byte replaced takes three)."""
    if window.unavailable is not None:
        return StreamTail(lines=[], file=window.file, cut=False, unavailable=window.unavailable)
    data = window.data[-MAX_BYTES:]
    whole = window.whole and len(data) == len(window.data)
    if not whole:  # the last bytes (at most 3) of a character that began before the window
        head = data[:3]
        data = data[len(head) - len(head.lstrip(_CONTINUATION)) :]
    encoded = data.decode("utf-8", "replace").replace("\x00", "\ufffd").encode()
    if len(encoded) > MAX_BYTES:
        encoded, whole = encoded[-MAX_BYTES:], False
    lines = encoded.decode("utf-8", "ignore").split("\n")  # ignore: the start of a character cut above
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not whole and len(lines) > 1:
        lines.pop(0)  # the end of a line that began before the window
    cut = not whole
    if len(lines) > MAX_LINES:
        lines, cut = lines[-MAX_LINES:], True
    return StreamTail(lines=[line.rstrip("\r") for line in lines], file=window.file, cut=cut, unavailable=None)


def output(stderr: Window, stdout: Window, at_death: bool) -> Output:
    return Output(stderr=tail(stderr), stdout=tail(stdout), at_death=at_death)


def last_line(out: Optional[Output]) -> Optional[str]:
    """The last non-empty line of stderr (of stdout, where stderr goes
    there), fit for a summary: printable only, at most SUMMARY_CHARS."""
    if out is None:
        return None
    stream = out.stdout if out.stderr.unavailable == REDIRECTED else out.stderr
    for line in reversed(stream.lines):
        # What a terminal shows of a line rewritten with \r: its last part.
        shown = _ESCAPES.sub(" ", line.rsplit("\r", 1)[-1])
        # Nor what it does not show: control characters, text direction
        # marks, invisible and unassigned characters.
        clean = " ".join("".join(c if c.isprintable() else " " for c in shown).split())
        if clean:
            return clean if len(clean) <= SUMMARY_CHARS else clean[: SUMMARY_CHARS - 1] + "…"
    return None
