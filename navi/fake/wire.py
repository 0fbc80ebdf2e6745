"""supervisord's end of the eventlistener protocol, without I/O.

The mirror of :mod:`navi.listener.protocol`: :meth:`Supervisor.envelope` gives the
bytes supervisord writes for an event, and :meth:`Supervisor.receive_data`
reads a listener's stdout exactly as supervisor 4's
``PEventListenerDispatcher`` does, saying which tokens were valid and where
the listener broke the protocol.  Like supervisord, it is strict: any byte it
did not ask for puts the listener in UNKNOWN, where it gets no more events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from navi.eventlistener import OK, READY, ListenerState, ProtocolMisuse, parse_tokens

RESULT_PREFIX = b"RESULT "
UNKNOWN_NOTE = "supervisord marks the listener UNKNOWN and sends it no more events"


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Result:
    body: bytes

    @property
    def accepted(self) -> bool:
        # supervisord's default result handler: anything but OK rejects the
        # event, which is put back at the head of the queue and sent again.
        return self.body == b"OK"


@dataclass(frozen=True)
class Violation:
    reason: str
    # True when supervisord puts the listener in UNKNOWN; False for what
    # supervisor 4 lets pass but the protocol does not allow.
    fatal: bool = True


Answer = Union[Ready, Result, Violation]


_OK, _READY = Result(b"OK"), Ready()
_OK_READY = OK + READY


def envelope_text(
    eventname: str, payload: str, serial: int, poolserial: int, pool: str, server: str = "supervisor"
) -> str:
    """An event as supervisord writes it; ``len`` counts characters, as on
    supervisor 4 (it measures the str and writes it as UTF-8)."""
    return (
        f"ver:3.0 server:{server} serial:{serial} pool:{pool} poolserial:{poolserial} "
        f"eventname:{eventname} len:{len(payload)}\n{payload}"
    )


def _shown(data: bytes, limit: int = 60) -> str:
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


class Supervisor:
    """supervisord's view of one listener process in one pool."""

    def __init__(self, pool: str = "navi", server: str = "supervisor", first_serial: int = 0) -> None:
        self.pool = pool
        self.server = server
        self.state = ListenerState.ACKNOWLEDGED
        self.serial = first_serial - 1  # the last one used
        self.poolserial = first_serial - 1
        self.in_flight: Optional[bytes] = None  # the event being handled, sent again when rejected
        self._buffer = bytearray()
        self._result_len: Optional[int] = None
        self._result = bytearray()
        self._after_result = False

    @property
    def held(self) -> bytes:
        """What it wrote that is not a whole token yet."""
        return bytes(self._buffer) + bytes(self._result)

    @property
    def at_rest(self) -> bool:
        """Nothing half-said is held (no partial token, no partial result)."""
        return not self._buffer and self._result_len is None

    def envelope(self, eventname: str, payload: str, header: Optional[str] = None) -> bytes:
        """The next event, with the next serials; or, given a recorded
        ``header`` line, that event as it was (its serials are followed on)."""
        if header is None:
            self.serial += 1
            self.poolserial += 1
            text = envelope_text(eventname, payload, self.serial, self.poolserial, self.pool, self.server)
        else:
            tokens = parse_tokens(header)
            for key in ("serial", "poolserial"):
                if tokens.get(key, "").isdigit():
                    setattr(self, key, int(tokens[key]))
            text = f"{header}\n{payload}"
        return self.send(text.encode("utf-8", "surrogateescape"))

    def send(self, data: bytes) -> bytes:
        """Hand ``data`` to the listener as one event (any bytes: a test of bad input)."""
        if self.state is not ListenerState.READY:
            raise ProtocolMisuse(f"an event sent while the listener is {self.state.value}")
        self.state = ListenerState.BUSY
        self.in_flight = data
        return data

    def resend(self) -> bytes:
        """The rejected event again, as supervisord sends it at once."""
        if self.in_flight is None:
            raise ProtocolMisuse("nothing to send again")
        return self.send(self.in_flight)

    def receive_data(self, data: bytes) -> list[Answer]:
        """Read the listener's stdout as supervisord does, as the bytes arrive.
        (It matters how they are split: bytes that come in one read with a
        READY are bytes while READY, as in supervisord.)"""
        if self.state is ListenerState.UNKNOWN:
            return []
        if data == _OK_READY and self.state is ListenerState.BUSY and self.at_rest:
            # The usual answer, whole in one read: the same verdict, sooner.
            self.state = ListenerState.READY
            self.in_flight = None
            self._after_result = False
            return [_OK, _READY]
        self._buffer += data
        answers: list[Answer] = []
        while self._buffer:  # emptied when the listener turns UNKNOWN
            if self.state is ListenerState.ACKNOWLEDGED:
                if len(self._buffer) < len(READY):
                    break  # not enough to decide, as supervisord waits too
                if self._buffer.startswith(READY):
                    del self._buffer[: len(READY)]
                    self.state = ListenerState.READY
                    self._after_result = False
                    answers.append(Ready())
                else:
                    answers.append(self._unknown(self._not_ready()))
            elif self.state is ListenerState.READY:
                answers.append(
                    self._unknown(f"wrote {_shown(bytes(self._buffer))} after READY, while it should wait for an event")
                )
            elif self._result_len is None:
                end = self._buffer.find(b"\n")
                if end < 0:
                    break
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                answers.extend(self._result_line(line))
            else:
                need = self._result_len - len(self._result)
                self._result += self._buffer[:need]
                del self._buffer[:need]
                if len(self._result) == self._result_len:
                    result = Result(bytes(self._result))
                    answers.append(result)
                    self._result_len = None
                    self._result.clear()
                    self.state = ListenerState.ACKNOWLEDGED
                    self._after_result = True
                    if result.accepted:
                        self.in_flight = None
        return answers

    def _result_line(self, line: bytes) -> list[Answer]:
        # supervisor 4 takes the length from the 8th byte on with int(), so
        # it lets a wrong word or " 2" pass; those are flagged, not fatal.
        text = line[len(RESULT_PREFIX) :]
        try:
            length = int(text)
        except ValueError:
            length = -1
        if length < 0:
            hint = "" if line.startswith(RESULT_PREFIX) else " (a stray print, warning or child process on stdout?)"
            return [
                self._unknown(
                    f"wrote {_shown(line)} where its RESULT <length> line should be{hint}",
                    also=" (and the event to another one)",
                )
            ]
        warnings: list[Answer] = []
        if not line.startswith(RESULT_PREFIX):
            warnings.append(
                Violation(
                    f"result line {_shown(line)} does not start with 'RESULT ' (supervisor 4 lets it pass)", fatal=False
                )
            )
        elif not (text.isdigit() and text.isascii()):
            warnings.append(
                Violation(f"result length {_shown(text)} is not plain digits (supervisor 4 lets it pass)", fatal=False)
            )
        self._result_len = length
        return warnings

    def _not_ready(self) -> str:
        got = bytes(self._buffer)
        if self._after_result and got.startswith(b"\n"):
            return f"wrote {_shown(got)} after its RESULT: the result must not end with a newline"
        return f"wrote {_shown(got)} where only READY\\n may come"

    def _unknown(self, reason: str, also: str = "") -> Violation:
        self.state = ListenerState.UNKNOWN
        self._buffer.clear()
        return Violation(f"{reason}; {UNKNOWN_NOTE}{also}")
