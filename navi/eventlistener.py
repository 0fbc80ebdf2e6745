"""supervisord's eventlistener protocol, its words: what both ends of it,
the listener and (in the fake) supervisord, say and read.

The listener says ``READY\\n``; supervisord sends one header line of
``key:value`` tokens and a payload of ``len`` characters; the listener
answers ``RESULT 2\\nOK`` (no newline) and says ``READY\\n`` again.
"""

from __future__ import annotations

import enum

READY = b"READY\n"
OK = b"RESULT 2\nOK"


class ListenerState(enum.Enum):
    """A listener's state, as supervisord keeps it (its names)."""

    ACKNOWLEDGED = "ACKNOWLEDGED"  # it must say READY next
    READY = "READY"  # waiting for an event: it must say nothing
    BUSY = "BUSY"  # holding an event: it must answer RESULT
    UNKNOWN = "UNKNOWN"  # it broke the protocol: no more events, ever


class ProtocolMisuse(RuntimeError):
    """A sans-I/O end was called out of turn (a bug in its caller)."""


def parse_tokens(line: str) -> dict[str, str]:
    """``key:value`` tokens separated by spaces, as supervisord writes them."""
    fields: dict[str, str] = {}
    for token in line.split(" "):
        if token:
            key, _, value = token.partition(":")
            fields[key] = value
    return fields
