"""``navi listen``: the I/O shell around the protocol and the classifier.

stdin/stdout speak the eventlistener protocol; everything else (supervisord's
log, the memory cgroup, the notification directory) is read or written here,
and every decision is made by the pure core.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from navi import __version__, cgroup
from navi.classify import Classifier, Evidence, Incident, Origin, triage
from navi.exitlog import ExitLog, ExitRecord
from navi.protocol import CLOSED, NEED_DATA, BadInput, Event, Listener
from navi.spool import Spool, SpoolError, file_name
from navi.supervisord import LogTail, LogUnavailable, file_tail, rpc_tail, started_at

log = logging.getLogger("navi")


@dataclass(frozen=True)
class Settings:
    notifications_dir: str
    cgroup_root: str
    proc_root: str
    supervisor_url: Optional[str]
    supervisord_log: Optional[str]


def take_stdout() -> int:
    """Keep fd 1 for protocol tokens only: return a private copy of it and
    point fd 1 (and sys.stdout) at stderr, so that a stray print, a library's
    output or a child process can never reach supervisord."""
    protocol_fd = os.dup(1)  # not inherited by children (PEP 446)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Shell:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._spool: Optional[Spool] = None
        self._spool_problem = ""
        self._open_spool()
        self._cgroup: Optional[cgroup.MemoryCgroup] = None
        self._cgroup_problem = ""
        try:
            self._cgroup = cgroup.locate(settings.proc_root, settings.cgroup_root)
        except cgroup.CgroupError as e:
            self._cgroup_problem = str(e)
            log.error("%s: OOM kills will be reported as crashes", e)
        baseline = cgroup.read(self._cgroup).oom_kill if self._cgroup else None
        ppid = os.getppid()
        self.origin = Origin(
            host=socket.gethostname(),
            supervisord_pid=ppid,
            supervisord_started=started_at(ppid, settings.proc_root),
            own_group=os.environ.get("SUPERVISOR_GROUP_NAME"),
            own_name=os.environ.get("SUPERVISOR_PROCESS_NAME"),
            navi_version=__version__,
        )
        self.classifier = Classifier(self.origin, baseline)
        self.exit_log = ExitLog(self.origin.own_name, os.getpid())
        self._log_tail: Optional[LogTail] = None
        self._log_problem = ""
        if settings.supervisord_log:
            self._log_tail = LogTail(file_tail(settings.supervisord_log), settings.supervisord_log)
        elif settings.supervisor_url:
            self._log_tail = LogTail(rpc_tail(settings.supervisor_url), f"readLog at {settings.supervisor_url}")
        else:
            self._log_problem = "no SUPERVISOR_SERVER_URL and no --supervisord-log: Navi cannot read supervisord's log"
            log.error("%s; exit statuses will be null", self._log_problem)
        self._read_log()
        if self._log_problem and self._log_tail is not None:
            log.error("%s; exit statuses will be null until it can", self._log_problem)
        log.info(
            "navi %s listening: notifications to %s; memory cgroup %s; exit statuses from %s",
            __version__,
            settings.notifications_dir,
            f"v{self._cgroup.version} at {self._cgroup.path}" if self._cgroup else "none",
            self._log_tail.description if self._log_tail else "nowhere",
        )

    def _open_spool(self) -> None:
        try:
            self._spool = Spool(self.settings.notifications_dir)
        except SpoolError as e:
            if str(e) != self._spool_problem:
                log.error("%s; notifications are not written until it is fixed", e)
            self._spool_problem = str(e)

    def _read_log(self) -> None:
        if self._log_tail is None:
            return
        try:
            self.exit_log.feed(self._log_tail.read_new())
            self._log_problem = ""
        except LogUnavailable as e:
            self._log_problem = str(e)

    def _exit_record(self, event: Event) -> tuple[Optional[ExitRecord], Optional[str]]:
        fields = event.fields
        name = fields.get("processname", "")
        pid = fields.get("pid")
        self._read_log()
        record = self.exit_log.take(name, int(pid) if pid and pid.isdigit() else None, expected=False)
        if record is not None:
            return record, None
        return None, self._log_problem or (
            "supervisord's log has no line for this exit (loglevel above warn, or the log was rotated away)"
        )

    def handle(self, event: Event) -> None:
        incident = triage(event, self.origin)
        if incident is None:
            return
        observed = datetime.now(timezone.utc)
        record, exit_problem = self._exit_record(event) if incident is Incident.EXIT else (None, None)
        snapshot = cgroup.read(self._cgroup) if self._cgroup else None
        notification = self.classifier.decide(
            event,
            Evidence(
                observed_at=observed,
                exit=record,
                exit_problem=exit_problem,
                memory=snapshot,
                memory_problem=self._cgroup_problem or None,
                sigkills_waiting=self.exit_log.sigkills_waiting(),
            ),
        )
        if notification is None:
            return
        if self._spool is None:
            self._open_spool()
        if self._spool is None:
            log.error("lost %s notification: %s", notification.type, notification.summary)
            return
        name = file_name(notification)
        try:
            fresh = self._spool.publish(name, notification.to_json())
        except SpoolError as e:
            log.error("%s; lost %s notification: %s", e, notification.type, notification.summary)
            return
        if fresh:
            log.info("%s: %s -> %s", notification.type, notification.summary, name)
        else:
            log.info("%s already written (event delivered again)", name)


def serve(shell: Shell, stdin_fd: int, protocol_fd: int) -> int:
    proto = Listener()
    while True:
        _write_all(protocol_fd, proto.send_ready())
        while True:
            received = proto.next_event()
            if received is NEED_DATA:
                proto.receive_data(os.read(stdin_fd, 65536))
                continue
            break
        if received is CLOSED:
            log.info("stdin closed; exiting")
            return 0
        if isinstance(received, BadInput):
            log.error("bad input from supervisord, acknowledged and ignored: %s", received.reason)
        elif isinstance(received, Event):
            try:
                shell.handle(received)
            except Exception as e:
                log.error("internal error on %s, event acknowledged: %s: %s", received.name, type(e).__name__, e)
        _write_all(protocol_fd, proto.send_ok())


def listen(settings: Settings) -> int:
    protocol_fd = take_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="navi: %(levelname)s: %(message)s")
    try:
        return serve(Shell(settings), 0, protocol_fd)
    except BrokenPipeError:
        log.info("supervisord closed the pipe; exiting")
        return 0
    except KeyboardInterrupt:
        return 0
