"""``navi fake record FILE``: an eventlistener that acknowledges every event
and appends it to FILE, one JSON object a line, for ``navi fake play`` to
replay:

    {"time": "...", "oom_kills": 1}
    {"time": "...", "log": "2026-11-24 23:00:05,456 WARN exited: web (terminated by SIGKILL; not expected)"}
    {"time": "...", "header": "ver:3.0 server:supervisor serial:7 ...", "payload": "processname:web ..."}

Before each event go the rise of the memory cgroup's ``oom_kill`` counter
and the lines supervisord's main log gained since the last one (read as
Navi reads them: over ``SUPERVISOR_SERVER_URL`` or from
``--supervisord-log``), so that a replay to ``navi listen`` finds the exit
statuses and OOM kills the events went with.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Optional

from navi.listener import cgroup
from navi.listener.mainlog import FileLog, LogTail, LogUnavailable, RpcLog
from navi.listener.protocol import CLOSED, NEED_DATA, BadInput, Event, Listener

log = logging.getLogger("navi")


def current_lifetime(text: str) -> str:
    """The log from the current supervisord's first line on."""
    at = text.rfind(" supervisord started with pid ")
    return text if at < 0 else text[text.rfind("\n", 0, at) + 1 :]


def header_line(event: Event) -> str:
    # Tokens keep their order in the dict: this is the line as it came.
    return " ".join(f"{key}:{value}" for key, value in event.header.items())


def _line(record: dict[str, object]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"time": stamp, **record}, ensure_ascii=False) + "\n"


class Recorder:
    def __init__(self, path: str, supervisord_log: Optional[str], supervisor_url: Optional[str],
                 proc_root: str = "/proc", cgroup_root: str = cgroup.STANDARD_ROOT) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._tail: Optional[LogTail] = None
        self._first = True
        self._log_problem = ""
        try:
            if supervisord_log:
                self._tail = LogTail(FileLog(supervisord_log), supervisord_log)
            elif supervisor_url:
                self._tail = LogTail(RpcLog(supervisor_url), f"readLog at {supervisor_url}")
            else:
                log.error("no SUPERVISOR_SERVER_URL and no --supervisord-log: recording events without log lines")
        except LogUnavailable as e:
            log.error("%s: recording events without log lines", e)
        self._cgroup: Optional[cgroup.MemoryCgroup] = None
        self._oom_kill: Optional[int] = None
        try:
            self._cgroup = cgroup.locate(proc_root, cgroup_root)
            self._oom_kill = cgroup.read_oom_kill(self._cgroup)
        except cgroup.CgroupError as e:
            log.error("%s: recording events without OOM kills", e)

    def record(self, event: Event) -> None:
        lines = []
        if self._cgroup is not None:
            # Before the log lines: the kernel raises the counter before it
            # kills, supervisord logs the death after it reaps it.
            now = cgroup.read_oom_kill(self._cgroup)
            if now is not None and self._oom_kill is not None and now > self._oom_kill:
                lines.append(_line({"oom_kills": now - self._oom_kill}))
            self._oom_kill = now if now is not None else self._oom_kill
        lines += [_line({"log": text}) for text in self._new_log_lines()]
        lines.append(_line({"header": header_line(event), "payload": event.payload}))
        data = "".join(lines).encode("utf-8", "surrogateescape")
        while data:
            data = data[os.write(self._fd, data) :]

    def _new_log_lines(self) -> list[str]:
        if self._tail is None:
            return []
        try:
            text = self._tail.read_new()
        except LogUnavailable as e:
            if str(e) != self._log_problem:
                log.error("%s; log lines are missing from the recording meanwhile", e)
            self._log_problem = str(e)
            return []
        self._log_problem = ""
        if self._first:
            text, self._first = current_lifetime(text), False
        return text.splitlines()


def record(path: str, protocol_fd: int, supervisord_log: Optional[str] = None,
           supervisor_url: Optional[str] = None, proc_root: str = "/proc",
           cgroup_root: str = cgroup.STANDARD_ROOT) -> int:
    try:
        recorder = Recorder(path, supervisord_log, supervisor_url, proc_root, cgroup_root)
    except OSError as e:
        log.error("cannot open %s: %s; acknowledging events without recording them", path, e.strerror)
        recorder = None
    proto = Listener()
    try:
        while True:
            _write(protocol_fd, proto.send_ready())
            received = proto.next_event()
            while received is NEED_DATA:
                proto.receive_data(os.read(0, 65536))
                received = proto.next_event()
            if received is CLOSED:
                return 0
            if isinstance(received, BadInput):
                log.error("bad input from supervisord, not recorded: %s", received.reason)
            elif isinstance(received, Event) and recorder is not None:
                try:
                    recorder.record(received)
                except OSError as e:
                    log.error("cannot write %s: %s; event %s not recorded", path, e.strerror,
                              received.header.get("serial"))
            _write(protocol_fd, proto.send_ok())
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
