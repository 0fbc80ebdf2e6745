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

from navi.fdio import write_all
from navi.listener import (
    STANDARD_ROOT,
    CgroupError,
    Event,
    LogTail,
    LogUnavailable,
    MemoryCgroup,
    locate_cgroup,
    log_source,
    read_oom_kill,
    serve,
)

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
    def __init__(
        self,
        path: str,
        supervisord_log: Optional[str],
        supervisor_url: Optional[str],
        proc_root: str = "/proc",
        cgroup_root: str = STANDARD_ROOT,
    ) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._tail: Optional[LogTail] = None
        self._first = True
        self._log_problem = ""
        try:
            self._tail = LogTail(*log_source(supervisord_log, supervisor_url))
        except LogUnavailable as e:
            log.error("%s: recording events without log lines", e)
        self._cgroup: Optional[MemoryCgroup] = None
        self._oom_kill: Optional[int] = None
        try:
            self._cgroup = locate_cgroup(proc_root, cgroup_root)
            self._oom_kill = read_oom_kill(self._cgroup)
        except CgroupError as e:
            log.error("%s: recording events without OOM kills", e)

    def record(self, event: Event) -> None:
        lines = []
        if self._cgroup is not None:
            # Before the log lines: the kernel raises the counter before it
            # kills, supervisord logs the death after it reaps it.
            now = read_oom_kill(self._cgroup)
            if now is not None and self._oom_kill is not None and now > self._oom_kill:
                lines.append(_line({"oom_kills": now - self._oom_kill}))
            self._oom_kill = now if now is not None else self._oom_kill
        lines += [_line({"log": text}) for text in self._new_log_lines()]
        lines.append(_line({"header": header_line(event), "payload": event.payload}))
        write_all(self._fd, "".join(lines).encode("utf-8", "surrogateescape"))

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


def record(
    path: str,
    protocol_fd: int,
    supervisord_log: Optional[str] = None,
    supervisor_url: Optional[str] = None,
    proc_root: str = "/proc",
    cgroup_root: str = STANDARD_ROOT,
) -> int:
    try:
        recorder = Recorder(path, supervisord_log, supervisor_url, proc_root, cgroup_root)
    except OSError as e:
        log.error("cannot open %s: %s; acknowledging events without recording them", path, e.strerror)
        return serve(None, protocol_fd)

    def keep(event: Event) -> None:
        try:
            recorder.record(event)
        except OSError as e:
            log.error("cannot write %s: %s; event %s not recorded", path, e.strerror, event.header.get("serial"))

    return serve(keep, protocol_fd)
