"""``navi listen``: the I/O shell around the protocol and the classifier.

stdin and the protocol fd speak the eventlistener protocol; everything else
(supervisord's log, the memory cgroup, the notification directory) is read or
written here, and every decision is made by the pure core.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from navi import __version__, cgroup, rpc, rss
from navi.classify import Classifier, Evidence, Incident, Origin, triage
from navi.coalesce import Coalescer, SavedState
from navi.deaths import DeathWatch
from navi.exitlog import ExitLog, ExitRecord
from navi.notification import FormatError, Notification, Original, decode, encode
from navi.protocol import CLOSED, NEED_DATA, BadInput, Event, Listener
from navi.spool import Spool, SpoolError, file_name, next_seconds, original_name
from navi.supervisord import FileLog, LogTail, LogUnavailable, RpcLog, identity

log = logging.getLogger("navi")

# Incidents held back (a storm, a full disk), kept across a restart of Navi.
# A dot-name: consumers skip it.
HELD_FILE = ".navi-held.json"
# Waking supervisord is only worth it if it answers at once.
WAKE_TIMEOUT = 0.5


@dataclass(frozen=True)
class Settings:
    notifications_dir: str
    cgroup_root: str
    proc_root: str
    supervisor_url: Optional[str]
    supervisord_log: Optional[str]
    max_files: int
    max_bytes: int
    original_dir: Optional[str] = None


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
        supervisord = identity(ppid, settings.proc_root)
        if supervisord.key is None:
            log.error("cannot identify supervisord (pid %d) in %s: an event delivered again after a restart "
                      "of Navi may be written twice", ppid, settings.proc_root)
        self.origin = Origin(
            host=os.uname().nodename,
            supervisord_pid=ppid,
            supervisord_started=supervisord.started,
            # Unknown: unique to this Navi, so a new supervisord's serials
            # can never collide with an old one's (a duplicate, not a loss).
            supervisord_key=supervisord.key or f"navi-{os.getpid()}-{os.urandom(8).hex()}",
            own_group=os.environ.get("SUPERVISOR_GROUP_NAME"),
            own_name=os.environ.get("SUPERVISOR_PROCESS_NAME"),
            navi_version=__version__,
        )
        self._stamp = supervisord.started or datetime.now(timezone.utc)  # file names sort by it
        self.classifier = Classifier(self.origin, baseline)
        self.coalescer = Coalescer()
        self._restore_held()
        self._saved = self.coalescer.changes
        self._rss: dict[tuple[str, str], rss.RssSample] = {}
        self._write_problem = ""
        self._original_problem = ""
        self.exit_log = ExitLog(self.origin.own_name, os.getpid())
        self._log_tail: Optional[LogTail] = None
        self._log_problem = ""
        try:
            if settings.supervisord_log:
                self._log_tail = LogTail(FileLog(settings.supervisord_log), settings.supervisord_log)
            elif settings.supervisor_url:
                self._log_tail = LogTail(RpcLog(settings.supervisor_url), f"readLog at {settings.supervisor_url}")
            else:
                self._log_problem = "no SUPERVISOR_SERVER_URL and no --supervisord-log: cannot read supervisord's log"
        except LogUnavailable as e:
            self._log_problem = str(e)
        self._read_log()
        self.exit_log.first_read_done()
        url = settings.supervisor_url
        self.deaths = DeathWatch((lambda: rpc.call(url, "supervisor.getState", timeout=WAKE_TIMEOUT)) if url else None)
        self._running_now()
        if self._log_problem:
            log.error("%s; exit statuses will be null until it can be read", self._log_problem)
        log.info(
            "navi %s listening: notifications to %s; memory cgroup %s; exit statuses from %s",
            __version__,
            settings.notifications_dir,
            f"v{self._cgroup.version} at {self._cgroup.path}" if self._cgroup else "none",
            self._log_tail.description if self._log_tail else "nowhere",
        )

    def _running_now(self) -> None:
        """Programs already running when Navi starts: their RUNNING events
        were sent before it was there."""
        if not self.settings.supervisor_url:
            return
        try:
            infos = rpc.call(self.settings.supervisor_url, "supervisor.getAllProcessInfo")
        except (rpc.RpcError, rpc.Fault) as e:
            log.warning("cannot list the running programs (%s): their memory and deaths are watched "
                        "from their next start", e)
            return
        for info in infos if isinstance(infos, list) else ():
            if isinstance(info, dict) and info.get("statename") == "RUNNING" and isinstance(info.get("pid"), int):
                self.classifier.note_running(str(info.get("group")), str(info.get("name")), info["pid"])
        self.deaths.watch(self.classifier.running.values())

    def _open_spool(self) -> None:
        try:
            self._spool = Spool(self.settings.notifications_dir)
            self._spool_problem = ""
        except SpoolError as e:
            if str(e) != self._spool_problem:
                log.error("%s; incidents are held and counted until it can write again", e)
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
        pid = event.fields.get("pid", "")
        self._read_log()
        record = self.exit_log.take(event.fields.get("processname", ""), int(pid) if pid.isdigit() else None)
        if record is not None:
            return record, None
        return None, self._log_problem or (
            "supervisord's log has no exited: line for it (it may have failed to spawn: see its spawnerr: "
            "lines; or supervisord logs only errors, or the line was rotated away)"
        )

    def handle(self, event: Event) -> None:
        incident = triage(event, self.origin)
        now = datetime.now(timezone.utc)
        tick = event.name.startswith("TICK_")
        if tick:
            self._sample_rss(now)
        notification = None
        if incident is not None:
            record, problem = self._exit_record(event) if incident is Incident.EXIT else (None, None)
            notification = self.classifier.decide(event, self._evidence(now, record, problem))
        elif tick:
            # Read at every TICK_5 (and every death), so that each OOM kill
            # is dated within seconds of happening.
            oom_kill = cgroup.read_oom_kill(self._cgroup) if self._cgroup else None
            if self.classifier.unclaimed_kills or oom_kill != self.classifier.oom_baseline:
                self._read_log()  # which deaths are still to come, to claim the kills
                notification = self.classifier.decide(event, self._evidence(now))
            else:
                self.classifier.decide(event, Evidence(observed_at=now, oom_kill=oom_kill))
        else:
            self.classifier.track(event)  # routine: only which programs run
        if notification is not None:
            admitted = self.coalescer.admit(notification, now)
            if admitted is not None:
                self._publish(admitted, now)
        if tick:
            for held in self.coalescer.due(now):
                self._publish(held, now)
        self._save_held()
        self.deaths.watch(self.classifier.running.values())

    def _evidence(
        self, now: datetime, record: Optional[ExitRecord] = None, exit_problem: Optional[str] = None
    ) -> Evidence:
        snapshot = cgroup.read(self._cgroup) if self._cgroup else None
        return Evidence(
            observed_at=now,
            exit=record,
            exit_problem=exit_problem,
            oom_kill=snapshot.oom_kill if snapshot else None,
            memory=snapshot,
            memory_problem=self._cgroup_problem or None,
            sigkills_waiting=self.exit_log.sigkills_waiting(),
            exits_waiting=self.exit_log.waiting(),
            rss=tuple(self._rss.values()),
        )

    def _restore_held(self) -> None:
        data = self._spool.load(HELD_FILE) if self._spool else None
        if data is None:
            return
        try:
            state = decode(SavedState, data)
        except FormatError:
            log.error("%s in %s is not a state Navi wrote; ignored", HELD_FILE, self.settings.notifications_dir)
            return
        self.coalescer.restore(state, datetime.now(timezone.utc))
        log.info("%d incident(s) held by the previous Navi are written when they can be", self.coalescer.held)

    def _save_held(self) -> None:
        """Keep the held incidents on disk, so that a Navi that is killed
        does not lose their count.  Only when they change: during a storm,
        at each crash; otherwise never."""
        if self.coalescer.changes == self._saved or self._spool is None:
            return
        try:
            if self.coalescer.held:
                self._spool.save(HELD_FILE, encode(self.coalescer.save()))
            else:
                self._spool.remove(HELD_FILE)
            self._saved = self.coalescer.changes
        except SpoolError:
            pass  # the disk is full: the write problem is said already

    def _sample_rss(self, now: datetime) -> None:
        """The last memory sample of each running program (on TICKs only: a
        few /proc reads per program)."""
        running = [(group, name, pid) for (group, name), pid in self.classifier.running.items()]
        self._rss = {(s.group, s.name): s for s in rss.sample(running, self.settings.proc_root, now)}

    def _publish(self, notification: Notification, now: datetime) -> None:
        """Write it, or hold it (with its count) for a retry on a TICK."""
        name = file_name(self._stamp, notification.header.get("serial", ""))
        data = notification.to_json()
        problem = ""
        for _ in range(2):
            if self._spool is None:
                self._open_spool()
            if self._spool is None:
                problem = "directory unusable"
                self._write_problem = self._spool_problem  # said when opening failed
                break
            files, size = self._spool.usage()
            if files >= self.settings.max_files or size + len(data) > self.settings.max_bytes:
                problem = "directory full"
                self._say_write_problem(
                    f"{self.settings.notifications_dir} holds {files} notifications, {size} bytes "
                    f"(limits {self.settings.max_files}, {self.settings.max_bytes}): holding new ones back"
                )
                break
            try:
                if self.settings.original_dir and not self._spool.holds(name, notification.id):
                    self._publish_original(notification)
                written = self._spool.publish(name, data, notification.id)
            except SpoolError as e:
                problem = "disk full" if e.disk_full else "write failed"
                self._say_write_problem(str(e))
                # The directory may have been replaced: open it again, once.
                self._spool.close()
                self._spool = None
                continue
            self._say_write_problem("")
            if written is None:
                log.info("%s already written (event delivered again)", name)
            else:
                log.info("%s: %s -> %s", notification.type, notification.summary, written)
            return
        self.coalescer.failed(notification, problem, now)

    def _publish_original(self, notification: Notification) -> None:
        """The original Navi's file for the event, before the new one: a
        Navi killed in between gives a duplicate, never a loss.  Not held
        when it fails: the new format is the record."""
        assert self.settings.original_dir is not None
        try:
            spool = Spool(self.settings.original_dir, alternatives=next_seconds)
            try:
                spool.publish(original_name(notification.time), encode(Original.of(notification)) + b"\n", None)
            finally:
                spool.close()
            self._original_problem = ""
        except SpoolError as e:
            if str(e) != self._original_problem:
                log.error("%s; the original-format file of %s is not written", e, notification.summary)
            self._original_problem = str(e)

    def _say_write_problem(self, problem: str) -> None:
        """One line when writing starts to fail, and one when it works again."""
        if problem and not self._write_problem:
            log.error("%s; incidents are held and counted until it can write again", problem)
        elif self._write_problem and not problem:
            log.info("writing notifications again")
        self._write_problem = problem


def serve(shell: Optional[Shell], stdin_fd: int, protocol_fd: int) -> int:
    proto = Listener()
    while True:
        _write_all(protocol_fd, proto.send_ready())
        while True:
            received = proto.next_event()
            if received is NEED_DATA:
                if shell is not None:
                    shell.deaths.wait_for_input(stdin_fd)
                proto.receive_data(os.read(stdin_fd, 65536))
                continue
            break
        if received is CLOSED:
            log.info("stdin closed; exiting")
            return 0
        if isinstance(received, BadInput):
            log.error("bad input from supervisord, acknowledged and ignored: %s", received.reason)
        elif isinstance(received, Event) and shell is not None:
            try:
                shell.handle(received)
            except Exception as e:  # one line, then keep the pipe moving
                log.error("internal error on %s, event acknowledged: %s: %s", received.name, type(e).__name__, e)
        _write_all(protocol_fd, proto.send_ok())


def listen(settings: Settings, protocol_fd: int) -> int:
    shell: Optional[Shell] = None
    try:
        shell = Shell(settings)
    except Exception as e:  # a listener that dies here is respawned in a loop
        log.error("cannot start (%s: %s): acknowledging events without reporting them", type(e).__name__, e)
    try:
        return serve(shell, 0, protocol_fd)
    except BrokenPipeError:
        log.info("supervisord closed the pipe; exiting")
        return 0
    except KeyboardInterrupt:
        return 0
