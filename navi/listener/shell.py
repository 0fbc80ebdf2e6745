"""``navi listen``: the I/O shell around the core.

stdin and the protocol fd speak the eventlistener protocol; everything else
(supervisord's log, the memory cgroup, the notification directory) is read
or written here, and every decision is made by :class:`navi.listener.core.Core`: the
shell gathers the readings it asks for and carries out its actions, in order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Optional

from navi import __version__
from navi.listener import cgroup, procs, rpc
from navi.listener.childlog import LastWords
from navi.listener.classify import Origin
from navi.listener.coalesce import Outgoing
from navi.listener.core import Action, Core, Limits, Needs, Publish, Readings, Remark, Save, State, WatchPids
from navi.listener.deaths import DeathWatch
from navi.listener.loop import serve
from navi.listener.mainlog import LogTail, LogUnavailable, log_source
from navi.listener.procs import identity
from navi.listener.protocol import Event
from navi.listener.spool import Spool, SpoolError
from navi.names import MAX_STATE_SIZE, STATE_FILE, next_seconds, original_name
from navi.notification import EPISODES, FormatError, Original, decode, encode

log = logging.getLogger("navi")

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
    limits: Limits = field(default_factory=Limits)


class Shell:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
            log.error(
                "cannot identify supervisord (pid %d) in %s: an event delivered again after a restart "
                "of Navi may be written twice",
                ppid,
                settings.proc_root,
            )
        origin = Origin(
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
        stamp = supervisord.started or datetime.now(timezone.utc)  # file names sort by it
        self.core = Core(
            origin,
            stamp,
            baseline,
            settings.limits,
            own_pid=os.getpid(),
            cgroup_path=self._cgroup.path if self._cgroup else None,
        )
        self._write_problem = ""
        self._save_problem = ""
        self._state_unsynced = False
        self._original_problem = ""
        self._log_tail: Optional[LogTail] = None
        self._log_problem = ""
        try:
            self._log_tail = LogTail(*log_source(settings.supervisord_log, settings.supervisor_url))
        except LogUnavailable as e:
            self._log_problem = str(e)
        self.core.first_log(self._read_log())
        url = settings.supervisor_url
        self.deaths = DeathWatch(
            (lambda connected: rpc.call(url, "supervisor.getState", timeout=WAKE_TIMEOUT, connected=connected))
            if url
            else None,
            self._died,
            settings.proc_root,
        )
        self.last_words = LastWords(url, settings.proc_root)
        self._running_now()
        # What the last Navi decided and may not have written is written
        # first, before any event (the spool restores it as it opens).
        self._spool: Optional[Spool] = None
        self._spool_problem = ""
        self._restored = False
        self._leftover: list[Action] = []
        self._open_spool()
        # Then the state as this Navi starts (its counter reading above all):
        # what the next one goes on from, were this one to die unseen.
        self._carry_out(self._take_leftover() + self.core.settle(datetime.now(timezone.utc)))
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
            log.warning(
                "cannot list the running programs (%s): their memory and deaths are watched from their next start", e
            )
            return
        for info in infos if isinstance(infos, list) else ():
            # STARTING too: a death during startsecs is watched as well.
            alive = isinstance(info, dict) and info.get("statename") in ("STARTING", "RUNNING")
            if alive and isinstance(info.get("pid"), int):
                self.core.note_running(str(info.get("group")), str(info.get("name")), info["pid"])
        self.deaths.watch(self.core.running.pids())
        if self.settings.limits.last_words:
            self.last_words.find()

    def _died(self, pids: list[int]) -> None:
        if self.settings.limits.last_words:
            self.last_words.at_death(self.core.running.programs(), pids)

    def _open_spool(self) -> None:
        try:
            self._spool = Spool(self.settings.notifications_dir)
            self._spool_problem = ""
        except SpoolError as e:
            if str(e) != self._spool_problem:
                log.error("%s; incidents are held and counted until it can write again", e)
            self._spool_problem = str(e)
            return
        if not self._restored:  # before anything is saved over it
            self._restored = True
            self._restore()

    def _restore(self) -> None:
        assert self._spool is not None
        data = self._spool.load(STATE_FILE, MAX_STATE_SIZE)
        if data is None:
            return
        try:
            state = decode(State, data)
        except FormatError:
            log.error("%s in %s is not a state Navi wrote; ignored", STATE_FILE, self.settings.notifications_dir)
            return
        self._leftover += self.core.restore(state, datetime.now(timezone.utc))
        if self.core.held:
            log.info("%d incident(s) held by the previous Navi are written when they can be", self.core.held)

    def _take_leftover(self) -> list[Action]:
        leftover, self._leftover = self._leftover, []
        return leftover

    def _read_log(self) -> str:
        """What is new in supervisord's log ("" when it cannot be read: the
        reason stays in ``_log_problem``)."""
        if self._log_tail is None:
            return ""
        try:
            text = self._log_tail.read_new()
            self._log_problem = ""
            return text
        except LogUnavailable as e:
            self._log_problem = str(e)
            return ""

    def handle(self, event: Event) -> None:
        readings = Readings(now=datetime.now(timezone.utc))
        need = self.core.needs(event, readings)
        while need:
            readings = self._gather(need, readings, event)
            need = self.core.needs(event, readings)
        self._carry_out(self._take_leftover() + self.core.handle(event, readings))
        self._carry_out(self.core.settle(readings.now))
        if event.name.startswith("TICK_"):
            self._sync_state()
        else:
            self.last_words.handled(event)
        self.deaths.catch_up()

    def wait(self, fd: int) -> None:
        """Until ``fd`` (stdin) is readable: deaths are seen meanwhile, and
        the memory sampled as often as the core asks."""
        while True:
            due = self.core.sample_in(datetime.now(timezone.utc))
            if self.deaths.wait_for_input(fd, due.total_seconds() if due else None):
                return
            readings = Readings(now=datetime.now(timezone.utc))
            need = self.core.sample_needs(readings)
            while need:
                readings = self._gather(need, readings)
                need = self.core.sample_needs(readings)
            self._carry_out(self.core.sample(readings))
            self._carry_out(self.core.settle(readings.now))

    def _gather(self, need: Needs, readings: Readings, event: Optional[Event] = None) -> Readings:
        changes: dict[str, object] = {}
        if need.log:
            changes.update(log_read=True, log=self._read_log())
            changes["log_problem"] = self._log_problem or None
        if need.memory:
            changes.update(
                memory_read=True,
                memory=cgroup.read(self._cgroup) if self._cgroup else None,
                memory_problem=self._cgroup_problem or None,
                dying=self.deaths.dying(),
            )
        elif need.oom_kill:
            changes.update(oom_kill_read=True, oom_kill=cgroup.read_oom_kill(self._cgroup) if self._cgroup else None)
        if need.rss:  # a few /proc reads per program: on TICKs only
            changes["rss"] = tuple(procs.sample(self.core.running.programs(), self.settings.proc_root, readings.now))
        if need.pressure:
            changes.update(pressure_read=True, pressure=cgroup.read_pressure(self._cgroup) if self._cgroup else None)
        if need.output and event is not None:
            changes.update(output_read=True, output=self.last_words.of(event))
        return replace(readings, **changes)  # type: ignore[arg-type]

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Save):
                self._save(action.state)
            elif isinstance(action, Publish):
                self._publish(action.out)
            elif isinstance(action, WatchPids):
                self.deaths.watch(action.pids)
            elif isinstance(action, Remark):
                log.info("%s", action.line)
        if self._leftover:  # the spool opened, late, and restored a state
            self._carry_out(self._take_leftover())

    def _save(self, state: State) -> None:
        """Replace the state file.  Not fsynced here: a Navi that is killed
        loses nothing the kernel has; the next TICK makes it durable."""
        problem = ""
        if self._spool is None:
            self._open_spool()
        if self._spool is None:
            problem = self._spool_problem
        else:
            try:
                self._spool.save(STATE_FILE, encode(state), sync=False)
                self._state_unsynced = True
            except SpoolError as e:
                problem = str(e)
        if problem and not self._save_problem:
            log.error(
                "cannot save Navi's state (%s): until it can, a restart of Navi loses what it holds "
                "(%d incident(s) now, its oom_kill reading)",
                problem,
                self.core.held,
            )
        elif self._save_problem and not problem:
            log.info("Navi's state is saved again")
        self._save_problem = problem
        if problem:
            self.core.unsaved(problem, datetime.now(timezone.utc))
        else:
            self.core.saved()

    def _sync_state(self) -> None:
        if self._state_unsynced and self._spool is not None:
            try:
                self._spool.sync(STATE_FILE)
                self._state_unsynced = False
            except SpoolError:
                pass  # saved for Navi's restarts, if not yet for the machine's

    def _publish(self, out: Outgoing) -> None:
        """Write it, or have the core hold it (with its count) for a retry on a TICK."""
        notification, name = out.notification, out.name
        data = notification.to_json()
        now = datetime.now(timezone.utc)
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
                # The original format is one file per event: an episode has
                # none of its own (a crash loop's is its death's).
                original = self.settings.original_dir and notification.type not in EPISODES
                if original and not self._spool.holds(name, notification.id):
                    self._publish_original(out)
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
            self.core.published(name)
            return
        self.core.failed(name, problem, now)

    def _publish_original(self, out: Outgoing) -> None:
        """The original Navi's file for the event, before the new one: a
        Navi killed in between gives a duplicate, never a loss.  Not held
        when it fails: the new format is the record."""
        assert self.settings.original_dir is not None
        notification = out.notification
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


def listen(settings: Settings, protocol_fd: int) -> int:
    shell: Optional[Shell] = None
    try:
        shell = Shell(settings)
    except Exception as e:  # a listener that dies here is respawned in a loop
        log.error("cannot start (%s: %s): acknowledging events without reporting them", type(e).__name__, e)
    if shell is None:
        return serve(None, protocol_fd)
    return serve(shell.handle, protocol_fd, wait=shell.wait)
