"""Atomic, durable notification files in a directory another system polls.

Maildir's way: write the whole file under a dot-name the consumer ignores,
fsync it, publish it with ``link`` (atomic, and never replaces: a second
publication of the same name is a redelivered event), then fsync the
directory.  All work is relative to one directory fd, opened without
following symlinks, and files are created with ``O_EXCL|O_NOFOLLOW``: the
application shares Navi's uid and may plant links in the directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from typing import Callable, Optional

from navi import names
from navi.fdio import write_all

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class SpoolError(Exception):
    """One line a person can act on."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


STALE_TEMP = 3600  # seconds: a temp file this old is a Navi's that was killed mid-write, whoever runs now


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's
    return True


class Spool:
    def __init__(self, directory: str, alternatives: Callable[[str], list[str]] = names.beside) -> None:
        self.directory = directory
        self._alternatives = alternatives
        try:
            self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            symlink = e.errno in (errno.ENOTDIR, errno.ELOOP)
            why = "not a directory (symlinks are not followed)" if symlink else e.strerror
            raise SpoolError(f"notifications directory {directory}: {why}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            os.close(self._fd)
            raise SpoolError(f"notifications directory {directory}: not writable by uid {os.geteuid()}")
        self._counter = 0
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        """Temporary files of a Navi that was killed mid-write: its pid (in
        the name) is gone, or the file is old."""
        now = time.time()
        for name in os.listdir(self._fd):
            writer = names.temp_writer(name)
            if writer is None or writer == os.getpid():
                continue
            try:
                st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and (now - st.st_mtime > STALE_TEMP or not _alive(writer)):
                    os.unlink(name, dir_fd=self._fd)
            except OSError:
                pass

    def close(self) -> None:
        os.close(self._fd)

    def publish(self, name: str, data: bytes, ident: Optional[str]) -> Optional[str]:
        """Publish ``data`` (a notification whose id is ``ident``) as ``name``,
        or next to it when something else took that name.  Returns the name
        written, or None when that notification is already there (an event
        delivered again; never, when there is no ``ident``)."""
        self._check_directory()
        temp = self._write_temp(name, data)
        try:
            published = self._link(temp, name, ident)
        except OSError as e:
            raise self._error("publish", name, e) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._fd)
        # Once linked it is published: a consumer may take it at once, so a
        # failure now must not have it written again (with its count).
        with contextlib.suppress(SpoolError):
            self._sync_directory(name)
        return published

    def save(self, name: str, data: bytes, sync: bool = True) -> None:
        """Replace the dot-file ``name`` (never a notification) atomically;
        durably too, unless ``sync`` is false (see :meth:`sync`)."""
        temp = self._write_temp(name, data, sync)
        try:
            os.replace(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)  # replaces a planted link itself
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._fd)
            raise self._error("save", name, e) from None
        if sync:
            self._sync_directory(name)

    def sync(self, name: str) -> None:
        """Make the dot-file ``name``, saved without ``sync``, durable."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError as e:
            raise self._error("open", name, e) from None
        try:
            os.fsync(fd)
        except OSError as e:
            raise self._error("fsync", name, e) from None
        finally:
            os.close(fd)
        self._sync_directory(name)

    def load(self, name: str, limit: int = names.MAX_SIZE) -> Optional[bytes]:
        """The file ``name`` (at most ``limit`` bytes of it), if it is a
        regular file; never follows or blocks."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError:
            return None
        try:
            return os.read(fd, limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self._fd)
            os.fsync(self._fd)

    def _write_temp(self, name: str, data: bytes, sync: bool = True) -> str:
        """The whole of ``data`` in a new temporary file, fsynced unless not ``sync``."""
        temp, fd = self._create_temp(name)
        try:
            try:
                write_all(fd, data)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._fd)
            raise self._error("write", name, e) from None
        return temp

    def _sync_directory(self, name: str) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise self._error("fsync directory for", name, e) from None

    def _check_directory(self) -> None:
        """The path must still name the directory we hold open: if it was
        moved away or swapped for a link, files written here go unseen."""
        try:
            now = os.stat(self.directory, follow_symlinks=False)
        except OSError as e:
            raise SpoolError(f"notifications directory {self.directory}: {e.strerror}") from None
        held = os.fstat(self._fd)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            raise SpoolError(f"notifications directory {self.directory} was replaced")

    def _create_temp(self, name: str) -> tuple[str, int]:
        # Something planted at our temp name (a link, a FIFO) is never
        # opened: O_EXCL|O_NOFOLLOW fail on it, and the next name is tried.
        for _ in range(8):
            self._counter += 1
            temp = names.temp_name(name, os.getpid(), self._counter)
            try:
                return temp, os.open(temp, _CREATE, 0o644, dir_fd=self._fd)
            except FileExistsError:
                continue
            except OSError as e:
                raise self._error("create", temp, e) from None
        raise SpoolError(f"cannot create a temporary file in {self.directory}: every name tried was taken")

    def _link(self, temp: str, name: str, ident: Optional[str]) -> Optional[str]:
        """link() never replaces: a name already taken is ours only if it is a
        regular file holding this very notification."""
        for candidate in [name, *self._alternatives(name)]:
            try:
                os.link(temp, candidate, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
                return candidate
            except FileExistsError:
                if ident is not None and self.holds(candidate, ident):
                    return None
        raise SpoolError(f"cannot publish {name} in {self.directory}: it and every name after it are taken")

    def holds(self, name: str, ident: str) -> bool:
        """Whether ``name`` is the notification ``ident``."""
        data = self.load(name)
        try:
            found = json.loads(data) if data is not None else None
        except ValueError:
            return False
        return isinstance(found, dict) and found.get("id") == ident

    def usage(self) -> tuple[int, int]:
        """How many notifications are waiting in the directory, and their bytes."""
        files = size = 0
        with os.scandir(self._fd) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    files += 1
                    size += st.st_size
        return files, size

    def _error(self, step: str, name: str, e: OSError) -> SpoolError:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "disk or quota full" if full else e.strerror
        return SpoolError(f"cannot {step} {os.path.join(self.directory, name)}: {why}", disk_full=full)
