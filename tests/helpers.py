"""The helpers the tests share, in every tier: test files import them from
here, never from each other or from conftest.py (which holds only pytest
fixtures).

- the classifier's inputs: an origin, events, exit records, memory figures;
- the eventlistener protocol: envelopes as supervisor writes them, and the
  lock-step loop a listener runs;
- ``navi listen`` under the fake supervisord, on a fake world;
- ``navi doctor`` as a command, and its report's lines;
- pidfds a process holds;
- notifications published by the real spool, for the consumer;
- following directories: a Watch run in a thread;
- real supervisord sandboxes, and the processes they leave behind;
- the cache of the container and VM tiers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

import psutil
from hypothesis import settings

from navi import names
from navi.consumer.inbox import Found
from navi.consumer.watch import InotifyUnavailable, Item, Notice, Watch, open_inotify
from navi.demo.sandbox import Sandbox
from navi.fake.play import Player
from navi.fake.scenario import log_time
from navi.fake.wire import envelope_text
from navi.fake.world import FakeWorld
from navi.listener import cgroup
from navi.listener.cgroup import MemorySnapshot
from navi.listener.classify import Origin
from navi.listener.exitlog import ExitRecord, parse_exit
from navi.listener.protocol import CLOSED, NEED_DATA, BadInput, Event, Listener
from navi.listener.spool import Spool
from navi.names import STATE_FILE
from navi.names import notification_name as file_name
from navi.notification import SCHEMA_VERSION, ExitInfo, MemoryInfo, Notification, ProcessInfo, Source

# ---- the classifier's inputs --------------------------------------------------------------

ORIGIN = Origin(
    host="c0ffee",
    supervisord_pid=7,
    supervisord_started=datetime(2026, 11, 24, 23, 0, tzinfo=timezone.utc),
    supervisord_key="boot:7:12345",
    own_group="navi",
    own_name="navi",
    navi_version="test",
)


def examples(n: int) -> int:
    """``n`` examples, scaled as the loaded profile scales hypothesis's
    default of 100 (``--hypothesis-profile=quick`` runs a fifth)."""
    return max(10, n * settings().max_examples // 100)


def event(name: str, payload: str, serial: int = 1) -> Event:
    header = {
        "ver": "3.0",
        "server": "supervisor",
        "serial": str(serial),
        "pool": "navi",
        "poolserial": str(serial),
        "eventname": name,
        "len": str(len(payload)),
    }
    return Event(header, payload)


def exited(name: str = "web", expected: int = 0, pid: int = 42, serial: int = 1) -> Event:
    payload = f"processname:{name} groupname:{name} from_state:RUNNING expected:{expected} pid:{pid}"
    return event("PROCESS_STATE_EXITED", payload, serial)


def fatal(name: str = "web", serial: int = 9) -> Event:
    return event("PROCESS_STATE_FATAL", f"processname:{name} groupname:{name} from_state:BACKOFF", serial)


def record(how: str, pid: Optional[int] = 42) -> ExitRecord:
    parsed = parse_exit(f"exited: web ({how}; not expected)")
    assert parsed is not None
    return ExitRecord(
        parsed.name,
        pid,
        parsed.code,
        parsed.signal,
        parsed.core_dumped,
        parsed.expected,
        f"2026-11-24 23:05:01,200 WARN {parsed.line}",
    )


def memory(oom_kill: Optional[int], problems: tuple[str, ...] = ()) -> MemorySnapshot:
    return MemorySnapshot(
        version=1,
        path="/sys/fs/cgroup/memory",
        limit_bytes=64 << 20,
        usage_bytes=60 << 20,
        peak_bytes=64 << 20,
        oom_kill=oom_kill,
        problems=problems,
    )


# ---- the eventlistener protocol -----------------------------------------------------------


def envelope(eventname: str, payload: str, serial: int = 1, pool: str = "navi") -> bytes:
    """An event exactly as supervisor 4 writes it: len counts characters."""
    return envelope_text(eventname, payload, serial, serial, pool).encode("utf-8")


Parsed = Union[Event, BadInput]


def drive(chunks: Sequence[bytes], max_payload: int = 64 * 1024) -> tuple[list[Parsed], bytes]:
    """Run the lock-step loop a listener runs; return results and all output."""
    proto = Listener(max_payload_chars=max_payload)
    pending = list(chunks)
    results: list[Parsed] = []
    out = bytearray()
    while True:
        out += proto.send_ready()
        while True:
            got = proto.next_event()
            if got is NEED_DATA:
                proto.receive_data(pending.pop(0) if pending else b"")
                continue
            break
        if got is CLOSED:
            return results, bytes(out)
        assert isinstance(got, (Event, BadInput))
        results.append(got)
        out += proto.send_ok()


# ---- navi listen under the fake supervisord -----------------------------------------------

NAVI = (sys.executable, "-m", "navi", "listen")

# Every listener start() started; the no_listener_left fixture (conftest.py)
# kills those still there after each test.
started: list[Player] = []


def start(world: FakeWorld, env: Optional[dict[str, str]] = None, first_serial: int = 0) -> Player:
    """``navi listen`` under the fake supervisord, with the world's settings
    (or ``env`` instead), its stderr in the world's directory."""
    player = Player(
        NAVI,
        world.env() if env is None else env,
        stderr=world.root / "navi.stderr",
        world=world,
        first_serial=first_serial,
    )
    started.append(player)
    return player


def ended(sup: Player) -> tuple[Optional[int], bytes]:
    """End of input: its exit code and what it wrote after."""
    closed = sup.close()
    return closed.exit_code, closed.after_eof


def stderr(world: FakeWorld) -> str:
    return (world.root / "navi.stderr").read_text(errors="replace")


def exited_payload(name: str, pid: int, expected: int = 0) -> str:
    return f"processname:{name} groupname:{name} from_state:RUNNING expected:{expected} pid:{pid}"


def die(world: FakeWorld, name: str, pid: int, how: str) -> None:
    now = log_time(1764025200)
    world.append_log(f"{now} INFO spawned: '{name}' with pid {pid}")
    world.append_log(f"{now} WARN exited: {name} ({how}; not expected)")


def notifications(world: FakeWorld, directory: Optional[Path] = None) -> list[dict[str, Any]]:
    """The notifications in the world's directory (or ``directory``), in name
    order; no temporary file is left, and every other name is a .json one."""
    entries = sorted((directory or world.notifications).iterdir())
    assert [p.name for p in entries if p.name.startswith(".") and p.name != STATE_FILE] == []  # no temp
    files = [p for p in entries if not p.name.startswith(".")]
    assert all(p.name.endswith(".json") for p in files)
    return [json.loads(p.read_text()) for p in files]


# ---- navi doctor --------------------------------------------------------------------------


def run_doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``navi doctor`` with ``env`` and none of this process's NAVI_* or
    SUPERVISOR_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NAVI_", "SUPERVISOR_"))}
    return subprocess.run(
        [sys.executable, "-m", "navi", "doctor", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def report_line(report: str, status: str, what: str) -> str:
    """What the doctor's report says after ``status`` and ``what``."""
    found = re.search(rf"^{status.upper()} +{what}  +(.*)$", report, re.M)
    assert found, report
    return found.group(1)


# ---- pidfds -------------------------------------------------------------------------------


def pidfds(pid: Optional[int] = None) -> dict[int, int]:
    """fd -> pid of the pidfds process ``pid`` (default: this one) holds."""
    fds = {}
    base = f"/proc/{pid or os.getpid()}"
    for fd in os.listdir(f"{base}/fdinfo"):
        try:
            info = Path(f"{base}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        line = next((x for x in info.splitlines() if x.startswith("Pid:")), None)
        if line is not None and "anon_inode:[pidfd]" in os.readlink(f"{base}/fd/{fd}"):
            fds[int(fd)] = int(line.split()[1])
    return fds


# ---- notifications for the consumer -------------------------------------------------------
# With a serial of one's choosing, published by the real spool.

STARTED = datetime(2026, 11, 24, 23, 39, 6, 890000, tzinfo=timezone.utc)


def sample(serial: int, program: str = "web") -> Notification:
    return Notification(
        schema_version=SCHEMA_VERSION,
        id=f"host:boot:1:614770:{serial}",
        type="crash",
        time=STARTED + timedelta(seconds=serial),
        summary=f"{program} crashed: exit status 3",
        process=ProcessInfo(name=program, group=program, pid=1000 + serial),
        exit=ExitInfo(
            code=3,
            signal=None,
            signal_number=None,
            core_dumped=False,
            during_startup=False,
            log_line=f"2026-11-24 23:39:09,395 WARN exited: {program} (exit status 3; not expected)",
            unavailable=None,
        ),
        memory=MemoryInfo(
            cgroup_version=2,
            cgroup_path="/sys/fs/cgroup",
            limit_bytes=201326592,
            usage_bytes=35532800,
            peak_bytes=None,
            oom_kill=0,
            oom_kill_rise=0,
            problems=[],
        ),
        notes=[],
        header={
            "ver": "3.0",
            "server": "supervisor",
            "serial": str(serial),
            "pool": "navi",
            "poolserial": str(serial),
            "eventname": "PROCESS_STATE_EXITED",
            "len": "60",
        },
        metadata={
            "processname": program,
            "groupname": program,
            "from_state": "RUNNING",
            "expected": "0",
            "pid": str(1000 + serial),
        },
        source=Source(host="host", supervisord_pid=1, supervisord_started=STARTED, navi_version="2.0.0"),
    )


def name_of(serial: int) -> str:
    return file_name(STARTED, str(serial))


def publish(directory: Path, *serials: int) -> list[str]:
    """As the listener does it (temp file, fsync, link, directory fsync)."""
    spool = Spool(str(directory))
    try:
        return [str(spool.publish(name_of(s), sample(s).to_json(), sample(s).id)) for s in serials]
    finally:
        spool.close()


# ---- following directories ----------------------------------------------------------------

WAIT = 60  # seconds: generous, never a measure of speed


def inotify_works() -> bool:
    try:
        open_inotify().close()
    except InotifyUnavailable as e:
        print(f"SKIP: {e}")
        return False
    return True


class Collector:
    """Runs a Watch in a thread and keeps what it gives."""

    def __init__(self, w: Watch, cond: Optional[threading.Condition] = None) -> None:
        self.watch = w
        self.items: list[Item] = []
        self.cond = cond or threading.Condition()  # shared, to wait on several
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self.watch.items():
            with self.cond:
                self.items.append(item)
                self.cond.notify_all()

    def wait_for(self, ready: Callable[[list[Item]], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: ready(self.items), WAIT), f"waited {WAIT}s for {what}: {self.items}"

    def found(self) -> list[Found]:
        with self.cond:
            return [i for i in self.items if isinstance(i, Found)]

    def notices(self) -> list[str]:
        with self.cond:
            return [i.text for i in self.items if isinstance(i, Notice)]

    def stop(self) -> None:
        self.watch.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "did not stop"
        self.watch.close()


def count(serials: int) -> Callable[[list[Item]], bool]:
    return lambda items: sum(isinstance(i, Found) for i in items) >= serials


# ---- real supervisord ---------------------------------------------------------------------

MEMORY_LIMIT = 128 * 2**20  # 134217728: the memory_cgroup fixture's limit, with no swap


def own_name(name: str) -> bool:
    """A notification's own name (not one written beside a taken one)."""
    parts = names.parse(name)
    return parts is not None and parts[3] == 0


def has_memory_cgroup() -> bool:
    """Navi runs in the test's own memory cgroup unless told otherwise."""
    try:
        cgroup.locate()
    except cgroup.CgroupError:
        return False
    return True


def _process_start(pid: int) -> Optional[float]:
    """When ``pid`` started (psutil), to recognise it later; None when the
    process is gone (or a zombie: dead, waiting to be reaped)."""
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return process.create_time()
    except psutil.Error:
        return None


def descendants(root: int) -> list[tuple[int, float]]:
    """(pid, start time) of every living descendant of ``root``."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []
    found = [(child.pid, _process_start(child.pid)) for child in children]
    return [(pid, start) for pid, start in found if start is not None]


def kill_leftovers(processes: list[tuple[int, float]], grace: float = 5.0) -> list[int]:
    """Wait for processes we started to end; SIGKILL those still there (the
    same process: same pid and start time).  Returns the pids killed."""
    deadline = time.monotonic() + grace
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [(pid, start) for pid, start in alive if _process_start(pid) == start]
        if alive:
            time.sleep(0.05)
    killed = []
    for pid, start in alive:
        if _process_start(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def without_pressure(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in found if n.get("type") != "pressure"]


def triggered(name: str, then: str) -> str:
    """A shell command that waits (past startsecs) until the test creates
    {mnt}/tmp/go-<name> (E2ESandbox.trigger), then runs ``then``."""
    return f"sh -c 'while [ ! -e {{mnt}}/tmp/go-{name} ]; do sleep 0.2; done; {then}'"


class E2ESandbox(Sandbox):
    """A Sandbox with the waits and checks the end-to-end tests share."""

    def wait_for(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        """As Sandbox's, and a timeout says what Navi said and wrote."""
        try:
            return super().wait_for(ready, timeout, what)
        except TimeoutError as e:
            written = [(n.get("type"), n.get("summary")) for n in self.notifications_list()]
            raise TimeoutError(f"{e}\n--- navi.log:\n{self.log('navi.log')[-3000:]}\n--- written: {written}") from None

    def wait_watched(self, name: str) -> int:
        """Until Navi holds a pidfd of program ``name``'s pid (it read the
        program's STARTING or RUNNING event); returns the pid."""
        pid = self.pid(name)
        self.wait_for(lambda: pid in pidfds(self.pid("navi")).values(), 60, f"Navi to watch {name} (pid {pid})")
        return pid

    def incidents(self) -> list[dict[str, Any]]:
        """The notifications but the pressure episodes: a test of OOM kills
        may climb slowly enough (an emulated CPU's) for Navi to tell one."""
        return without_pressure(self.notifications_list())

    def wait_incidents(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        def enough() -> Optional[list[dict[str, Any]]]:
            found = self.incidents()
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = self.wait_for(enough, timeout, f"{count} incident(s)")
        return result

    def trigger(self, name: str) -> None:
        """Let a program waiting for {mnt}/tmp/go-<name> go on."""
        (self.mnt / "tmp" / f"go-{name}").touch()

    def wait_states(self, states: dict[str, str], timeout: float = 60) -> dict[str, str]:
        def reached() -> Optional[dict[str, str]]:
            now = self.status()
            return now if all(now.get(k) == v for k, v in states.items()) else None

        result: dict[str, str] = self.wait_for(reached, timeout, f"states {states}")
        return result

    def spawned_pids(self, name: str) -> list[int]:
        """Pids of ``name``'s ``spawned:`` lines in supervisord's log, in order."""
        return [
            int(m.group(1))
            for m in re.finditer(
                rf"INFO spawned: '{re.escape(name)}' with pid (\d+)$", self.log("supervisord.log"), re.M
            )
        ]

    def notification_files(self, directory: Optional[Path] = None) -> list[Path]:
        """Everything in the directory but Navi's own state file."""
        return sorted(p for p in (directory or self.notifications).iterdir() if p.name != STATE_FILE)

    def check_files(self, directory: Optional[Path] = None) -> list[dict[str, Any]]:
        """Every file in the notifications directory is a published, valid
        notification with a well-formed name; returns them in name order."""
        # Navi removes its temporary file right after publishing the real
        # one: give a publication in progress a moment to finish.
        deadline = time.monotonic() + 5
        while True:
            files = self.notification_files(directory)
            listed = [p.name for p in files]
            temporary = [n for n in listed if n.startswith(".")]
            if not temporary or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert temporary == [], "temporary files left over"
        assert [n for n in listed if not n.endswith(".json")] == []
        assert [n for n in listed if not own_name(n)] == []
        parsed = [json.loads(p.read_text(encoding="utf-8")) for p in files]
        for name, n in zip(listed, parsed):
            if ":postmortem:" in n["id"] or not n["Header"]:  # no event behind it (a post-mortem, a sample)
                continue
            parts = names.parse(name)
            assert parts is not None and parts[1] == int(n["Header"]["serial"]), name
        ids = [n["id"] for n in parsed]
        assert len(set(ids)) == len(ids), f"duplicate ids: {ids}"
        return parsed

    def check_healthy(self, expect_errors: bool = False, navi_starts: int = 1) -> None:
        """Navi never broke the protocol, and never crashed inside; it and
        supervisord run as the sandbox's user."""
        assert self.status().get("navi") == "RUNNING"
        assert self.process is not None
        users = {psutil.Process(pid).username() for pid in (self.process.pid, self.pid("navi"))}
        assert users == {self.user}, users
        main_log = self.log("supervisord.log")
        assert "UNKNOWN" not in main_log, main_log
        assert "event buffer overflowed" not in main_log, main_log
        assert "Traceback" not in main_log, main_log  # e.g. a readLog of Navi's that supervisord failed on
        navi_log = self.log("navi.log")
        assert "Traceback" not in navi_log, navi_log
        assert "internal error" not in navi_log, navi_log
        assert "bad input" not in navi_log, navi_log
        if not expect_errors:
            errors = [line for line in navi_log.splitlines() if "ERROR" in line]
            if not has_memory_cgroup():  # said once at start, where there is none
                errors = [e for e in errors if not e.endswith("OOM kills will be reported as crashes")]
            assert errors == [], navi_log
        # Navi was never respawned (but for the test's own restarts), and
        # never exited on its own.
        assert len(self.spawned_pids("navi")) == navi_starts, main_log
        assert "exited: navi " not in main_log, main_log
        self.check_files()


SandboxFactory = Callable[..., E2ESandbox]


# ---- the cache of the container and VM tiers -----------------------------------------------


def image_cache() -> Path:
    """Where the container tier keeps its debootstrapped bases, and the VM
    tier its kernel, between runs: $NAVI_IMAGE_CACHE, or ~/.cache/navi-images."""
    configured = os.environ.get("NAVI_IMAGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "navi-images"
