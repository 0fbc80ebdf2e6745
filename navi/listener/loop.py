"""The eventlistener loop, for ``navi listen`` and for ``navi fake record``:
READY, an event, its handling, OK, until supervisord closes stdin.  Nothing
it is given can stop it or write on the protocol fd: a handler's failure is
one line on stderr, and the event is acknowledged all the same."""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from navi.fdio import write_all
from navi.listener.protocol import CLOSED, NEED_DATA, BadInput, Event, Listener

log = logging.getLogger("navi")

Handler = Callable[[Event], None]
Wait = Callable[[int], None]  # block until the fd is readable, doing what is due meanwhile


def serve(handle: Optional[Handler], protocol_fd: int, stdin_fd: int = 0, wait: Optional[Wait] = None) -> int:
    """Serve supervisord until stdin closes; returns the exit status."""
    try:
        return _serve(handle, protocol_fd, stdin_fd, wait)
    except BrokenPipeError:
        log.info("supervisord closed the pipe; exiting")
        return 0
    except KeyboardInterrupt:
        return 0


def _serve(handle: Optional[Handler], protocol_fd: int, stdin_fd: int, wait: Optional[Wait]) -> int:
    proto = Listener()
    while True:
        write_all(protocol_fd, proto.send_ready())
        received = proto.next_event()
        while received is NEED_DATA:
            if wait is not None:
                wait(stdin_fd)
            proto.receive_data(os.read(stdin_fd, 65536))
            received = proto.next_event()
        if received is CLOSED:
            log.info("stdin closed; exiting")
            return 0
        if isinstance(received, BadInput):
            log.error("bad input from supervisord, acknowledged and ignored: %s", received.reason)
        elif isinstance(received, Event) and handle is not None:
            try:
                handle(received)
            except Exception as e:  # one line, then keep the pipe moving
                log.error("internal error on %s, event acknowledged: %s: %s", received.name, type(e).__name__, e)
        write_all(protocol_fd, proto.send_ok())
