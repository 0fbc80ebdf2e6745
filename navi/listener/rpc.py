"""supervisord's XML-RPC, spoken over a unix socket or TCP with a timeout.

The standard library's ``xmlrpc.client`` pulls in ``http.client``, ``ssl``
and ``email.parser``: 7.4 MiB of the customer's memory (VmRSS before and
after ``import xmlrpc.client``, Python 3.11) for the calls Navi makes
(``readLog``, ``getAllProcessInfo``, and ``getState`` to wake supervisord).  This is the
part of XML-RPC that supervisord answers with: HTTP/1.0, one request per
connection, values decoded with expat.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, Union
from xml.parsers import expat

TIMEOUT = 2.0
MAX_RESPONSE = 16 << 20

Param = Union[bool, int, str]


class RpcError(Exception):
    """supervisord could not be reached, or answered with something that is
    not an XML-RPC response."""


class Unreachable(RpcError):
    """No answer at all: supervisord is not there, or too slow."""


class Fault(Exception):
    """supervisord's own error: its fault code and string."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{text} (fault {code})")
        self.code = code
        self.text = text


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(p: Param) -> str:
    if isinstance(p, bool):
        return f"<boolean>{int(p)}</boolean>"
    if isinstance(p, int):
        return f"<int>{p}</int>"
    return f"<string>{_escape(p)}</string>"


def request_body(method: str, params: tuple[Param, ...]) -> bytes:
    values = "".join(f"<param><value>{_value(p)}</value></param>" for p in params)
    return (
        f"<?xml version='1.0'?>\n<methodCall><methodName>{_escape(method)}</methodName>"
        f"<params>{values}</params></methodCall>\n"
    ).encode()


def _boolean(text: str) -> bool:
    return text.strip() == "1"


_SCALARS: dict[str, Callable[[str], Any]] = {
    "string": str,
    "int": int,
    "i4": int,
    "i8": int,
    "boolean": _boolean,
    "double": float,
    "nil": lambda text: None,
    "dateTime.iso8601": str,
    "base64": str,
}


class _Decoder:
    """The values of a methodResponse, as plain Python values."""

    def __init__(self) -> None:
        self.stack: list[Any] = [[]]  # open arrays and structs over the list of params
        self.names: list[str] = []  # struct member names waiting for their value
        self.typed: list[bool] = []  # per open <value>: whether its content was a typed value
        self.text: list[str] = []
        self.fault = False

    def start(self, tag: str, attrs: object) -> None:
        self.text = []
        if tag == "value":
            self.typed.append(False)
        elif tag == "array":
            self.stack.append([])
        elif tag == "struct":
            self.stack.append({})
        elif tag == "fault":
            self.fault = True

    def end(self, tag: str) -> None:
        text = "".join(self.text)
        if tag in _SCALARS:
            self._add(_SCALARS[tag](text))
        elif tag in ("array", "struct"):
            self._add(self.stack.pop())
        elif tag == "name":
            self.names.append(text)
        elif tag == "value" and not self.typed.pop():
            self._add(text)  # an untyped value is a string

    def data(self, text: str) -> None:
        self.text.append(text)

    def _add(self, value: Any) -> None:
        if self.typed:
            self.typed[-1] = True
        top = self.stack[-1]
        if isinstance(top, dict):
            top[self.names.pop()] = value
        else:
            top.append(value)


def parse_response(body: bytes) -> Any:
    """The one value of a methodResponse; raises :class:`Fault` for a fault."""
    decoder = _Decoder()
    parser = expat.ParserCreate("utf-8")
    parser.StartElementHandler = decoder.start
    parser.EndElementHandler = decoder.end
    parser.CharacterDataHandler = decoder.data
    try:
        parser.Parse(body, True)
        (value,) = decoder.stack[0]
    except (expat.ExpatError, ValueError, KeyError, IndexError) as e:
        raise RpcError(f"not an XML-RPC response ({e})") from None
    if decoder.fault:
        if not isinstance(value, dict):
            raise RpcError("a malformed XML-RPC fault")
        raise Fault(int(value.get("faultCode", 0)), str(value.get("faultString", "")))
    return value


def split_http(response: bytes) -> tuple[int, str, bytes]:
    """Status code, reason and body of an HTTP/1.x response."""
    head, sep, body = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    if not sep or len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
        raise RpcError("not an HTTP response")
    return int(status[1]), status[2] if len(status) > 2 else "", body


def check_url(url: str) -> None:
    if not url.startswith(("unix://", "http://")):
        raise RpcError(f"supervisor URL {url!r} is neither unix:// nor http://")


def _connect(url: str, timeout: float) -> socket.socket:
    check_url(url)
    if url.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(url[len("unix://") :])
        except OSError:
            sock.close()
            raise
        return sock
    host, _, port = url[len("http://") :].split("/", 1)[0].rpartition(":")
    if not port.isdigit():
        raise RpcError(f"supervisor URL {url!r} has no port number")
    return socket.create_connection((host or "localhost", int(port)), timeout)


def call(
    url: str, method: str, *params: Param, timeout: float = TIMEOUT, connected: Callable[[], None] = lambda: None
) -> Any:
    """Call ``method`` at ``unix:///path`` or ``http://host:port``.  The
    whole exchange takes at most ``timeout`` seconds: supervisord must never
    be able to hang Navi while it holds an event.  ``connected`` runs once
    the connection is made, before the request is sent."""
    body = request_body(method, params)
    deadline = time.monotonic() + timeout
    try:
        with _connect(url, timeout) as sock:
            connected()
            sock.sendall(
                b"POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            chunks = []
            received = 0
            while received <= MAX_RESPONSE:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
    except OSError as e:
        raise Unreachable(f"cannot reach supervisord at {url}: {e.strerror or e}") from None
    if received > MAX_RESPONSE:
        raise RpcError(f"supervisord's answer to {method} is over {MAX_RESPONSE} bytes")
    code, reason, response = split_http(b"".join(chunks))
    if code != 200:
        raise RpcError(f"supervisord answered {method} with HTTP {code} {reason}")
    return parse_response(response)
