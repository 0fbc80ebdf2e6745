"""The receiver over HTTP: its URL, the headers a file gives for it (an auth
token, kept out of every log line), and one POST with a timeout, its answer
as plain data (``retry.Answer``).  The standard library's ``http.client``."""

from __future__ import annotations

import http.client
import re
import socket
from dataclasses import dataclass
from typing import Union
from urllib.parse import urlsplit

from navi import __version__
from navi.consumer.retry import Answer

# What is read of an answer's body: its first line goes into the log and a
# rejection's reason; the rest is not kept.
BODY_READ = 4096
TEXT_MAX = 200
# The CloudEvent's own headers: a headers file must not change them.
_RESERVED = re.compile(r"^(content-type|content-length|host|transfer-encoding|ce-.*)$", re.I)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP field name (RFC 9110 5.6.2)


class ReceiverError(ValueError):
    """One line a person can act on (never with a header's value in it)."""


@dataclass(frozen=True)
class Target:
    """Where to POST: ``http://`` or ``https://`` host, port and path."""

    https: bool
    host: str
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ReceiverError(f"--to {url!r}: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ReceiverError(f"--to {url!r}: give an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            # A URL is in `ps` and in the log: a secret goes in --headers.
            raise ReceiverError("--to: a user or password in the URL would show in `ps`; put it in --headers FILE")
        https = parts.scheme == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(https, parts.hostname, port or (443 if https else 80), path)

    def shown(self) -> str:
        """For the log: without the query, which may hold a key."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.https else 'http'}://{host}:{self.port}{self.path.split('?')[0]}"


def headers_from(text: str, where: str) -> dict[str, str]:
    """``Name: value`` lines (blank lines and ``#`` comments skipped) from
    the headers file ``where``.  An error names the line, never its value."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN.match(name):
            raise ReceiverError(f"{where}, line {number}: not a 'Name: value' header")
        if _RESERVED.match(name):
            raise ReceiverError(f"{where}, line {number}: {name} is the CloudEvent's own; it cannot be set here")
        if not value or not all(c == "\t" or " " <= c <= "~" for c in value):
            raise ReceiverError(f"{where}, line {number}: {name}'s value is empty or not printable ASCII")
        headers[name] = value
    return headers


def headers_file(path: str) -> dict[str, str]:
    """The headers in the file ``path`` (see :func:`headers_from`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 16)
    except OSError as e:
        raise ReceiverError(f"--headers {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ReceiverError(f"--headers {path}: not UTF-8 text") from None
    return headers_from(text, path)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` (a receiver's answer, say) with every header value from the
    file blotted out: a receiver that echoes the request must not put a
    token into the log or a .reason file."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first_line(data: bytes) -> str:
    line = data.decode("utf-8", "replace").strip().split("\n", 1)[0].strip()
    line = "".join(c if c.isprintable() else " " for c in line)
    return line[:TEXT_MAX] + ("..." if len(line) > TEXT_MAX else "")


def post(target: Target, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
    """POST ``body``; the answer, or why there was none.  ``timeout``
    bounds the connection and each wait for the receiver."""
    conn: Union[http.client.HTTPConnection, http.client.HTTPSConnection]
    if target.https:
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("POST", target.path, body, {"User-Agent": f"navi/{__version__}", **headers})
        response = conn.getresponse()
        data = response.read(BODY_READ)
        reason = response.reason.strip()
        text = "; ".join(t for t in (reason, _first_line(data)) if t)
        return Answer(response.status, text, response.getheader("Retry-After"))
    except socket.timeout:
        return Answer(None, f"no answer in {timeout:g} s", timed_out=True)
    except (OSError, http.client.HTTPException) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        return Answer(None, f"no connection: {why}")
    finally:
        conn.close()
