"""The listener's end of the eventlistener protocol (:mod:`navi.eventlistener`),
without I/O, in the manner of h11.  Bytes go in through
:meth:`Listener.receive_data`, events come out of :meth:`Listener.next_event`,
and the only bytes this module ever produces are the protocol tokens."""

from __future__ import annotations

import codecs
import enum
from dataclasses import dataclass, field
from typing import Optional, Union

from navi.eventlistener import OK, READY, ListenerState, ProtocolMisuse, parse_tokens

MAX_HEADER_BYTES = 4096
# PROCESS_STATE payloads are a few hundred characters; anything far larger is
# not an event Navi can use, and is skipped rather than held in memory.
MAX_PAYLOAD_CHARS = 64 * 1024


@dataclass(frozen=True)
class Event:
    header: dict[str, str]
    payload: str
    fields: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # Only the first payload line is key:value; PROCESS_COMMUNICATION
        # events carry free data after it.
        object.__setattr__(self, "fields", parse_tokens(self.payload.split("\n", 1)[0]))

    @property
    def name(self) -> str:
        return self.header.get("eventname", "")


@dataclass(frozen=True)
class BadInput:
    """Input that is not a usable event; it is acknowledged all the same."""

    reason: str


class NeedData(enum.Enum):
    NEED_DATA = "need data"


class Closed(enum.Enum):
    CLOSED = "closed"


NEED_DATA = NeedData.NEED_DATA
CLOSED = Closed.CLOSED

Received = Union[Event, BadInput, NeedData, Closed]


class Listener:
    """One end of the eventlistener protocol: the listener's."""

    def __init__(self, max_payload_chars: int = MAX_PAYLOAD_CHARS) -> None:
        self.state = ListenerState.ACKNOWLEDGED
        self._max_payload = max_payload_chars
        self._buffer = bytearray()
        self._eof = False
        self._header: Optional[dict[str, str]] = None
        self._need = 0  # payload characters still to come
        self._chars: list[str] = []
        self._kept = 0  # characters held in _chars
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def send_ready(self) -> bytes:
        if self.state is not ListenerState.ACKNOWLEDGED:
            raise ProtocolMisuse(f"READY while {self.state.value}")
        self.state = ListenerState.READY
        return READY

    def send_ok(self) -> bytes:
        if self.state is not ListenerState.BUSY:
            raise ProtocolMisuse(f"RESULT while {self.state.value}")
        self.state = ListenerState.ACKNOWLEDGED
        return OK

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from stdin; ``b""`` means end of file."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Received:
        if self.state is not ListenerState.READY:
            raise ProtocolMisuse(f"reading an event while {self.state.value}")
        result = self._read_header() if self._header is None else self._read_payload()
        if isinstance(result, (Event, BadInput)):
            self.state = ListenerState.BUSY
        return result

    def _read_header(self) -> Union[Event, BadInput, NeedData, Closed]:
        end = self._buffer.find(b"\n", 0, MAX_HEADER_BYTES + 1)
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                return self._discard(f"header line longer than {MAX_HEADER_BYTES} bytes")
            if self._eof:
                if self._buffer:
                    return self._discard("stdin closed in the middle of a header line")
                return CLOSED
            return NEED_DATA
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        line = raw.decode("utf-8", "replace")
        header = parse_tokens(line)
        length = header.get("len", "")
        if "eventname" not in header or not length.isdigit() or not length.isascii():
            return self._discard(f"malformed header {line[:200]!r}")
        self._header = header
        self._need = int(length)
        return self._read_payload()

    def _read_payload(self) -> Union[Event, BadInput, NeedData, Closed]:
        assert self._header is not None
        # len counts characters on supervisor 4 (it is computed on a str and
        # written as UTF-8), so count decoded characters, not bytes; an
        # invalid byte counts as one character.
        if not self._chars and self._need <= min(len(self._buffer), self._max_payload):
            head = self._buffer[: self._need]
            if head.isascii():  # the usual case, where a character is a byte: no decoder needed
                del self._buffer[: self._need]
                self._chars.append(head.decode("ascii"))
                self._need = 0
        if self._need and self._buffer:
            text = self._decoder.decode(bytes(self._buffer))
            self._buffer.clear()
            taken, rest = text[: self._need], text[self._need :]
            self._need -= len(taken)
            room = self._max_payload - self._kept
            if room > 0:
                self._chars.append(taken[:room])
                self._kept += min(room, len(taken))
            if self._need == 0:
                # Whatever follows the payload goes back, undecoded.
                pending, _ = self._decoder.getstate()
                self._buffer += rest.encode("utf-8", "surrogateescape") + pending
                self._decoder.reset()
        if self._need:
            if self._eof:
                self._reset_event()
                return BadInput("stdin closed in the middle of an event payload")
            return NEED_DATA
        # Counted with invalid bytes as characters; kept as text that can be
        # written out again (U+FFFD for each invalid byte).
        payload = "".join(self._chars).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        header = self._header
        length = int(header["len"])
        self._reset_event()
        if length > self._max_payload:
            return BadInput(
                f"{header['eventname'][:80]} payload of {length} characters is over {self._max_payload}; skipped"
            )
        return Event(header, payload)

    def _reset_event(self) -> None:
        self._header = None
        self._need = 0
        self._chars = []
        self._kept = 0
        self._decoder.reset()

    def _discard(self, reason: str) -> BadInput:
        # With no trustworthy len there is no way to find the next event's
        # start; drop what is buffered and resynchronise on the next READY.
        dropped = len(self._buffer)
        self._buffer.clear()
        return BadInput(f"{reason}; dropped {dropped} buffered bytes")
