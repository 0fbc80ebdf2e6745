"""What an entry in a notifications directory is, in which order to take the
entries, and under which names to claim them (pure: names, stat results and
bytes in; verdicts out).

The directory is shared with the application, which runs as Navi's user:
anything in it may have been planted.  Navi itself only ever publishes
whole, regular ``*.json`` files with one link, by ``link()`` (so a name it
published never changes), and writes dot-names for everything else.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

from navi import names
from navi.consumer.schema import InvalidNotification, parse
from navi.names import MAX_SIZE
from navi.notification import Notification

# Navi links its temporary file to the final name, then unlinks the
# temporary: for that moment the file has two links.  Longer than this, the
# second link is someone else's.
LINK_GRACE = 10.0


class FileKind(Enum):
    FILE = "regular file"
    SYMLINK = "symbolic link (never followed)"
    DIRECTORY = "directory"
    FIFO = "FIFO"
    SOCKET = "socket"
    DEVICE = "device node (never opened)"
    OTHER = "file of an unknown kind"


def kind_of(mode: int) -> FileKind:
    """The kind of file an ``st_mode`` says."""
    for test, kind in (
        (stat.S_ISREG, FileKind.FILE),
        (stat.S_ISLNK, FileKind.SYMLINK),
        (stat.S_ISDIR, FileKind.DIRECTORY),
        (stat.S_ISFIFO, FileKind.FIFO),
        (stat.S_ISSOCK, FileKind.SOCKET),
        (stat.S_ISCHR, FileKind.DEVICE),
        (stat.S_ISBLK, FileKind.DEVICE),
    ):
        if test(mode):
            return kind
    return FileKind.OTHER


@dataclass(frozen=True)
class Entry:
    """A directory entry as ``lstat`` (or ``fstat`` of what was opened) saw it."""

    name: str
    kind: FileKind
    size: int
    links: int
    changed: float  # st_ctime: when the inode last changed (a link, a rename, a write)


@dataclass(frozen=True)
class Ignore:
    """Not a notification's name: a dot-name (Navi's temporary and state
    files, a consumer's own directories) or not ``*.json``.  Left alone."""

    why: str


@dataclass(frozen=True)
class Wait:
    """Not settled yet: look again shortly."""

    why: str


@dataclass(frozen=True)
class Reject:
    """Not a notification, and why (one line)."""

    reason: str


@dataclass(frozen=True)
class Open:
    """Worth opening: read at most ``MAX_SIZE + 1`` bytes and :func:`judge` them."""


@dataclass(frozen=True)
class Accept:
    notification: Notification
    document: dict[str, Any]  # the file's object as written, keys this reader does not know included


Look = Union[Ignore, Wait, Reject, Open]
Verdict = Union[Accept, Reject]


def printable(name: str) -> bool:
    """Plain UTF-8 with no control or formatting characters (names Navi
    writes are ASCII), so that no output is garbled or spoofed by it."""
    return name.isprintable()


def shown(text: str) -> str:
    """``text`` with anything unprintable escaped, for a person's screen:
    a hostile file must not move the cursor or fake a line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _shape(entry: Entry) -> Union[str, None]:
    if entry.kind is not FileKind.FILE:
        return f"a {entry.kind.value}, not a regular file"
    if entry.size > MAX_SIZE:
        return f"{entry.size} bytes, more than any notification (at most {MAX_SIZE})"
    return None


def examine(entry: Entry, now: float) -> Look:
    """What to do with an entry, from its name and ``lstat`` alone (before
    anything opens, claims or moves it)."""
    why = names.skipped(entry.name)
    if why is not None:
        return Ignore(why)
    if not printable(entry.name):
        return Reject("its name has unprintable characters (Navi's names are plain ASCII)")
    problem = _shape(entry)
    if problem is not None:
        return Reject(problem)
    if entry.links > 1:
        if now - entry.changed < LINK_GRACE:
            return Wait(f"{entry.links} links: a publication in progress")
        return Reject(f"{entry.links} hard links (Navi's files have one)")
    return Open()


def judge(opened: Entry, data: bytes, after: Entry) -> Verdict:
    """Whether what was read is a notification.  ``opened`` is ``fstat`` of
    the open file before reading, ``after`` the same once read: a file that
    changed in between is not trusted."""
    problem = _shape(opened)
    if problem is not None:
        return Reject(problem)
    if opened.links > 1:
        return Reject(f"{opened.links} hard links (Navi's files have one)")
    if len(data) > MAX_SIZE:
        return Reject(f"grew past {MAX_SIZE} bytes while being read")
    if (after.size, after.changed) != (opened.size, opened.changed) or len(data) != opened.size:
        return Reject("changed while being read (Navi never writes a published file)")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        return Reject(f"not UTF-8 (byte {e.start})")
    except (ValueError, RecursionError) as e:
        return Reject(f"not JSON: {str(e).splitlines()[0][:200]}")
    if not isinstance(document, dict):
        return Reject(f"JSON, but a {type(document).__name__}, not an object")
    try:
        return Accept(parse(data), document)
    except InvalidNotification as e:
        return Reject(f"not a Navi notification: {shown(str(e))[:300]}")
