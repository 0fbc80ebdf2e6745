"""Reading and claiming the notifications in a directory Navi writes.

For the platform's side, which typically runs as root on the host and reads
the notification directories of many containers.  Everything in such a
directory may have been planted by the application (it runs as Navi's user
and can write there), so this module:

- opens the directory once, without following a symlink, and works relative
  to that fd;
- never follows a symlink, never opens anything but a regular file (a FIFO
  would block, a device node could act on being opened), and reads at most
  ``MAX_SIZE + 1`` bytes;
- validates every file against the published schema before handing it on.

Reading changes nothing.  Claiming a notification moves it, with one
``rename``, into a directory this consumer owns (Maildir's new -> cur): of
several consumers, exactly one wins each file, and the application cannot
touch it there.  A claimed entry that is not a notification is moved on into
``quarantine/`` in that directory, with a ``.reason`` file beside it.  A
consumer that is done with a claimed notification only later (``navi
forward``, once a receiver took it) moves it on likewise (``move_on``), and
finds what it had not finished at the top of the claim directory (``held``).

Example::

    from navi.consumer.inbox import Inbox, Found

    with Inbox("/mnt/notifications") as inbox:
        for item in inbox.claim_all():       # or inbox.scan() to only read
            if isinstance(item, Found):
                ship(item.document)           # the file's JSON object
            else:
                print(item.line(), file=sys.stderr)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

from navi import names
from navi.consumer import entries as core
from navi.consumer.entries import Accept, Entry, Ignore, Open, Wait, kind_of, shown
from navi.fdio import READ_UNTRUSTED, write_all
from navi.names import CLAIM_DIR, MAX_SIZE, QUARANTINE
from navi.notification import Notification

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH opens the inode without opening the file: a device's driver never
# sees it.  Linux only; elsewhere the file is opened (non-blocking) as is.
_PATH = getattr(os, "O_PATH", 0)


class ConsumerError(Exception):
    """One line a person can act on."""


@dataclass(frozen=True)
class Found:
    """A notification, valid against the schema."""

    directory: str  # the notifications directory, as given
    name: str  # its name there
    notification: Notification
    document: dict[str, Any]  # the file's object as written (keys this reader does not know included)
    claimed: Optional[str] = None  # where it is now, when this consumer claimed it

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.name)

    def json_line(self) -> str:
        """One line of JSON: where the file was (and is), and its content."""
        record = {"dir": self.directory, "file": self.path, "claimed": self.claimed, "notification": self.document}
        # ASCII only: a hostile string can neither break the line nor be
        # mis-decoded by whatever reads it.
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class Problem:
    """An entry that is not a notification (or could not be claimed)."""

    directory: str
    name: str
    reason: str
    quarantined: Optional[str] = None  # where it was moved to, when it was

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.name)

    def line(self) -> str:
        if self.quarantined:
            return f"quarantined {shown(self.path)} -> {shown(self.quarantined)}: {self.reason}"
        return f"skipped {shown(self.path)}: {self.reason}"


@dataclass(frozen=True)
class Pending:
    """An entry to look at again shortly (a publication in progress)."""

    directory: str
    name: str
    why: str


EntryResult = Union[Found, Problem, Pending]


def entry_of(name: str, st: os.stat_result) -> Entry:
    return Entry(name, kind_of(st.st_mode), st.st_size, st.st_nlink, st.st_ctime)


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _rename_noreplace_fallback(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    # Not atomic against another consumer claiming into the same directory
    # under the same name at the same moment; only a shared --claim-dir can.
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def _libc_renameat2() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None


_RENAMEAT2 = _libc_renameat2()
_RENAME_NOREPLACE = 1


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """``rename`` that fails with FileExistsError rather than replace
    (``renameat2(RENAME_NOREPLACE)``; it never follows a symlink either)."""
    if _RENAMEAT2 is not None:
        result = _RENAMEAT2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: a filesystem without the flag
            raise OSError(err, os.strerror(err), src)
    _rename_noreplace_fallback(src_fd, src, dst_fd, dst)


def _move(src_fd: int, name: str, dst_fd: int) -> str:
    """Move ``name`` into ``dst_fd`` under the first of its claim names that
    is free; returns that name.  FileNotFoundError: it is gone."""
    for candidate in names.claim_names(name):
        try:
            rename_noreplace(src_fd, name, dst_fd, candidate)
            return candidate
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "it and every name after it are taken in the claim directory")


class Inbox:
    """One notifications directory, held open by fd.

    ``claim_dir``: where claimed notifications go; relative paths are taken
    inside the notifications directory (the default, ``.claimed``, is a
    dot-name, which Navi and consumers skip, and is always on the same
    filesystem, as ``rename`` needs).  It is created on the first claim,
    mode 0700, and used only if it belongs to this user and nobody else can
    write to it: a directory the application planted there is refused.
    """

    def __init__(self, directory: str, claim_dir: str = CLAIM_DIR) -> None:
        self.directory = directory
        self.claim_dir = claim_dir if os.path.isabs(claim_dir) else os.path.join(directory, claim_dir)
        self._claim_relative = None if os.path.isabs(claim_dir) else claim_dir
        try:
            self._fd = os.open(directory, _DIRECTORY)
        except OSError as e:
            raise ConsumerError(f"{shown(directory)}: {_dir_problem(e)}") from None
        self._claim_fd: Optional[int] = None
        self._places: dict[str, int] = {}  # subdirectories of the claim directory, held open

    def close(self) -> None:
        self._close_places()
        for fd in (self._claim_fd, self._fd):
            if fd is not None:
                os.close(fd)
        self._claim_fd = None

    def _close_places(self) -> None:
        for fd in self._places.values():
            os.close(fd)
        self._places.clear()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._fd

    @property
    def identity(self) -> tuple[int, int]:
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def still_there(self) -> bool:
        """The path still names the directory held open (it was not
        removed, moved away or swapped for something else)."""
        try:
            st = os.stat(self.directory, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    # Reading

    def names(self) -> list[str]:
        """The names that may be notifications, in Navi's order."""
        with os.scandir(self._fd) as entries:
            return names.in_order([e.name for e in entries if names.skipped(e.name) is None])

    def lstat(self, name: str) -> Optional[os.stat_result]:
        try:
            return os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except OSError:
            return None

    def _examine(self, name: str) -> Optional[Union[Pending, core.Reject, Open]]:
        """What the entry ``name`` is, from its stat alone: None when it is not
        a notification's name, or gone."""
        st = self.lstat(name)
        if st is None:
            return None
        seen = core.examine(entry_of(name, st), time.time())
        if isinstance(seen, Ignore):
            return None
        if isinstance(seen, Wait):
            return Pending(self.directory, name, seen.why)
        return seen

    def look(self, name: str) -> Optional[EntryResult]:
        """Read ``name`` and say what it is; changes nothing.  None: not a
        notification's name, or gone."""
        seen = self._examine(name)
        if seen is None or isinstance(seen, Pending):
            return seen
        if not isinstance(seen, Open):
            return Problem(self.directory, name, seen.reason)
        verdict = _read(self._fd, name)
        if verdict is None:
            return None
        if isinstance(verdict, Accept):
            return Found(self.directory, name, verdict.notification, verdict.document)
        return Problem(self.directory, name, verdict.reason)

    def scan(self) -> Iterator[Union[Found, Problem]]:
        """Every notification in the directory, in order, and every entry
        that is not one; publications in progress are left for next time."""
        for name in self.names():
            result = self.look(name)
            if isinstance(result, (Found, Problem)):
                yield result

    # Claiming

    def claim(self, name: str) -> Optional[EntryResult]:
        """Move ``name`` into the claim directory, then read it there, where
        the application cannot change it any more.  None: not a
        notification's name, or gone (another consumer claimed it first).
        A claimed entry that is not a notification is quarantined."""
        seen = self._examine(name)
        if seen is None or isinstance(seen, Pending):
            return seen
        claim_fd = self._claim_directory()
        try:
            claimed = _move(self._fd, name, claim_fd)
        except FileNotFoundError:
            return None  # another consumer won
        except OSError as e:
            return Problem(self.directory, name, f"cannot claim it: {_why(e)}")
        _sync(claim_fd)
        _sync(self._fd)
        if isinstance(seen, core.Reject):
            return self._quarantine(name, claimed, seen.reason)
        return self._read_claimed(name, claimed)

    def _read_claimed(self, name: str, claimed: str) -> Union[Found, Problem]:
        verdict = _read(self._claim_directory(), claimed)
        if isinstance(verdict, Accept):
            return Found(
                self.directory, name, verdict.notification, verdict.document, os.path.join(self.claim_dir, claimed)
            )
        reason = "gone from the claim directory" if verdict is None else verdict.reason
        return self._quarantine(name, claimed, reason)

    def claim_all(self) -> Iterator[Union[Found, Problem]]:
        for name in self.names():
            result = self.claim(name)
            if isinstance(result, (Found, Problem)):
                yield result

    def release(self, found: Found) -> bool:
        """Put a claimed notification back (it could not be passed on).
        False if its name has been taken again meanwhile."""
        if found.claimed is None:
            return False
        try:
            rename_noreplace(self._claim_directory(), os.path.basename(found.claimed), self._fd, found.name)
        except (OSError, ConsumerError):
            return False
        _sync(self._fd)
        return True

    def held(self) -> Iterator[Union[Found, Problem]]:
        """What was claimed into the claim directory and not moved on, in
        order, read there (a consumer that moves each notification on when
        done with it finds here what it had not finished, say when it was
        killed).  Nothing when there is no claim directory yet."""
        if not _exists(self._fd if self._claim_relative else None, self._claim_relative or self.claim_dir):
            return
        with os.scandir(self._claim_directory()) as entries:
            listed = [e.name for e in entries if names.skipped(e.name) is None]
        for claimed in names.in_order(listed):  # quarantine/ and the like are no *.json names
            yield self._read_claimed(claimed, claimed)

    def move_on(self, found: Found, place: str, reason: Optional[str] = None) -> str:
        """Move a claimed notification out of the claim directory into its
        subdirectory ``place`` (``names.DELIVERED``, ``names.REJECTED``),
        with ``reason`` in a file beside it when given; returns where it is
        now.  OSError or ConsumerError: it stayed where it was."""
        if found.claimed is None:
            raise ValueError("only a claimed notification is moved on")
        return self._set_aside(os.path.basename(found.claimed), place, reason, found.name)

    def _quarantine(self, name: str, claimed: str, reason: str) -> Problem:
        try:
            moved = self._set_aside(claimed, QUARANTINE, reason, name)
        except (OSError, ConsumerError) as e:
            why = str(e) if isinstance(e, ConsumerError) else _why(e)
            where = os.path.join(self.claim_dir, claimed)
            return Problem(self.directory, name, f"{reason} (left in {shown(where)}: cannot quarantine: {why})")
        return Problem(self.directory, name, reason, moved)

    def _set_aside(self, claimed: str, place: str, reason: Optional[str], name: str) -> str:
        place_fd = self._place(place)
        moved = _move(self._claim_directory(), claimed, place_fd)
        if reason is not None:
            origin = os.path.join(os.path.abspath(self.directory), name)
            _write_reason(place_fd, names.reason_name(moved), f"{reason}\nfrom {origin}\n")
        _sync(place_fd)
        _sync(self._claim_directory())
        return os.path.join(self.claim_dir, place, moved)

    def _claim_directory(self) -> int:
        if self._claim_fd is not None and not self._still_claim_directory():
            # Moved away or removed (the application can do either: it may
            # write in the directory above): make or find the one at the path.
            self._close_places()
            os.close(self._claim_fd)
            self._claim_fd = None
        if self._claim_fd is None:
            parent = self._fd if self._claim_relative is not None else None
            self._claim_fd = _own_directory(parent, self._claim_relative or self.claim_dir, self.claim_dir)
            if os.fstat(self._claim_fd).st_dev != os.fstat(self._fd).st_dev:
                os.close(self._claim_fd)
                self._claim_fd = None
                raise ConsumerError(
                    f"claim directory {shown(self.claim_dir)} is on another filesystem than "
                    f"{shown(self.directory)}: a rename cannot move files there"
                )
        return self._claim_fd

    def _still_claim_directory(self) -> bool:
        assert self._claim_fd is not None
        try:
            if self._claim_relative is not None:
                st = os.stat(self._claim_relative, dir_fd=self._fd, follow_symlinks=False)
            else:
                st = os.stat(self.claim_dir, follow_symlinks=False)
        except OSError:
            return False
        held = os.fstat(self._claim_fd)
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino) and held.st_nlink > 0

    def _place(self, place: str) -> int:
        """The subdirectory ``place`` of the claim directory, held open."""
        claim_fd = self._claim_directory()
        if place not in self._places:
            self._places[place] = _own_directory(claim_fd, place, os.path.join(self.claim_dir, place))
        return self._places[place]

    def prune(self, keep: float, held: bool = True) -> int:
        """Remove what was claimed, quarantined, delivered or rejected more
        than ``keep`` seconds ago (they use the application's volume).
        ``held``: also what is still at the top of the claim directory (not
        for a consumer that has yet to finish those).  Returns how many."""
        if not _exists(self._fd if self._claim_relative else None, self._claim_relative or self.claim_dir):
            return 0
        cutoff = time.time() - keep
        removed = 0
        if held:
            removed += _prune(self._claim_directory(), cutoff, lambda name: name.endswith(".json"))
        for place in (QUARANTINE, names.DELIVERED, names.REJECTED):
            if _exists(self._claim_directory(), place):
                removed += _prune(self._place(place), cutoff, lambda name: True)
        return removed


def _dir_problem(e: OSError) -> str:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return "not a directory (symlinks are not followed)"
    return _why(e)


def _exists(dir_fd: Optional[int], name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _own_directory(parent_fd: Optional[int], name: str, shown_as: str) -> int:
    """The directory ``name`` (created if missing), held open, if it is
    this user's and nobody else can write to it."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConsumerError(f"claim directory {shown(shown_as)}: cannot create it: {_why(e)}") from None
    try:
        fd = os.open(name, _DIRECTORY, dir_fd=parent_fd)
    except OSError as e:
        raise ConsumerError(f"claim directory {shown(shown_as)}: {_dir_problem(e)}") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise ConsumerError(
            f"claim directory {shown(shown_as)} belongs to uid {st.st_uid} with mode {stat.filemode(st.st_mode)}: "
            f"not a directory this consumer (uid {os.geteuid()}) owns alone; not claiming into it"
        )
    return fd


def _read(dir_fd: int, name: str) -> Optional[core.Verdict]:
    """Open ``name`` without following it or opening anything that is not a
    regular file, read at most ``MAX_SIZE + 1`` bytes, and judge them.
    None: gone."""
    try:
        path_fd = os.open(name, (_PATH or READ_UNTRUSTED) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW on a link (where there is no O_PATH)
            return core.Reject(f"a {core.FileKind.SYMLINK.value}, not a regular file")
        if e.errno == errno.ENXIO:  # a socket
            return core.Reject(f"a {core.FileKind.SOCKET.value}, not a regular file")
        return core.Reject(f"cannot open it: {_why(e)}")
    try:
        opened = entry_of(name, os.fstat(path_fd))
        if opened.kind is not core.FileKind.FILE or opened.size > MAX_SIZE:
            return core.judge(opened, b"", opened)
        fd = _reopen(path_fd, dir_fd, name) if _PATH else path_fd
        try:
            data = _read_capped(fd)
            after = entry_of(name, os.fstat(fd))
        finally:
            if fd != path_fd:
                os.close(fd)
        return core.judge(opened, data, after)
    except OSError as e:
        return core.Reject(f"cannot read it: {_why(e)}")
    finally:
        os.close(path_fd)


def _reopen(path_fd: int, dir_fd: int, name: str) -> int:
    """Open for reading the very inode ``path_fd`` holds (through /proc, so
    that nothing swapped in at the name meanwhile is opened)."""
    try:
        return os.open(f"/proc/self/fd/{path_fd}", READ_UNTRUSTED & ~os.O_NOFOLLOW)
    except FileNotFoundError:  # no /proc: open by name, and make sure it is the same file
        fd = os.open(name, READ_UNTRUSTED, dir_fd=dir_fd)
        a, b = os.fstat(fd), os.fstat(path_fd)
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            os.close(fd)
            raise OSError(errno.ESTALE, "replaced while being opened") from None
        return fd


def _read_capped(fd: int) -> bytes:
    chunks = []
    left = MAX_SIZE + 1
    while left > 0:
        chunk = os.read(fd, min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _sync(fd: int) -> None:
    # A claim that a crash undoes would be delivered twice; worth one fsync.
    with contextlib.suppress(OSError):
        os.fsync(fd)


def _write_reason(dir_fd: int, name: str, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)  # a reason left from an entry pruned since
    with contextlib.suppress(OSError):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            write_all(fd, text.encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)


def _prune(dir_fd: int, cutoff: float, wanted: Any) -> int:
    """Remove the entries of ``dir_fd`` that ``wanted`` names and that last
    changed (were moved here) before ``cutoff``; directories with all they
    hold, never following a link."""
    removed = 0
    with os.scandir(dir_fd) as entries:
        names = [e.name for e in entries]
    for name in names:
        if not wanted(name):
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if st.st_ctime >= cutoff:
                continue
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(dir_fd, name)
            else:
                os.unlink(name, dir_fd=dir_fd)
            removed += 1
        except OSError:
            continue
    return removed


def _remove_tree(dir_fd: int, name: str, depth: int = 0) -> None:
    """rm -r, relative to fds and never following a link.  A tree deeper
    than anything sensible is left (rmdir fails on what remains)."""
    if depth < 32:
        fd = os.open(name, _DIRECTORY, dir_fd=dir_fd)
        try:
            with os.scandir(fd) as entries:
                children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            for child, is_dir in children:
                with contextlib.suppress(OSError):
                    if is_dir:
                        _remove_tree(fd, child, depth + 1)
                    else:
                        os.unlink(child, dir_fd=fd)
        finally:
            os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
