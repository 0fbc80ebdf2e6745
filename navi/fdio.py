"""File descriptors, for both wings: how to open a file the application may
have planted, and how to write all of a buffer."""

from __future__ import annotations

import os

# A file opened to be read that may be anything the application put there:
# a symlink is not followed (ELOOP), a FIFO does not block, a terminal does
# not become ours.
READ_UNTRUSTED = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
