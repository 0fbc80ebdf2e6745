"""A CloudEvents receiver over HTTP, for the tests and the benchmark of
``navi forward``: a real server process that parses every request with the
CloudEvents SDK, checks that the event is a valid one made of a valid Navi
notification, logs it as a JSON line, and answers as told.

    python -m tests.receiver --log FILE [--expect-header 'Name: value']

It prints its port on stdout, then serves on 127.0.0.1 until SIGTERM.  What
it answers is changed over HTTP: POST /_control with a JSON object
``{"status": 200, "retry_after": null, "hang": false, "delay": 0}`` (any of
them).  ``hang``: read the request and never answer (until told otherwise,
or the client gives up).  An invalid event is answered 400; a request
without the expected header 401, with what it had instead in the body (as
some receivers do: the forwarder must keep it out of its log).  Each line
of the log: ``seq``, ``t``, ``status`` (what was answered; null when it
hung), ``mode`` (structured or binary), the event's attributes, ``valid``
and ``problem``.

:class:`Running` starts one as a process, for a test or the benchmark.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from navi.consumer.schema import InvalidNotification, parse

HANG_AT_MOST = 120.0  # seconds: a hung request ends by itself (the process must end too)


class State:
    def __init__(self, log: str, expect_header: Optional[tuple[str, str]]) -> None:
        self.lock = threading.Condition()
        self.answer: dict[str, Any] = {"status": 200, "retry_after": None, "hang": False, "delay": 0.0}
        self.log = open(log, "a", encoding="utf-8")  # noqa: SIM115 (open for the server's life)
        self.seq = 0
        self.expect_header = expect_header

    def record(self, line: dict[str, Any]) -> None:
        with self.lock:
            self.seq += 1
            self.log.write(json.dumps({"seq": self.seq, "t": time.time(), **line}) + "\n")
            self.log.flush()


def check(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], str]:
    """The event's attributes (JSON-ready) and what is wrong with it ("": nothing)."""
    try:
        event = from_http(HTTPMessage(headers, body), JSONFormat())
    except Exception as e:  # the SDK raises several kinds: all mean "not a valid CloudEvent"
        return {}, f"the SDK refused it: {type(e).__name__}: {e}"
    attrs = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in event.get_attributes().items()}
    data = event.get_data()
    if not isinstance(data, dict):
        return attrs, f"data is a {type(data).__name__}, not the notification's object"
    try:
        n = parse(json.dumps(data).encode())
    except InvalidNotification as e:
        return attrs, f"data is not a Navi notification: {e}"
    expected = {
        "specversion": "1.0",
        "id": n.id,
        "type": f"com.modulus.navi.{n.type}",
        "datacontenttype": "application/json",
    }
    for key, value in expected.items():
        if attrs.get(key) != value:
            return attrs, f"{key} is {attrs.get(key)!r}, not {value!r}"
    if event.get_time() != n.time:
        return attrs, f"time {event.get_time()} is not the incident's {n.time}"
    if event.get_subject() != n.process.name:
        return attrs, f"subject {event.get_subject()!r} is not the program {n.process.name!r}"
    if not event.get_dataschema() or not event.get_source():
        return attrs, "no dataschema or no source"
    return attrs, ""


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, extra: Optional[dict[str, str]] = None, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_control":
            with state.lock:
                state.answer.update(json.loads(body))
                state.lock.notify_all()
            self._reply(200)
            return
        headers = dict(self.headers.items())
        attrs, problem = check(headers, body)
        mode = "binary" if any(k.lower().startswith("ce-") for k in headers) else "structured"
        line = {"mode": mode, "content_type": self.headers.get("Content-Type"), **attrs, "valid": not problem}
        if state.expect_header is not None:
            name, value = state.expect_header
            if self.headers.get(name) != value:
                state.record({**line, "status": 401, "problem": f"not the {name} expected"})
                self._reply(401, text=f"{name} {self.headers.get(name)!r} is not the one expected")
                return
        with state.lock:
            answer = dict(state.answer)
        if problem:
            state.record({**line, "status": 400, "problem": problem})
            self._reply(400, text=f"invalid event: {problem}")
            return
        if answer["hang"]:
            state.record({**line, "status": None})
            deadline = time.monotonic() + HANG_AT_MOST
            with state.lock:
                state.lock.wait_for(lambda: not state.answer["hang"], max(0.0, deadline - time.monotonic()))
            self.close_connection = True
            return
        if answer["delay"]:
            time.sleep(float(answer["delay"]))
        status = int(answer["status"])
        state.record({**line, "status": status})
        extra = {"Retry-After": str(answer["retry_after"])} if answer["retry_after"] is not None else {}
        self._reply(status, extra, "" if status < 300 else f"told to answer {status}")


class Running:
    """A receiver process, ended by its pid (:meth:`close`)."""

    def __init__(self, log: Path, *options: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.receiver", "--log", str(log), *options],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        if not port:
            self.close()
            raise RuntimeError("the receiver did not start")
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/events"

    def answer(self, **how: Any) -> None:
        """Answer from now on as told (status, retry_after, hang, delay)."""
        request = urllib.request.Request(f"{self.base}/_control", json.dumps(how).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def records(self) -> list[dict[str, Any]]:
        """Every request so far, in order (a line being written is left for next time)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    state: State


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", required=True)
    parser.add_argument("--expect-header", metavar="'NAME: VALUE'")
    args = parser.parse_args()
    expect = None
    if args.expect_header:
        name, _, value = args.expect_header.partition(":")
        expect = (name.strip(), value.strip())
    server = Server(("127.0.0.1", 0), Handler)
    server.state = State(args.log, expect)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
