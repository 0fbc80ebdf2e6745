"""``navi doctor``: what Navi sees where it runs, and anything that would make
a notification wrong or missing, each with what to do.

``diagnose`` is pure: the gathered facts in, findings out.  ``gather`` is the
thin shell that collects the facts with the listener's own readers
(navi.listener.cgroup, navi.listener.mainlog, navi.listener.spool) and the options of ``navi
listen``, so that it checks what the listener would use.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from navi import __version__
from navi.listener import cgroup, lastwords, rpc
from navi.listener.mainlog import LogUnavailable, log_source
from navi.listener.procs import identity
from navi.listener.shell import Settings
from navi.listener.spool import Spool, SpoolError

OK, WARN, FAIL = "ok", "warn", "fail"

# SUPERVISOR_SERVER_URL is set for supervisord's children only, not in a shell
# opened in the container: then ask where the shipped supervisord.conf listens.
SHIPPED_URL = "unix:///mnt/home/supervisor.sock"
PROBE = ".navi-doctor-probe"  # a dot-name: the platform skips it
PROBE_SIZE = 4096  # about one notification
LOG_TAIL = 64 << 10
LOW_ROOM = 16 << 20
LOW_INODES = 1000


@dataclass(frozen=True)
class Finding:
    what: str
    status: str  # OK, WARN or FAIL
    seen: str
    todo: str = ""


@dataclass(frozen=True)
class ProgramFacts:
    """A process supervisord runs (a program or an event listener)."""

    name: str
    group: str
    command: str
    state: str
    pid: int
    stdout_logfile: str
    stderr_logfile: str
    # Where its stderr and stdout go: its last words, or why none.
    outputs: tuple[lastwords.Where, ...] = ()


@dataclass(frozen=True)
class SupervisordFacts:
    url: str
    url_given: bool  # False: SHIPPED_URL, tried because none was given
    error: Optional[str] = None  # why it could not be asked
    version: str = ""
    state: str = ""
    pid: Optional[int] = None
    programs: tuple[ProgramFacts, ...] = ()


@dataclass(frozen=True)
class SupervisordProcess:
    """supervisord's pid as this /proc shows it."""

    pid: int
    is_supervisord: bool  # False: another pid namespace (doctor outside the container)
    uid: Optional[int] = None
    memory_cgroup: Optional[str] = None  # as /proc/<pid>/cgroup names it
    identified: bool = False  # what Navi needs to name files so that a redelivery is recognised
    started: Optional[datetime] = None


@dataclass(frozen=True)
class MainLog:
    source: str
    text: Optional[str]  # its tail
    error: Optional[str] = None


@dataclass(frozen=True)
class Directory:
    path: str
    error: Optional[str] = None
    files: int = 0
    size: int = 0
    fstype: Optional[str] = None
    mount_point: Optional[str] = None
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    free_inodes: Optional[int] = None  # None: the filesystem has no inode count


@dataclass(frozen=True)
class MemoryFacts:
    error: Optional[str] = None
    found: Optional[cgroup.MemoryCgroup] = None
    snapshot: Optional[cgroup.MemorySnapshot] = None


@dataclass(frozen=True)
class Facts:
    settings: Settings
    uid: int
    user: str
    supervisord: SupervisordFacts
    process: Optional[SupervisordProcess]
    main_log: MainLog
    notifications: Directory
    memory: MemoryFacts


# -- the pure part ------------------------------------------------------------


def is_navi(command: str) -> bool:
    """Whether a supervisord program's command runs ``navi listen``."""
    words = command.split()
    return any(os.path.basename(w) == "navi" and "listen" in words[i + 1 :] for i, w in enumerate(words))


def _size(n: Optional[int]) -> str:
    if n is None:
        return "unknown"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def memory_line(text: str, version: int) -> Optional[str]:
    """The memory cgroup's path in a /proc/<pid>/cgroup text."""
    for line in cgroup.parse_proc_cgroup(text):
        if (version == 1 and "memory" in line.controllers) or (version == 2 and line.hierarchy == 0):
            return line.path
    return None


def mount_of(path: str, mounts: list[cgroup.Mount]) -> Optional[cgroup.Mount]:
    """The mount that holds ``path`` (absolute, resolved): the longest mount
    point above it, the last one mounted if several are stacked."""
    best: Optional[cgroup.Mount] = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/")
        if (path == mount.mount_point or path.startswith(point + "/")) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def _this_run(log: str) -> str:
    """The lines since supervisord last read its configuration: after the
    previous start's "supervisord started" line (the log outlives restarts)."""
    starts = [m.end() for m in re.finditer(r"^.* INFO supervisord started with pid \d+$", log, re.M)]
    return log[starts[-2] :] if len(starts) >= 2 else log


def _supervisord(s: SupervisordFacts, process: Optional[SupervisordProcess]) -> list[Finding]:
    where = s.url if s.url_given else f"{s.url} (the shipped configuration's socket: no URL was given)"
    if s.error is not None:
        return [
            Finding(
                "supervisord",
                FAIL,
                f"cannot ask supervisord at {where}: {s.error}",
                "start supervisord with [unix_http_server] and [rpcinterface:supervisor] as in the shipped "
                "supervisord.conf; Navi gets its URL from SUPERVISOR_SERVER_URL, set by supervisord (for doctor: "
                "--supervisor-url or NAVI_SUPERVISOR_URL)",
            )
        ]
    started = f", started {process.started:%Y-%m-%d %H:%M:%S} UTC" if process and process.started else ""
    seen = f"supervisord {s.version}, {s.state}, pid {s.pid}{started}, at {where}"
    if s.state == "RUNNING":
        found = [Finding("supervisord", OK, seen)]
    else:
        found = [Finding("supervisord", WARN, seen, "supervisord is starting or stopping: ask again when it runs")]
    if process is not None and not process.is_supervisord:
        found.append(
            Finding(
                "supervisord",
                WARN,
                f"pid {process.pid} in this /proc is not supervisord: doctor runs in another pid namespace, and its "
                "other checks are not what Navi sees",
                "run navi doctor inside the container (docker exec / podman exec CONTAINER navi doctor)",
            )
        )
    elif process is not None and not process.identified:
        found.append(
            Finding(
                "supervisord",
                WARN,
                f"cannot read /proc/{process.pid}/stat: an event delivered again after a restart of Navi may be "
                "written twice",
                "give Navi the /proc of supervisord's pid namespace (--proc-root, NAVI_PROC_ROOT)",
            )
        )
    navis = [p for p in s.programs if is_navi(p.command)]
    if not navis:
        found.append(
            Finding(
                "listener",
                FAIL,
                "no program of supervisord runs navi listen: no notification is ever written",
                "add navi.conf (its [eventlistener:navi]) to [include] files in supervisord.conf; a relative path "
                "is read next to the configuration file supervisord was given, not next to a link's target",
            )
        )
    if len(navis) > 1:
        names = ", ".join(f"{p.group}:{p.name}" for p in navis)
        found.append(
            Finding(
                "listener",
                WARN,
                f"several programs run navi listen ({names}): each incident is reported once by each",
                "keep one [eventlistener:navi]",
            )
        )
    for navi in navis:
        seen = (
            f"[eventlistener:{navi.group}] {navi.state}, pid {navi.pid}: {navi.command}; its messages: "
            f"{navi.stderr_logfile}"
        )
        if navi.state != "RUNNING":
            found.append(
                Finding(
                    "listener",
                    FAIL,
                    seen,
                    f"see why in {navi.stderr_logfile} (supervisorctl tail {navi.group}:{navi.name} stderr)",
                )
            )
        else:
            found.append(Finding("listener", OK, seen))
        if navi.stdout_logfile.lower() not in ("none", ""):
            found.append(
                Finding(
                    "listener",
                    WARN,
                    f"{navi.group}'s stdout, the protocol pipe, is logged to {navi.stdout_logfile}: rotating it "
                    "makes supervisord spin at 100% CPU (supervisor issue #807)",
                    "stdout_logfile=NONE, as in navi.conf",
                )
            )
    return found


def _last_words(s: SupervisordFacts, settings: Settings) -> list[Finding]:
    """Programs whose deaths can carry no last words: neither stream is
    kept in a file Navi can read."""
    if not settings.limits.last_words:
        return [Finding("last words", OK, "not read (--no-output-tail, NAVI_NO_OUTPUT_TAIL)")]
    programs = [p for p in s.programs if p.outputs and not is_navi(p.command)]
    mute = [p for p in programs if all(w.file is None for w in p.outputs)]
    found = [
        Finding(
            "last words",
            WARN,
            f"{p.group}:{p.name} keeps no log: "
            + "; ".join(w.unavailable or "" for w in p.outputs)
            + ": its deaths carry no last words",
            "give it stdout_logfile=AUTO, or a file under /mnt/log (and redirect_stderr=true, or a stderr_logfile)",
        )
        for p in mute
    ]
    if programs and not mute:
        found.append(Finding("last words", OK, f"read from the logs of {len(programs)} program(s) at their deaths"))
    return found


def _main_log(log: MainLog, supervisord: SupervisordFacts) -> list[Finding]:
    if log.error is not None or log.text is None:
        unasked = supervisord.error is not None and log.source.startswith("readLog")
        return [
            Finding(
                "main log",
                FAIL,
                f"{log.source}: {log.error}: exit codes and signals will be null",
                "see supervisord above; or give Navi the log file (--supervisord-log, NAVI_SUPERVISORD_LOG)"
                if unasked
                else "in [supervisord]: logfile= a file (not syslog), loglevel=info",
            )
        ]
    lines = log.text.count("\n")
    found = [Finding("main log", OK, f"{log.source}: {lines} lines in its last {_size(LOG_TAIL)}")]
    levels = set(re.findall(r"^\S+ \S+ ([A-Z]{4}) ", log.text, re.M))
    if "INFO" not in levels:
        found.append(
            Finding(
                "main log",
                WARN,
                "no INFO line in it: with loglevel above info, expected exits and the spawned: lines that give pids "
                "are missing, and with loglevel error the exited: lines too",
                "loglevel=info in [supervisord]",
            )
        )
    run = _this_run(log.text)
    for include in dict.fromkeys(re.findall(r' WARN No file matches via include "([^"]*)"', run)):
        found.append(
            Finding(
                "main log",
                WARN,
                f"supervisord found no file for its [include] {include}",
                "a relative include is read next to the configuration file supervisord was given (-c), not next to "
                "a link's target; is navi.conf there?",
            )
        )
    if " CRIT Supervisor is running as root." in run:
        found.append(
            Finding(
                "main log",
                WARN,
                "supervisord runs as root, and so do its programs and Navi",
                "user=mop in [supervisord], or start the container as mop",
            )
        )
    return found


def _notifications(d: Directory, settings: Settings) -> list[Finding]:
    if d.error is not None:
        return [
            Finding(
                "notifications",
                FAIL,
                f"{d.error}: incidents are held and counted, never written",
                "the platform mounts the volume on /mnt; the directory must exist and be writable by the user "
                "supervisord runs as (mop); or set --notifications-dir (NAVI_NOTIFICATIONS_DIR) in navi.conf",
            )
        ]
    found = [
        Finding(
            "notifications",
            OK,
            f"{d.path}: written and removed a {_size(PROBE_SIZE)} probe; {d.files} notification(s) waiting, "
            f"{_size(d.size)} (Navi holds new ones back at {settings.max_files} files or {_size(settings.max_bytes)})",
        )
    ]
    if d.files >= settings.max_files or d.size >= settings.max_bytes:
        found.append(
            Finding(
                "notifications",
                WARN,
                "the directory is full: new notifications are held until the platform takes some",
                "the platform must remove the files it has read; or raise --max-files / --max-bytes",
            )
        )
    inodes = "" if d.free_inodes is None else f", {d.free_inodes} inodes free"
    room = f"{d.fstype} mounted at {d.mount_point}: {_size(d.free_bytes)} free of {_size(d.total_bytes)}{inodes}"
    if d.fstype == "overlay" and d.mount_point == "/":
        found.append(
            Finding(
                "filesystem",
                WARN,
                f"{room}: the container's own filesystem, not a volume: the platform does not "
                "see these files, and they go with the container",
                "mount the application's volume on /mnt",
            )
        )
    elif (d.free_bytes is not None and d.free_bytes < LOW_ROOM) or (
        d.free_inodes is not None and d.free_inodes < LOW_INODES
    ):
        found.append(
            Finding(
                "filesystem",
                WARN,
                f"{room}: nearly full; when it is full, notifications are held and retried every 5 s",
                "free room on the volume",
            )
        )
    else:
        found.append(Finding("filesystem", OK, room))
    return found


def _memory(m: MemoryFacts, process: Optional[SupervisordProcess]) -> list[Finding]:
    if m.found is None or m.snapshot is None:
        return [
            Finding(
                "memory cgroup",
                FAIL,
                f"{m.error}: OOM kills will be reported as crashes",
                "Navi needs /proc and the cgroup filesystem as the container sees them, readable "
                "(--proc-root, --cgroup-root)",
            )
        ]
    found, snap = m.found, m.snapshot
    named = found.cgroup_path
    if named == "/":
        how = "/proc/self/cgroup names /: a cgroup namespace, or the root"
    elif found.path.rstrip("/").endswith(named.rstrip("/")):
        how = f"/proc/self/cgroup names {named}"
    else:
        how = (
            f"/proc/self/cgroup names {named}, which is not a path under the mount (no cgroup namespace): "
            "found through the mount's root in /proc/self/mountinfo"
        )
    result = [Finding("memory cgroup", OK, f"v{found.version} at {found.path} ({how})")]
    if process is not None and process.is_supervisord and process.memory_cgroup not in (None, named):
        result.append(
            Finding(
                "memory cgroup",
                WARN,
                f"supervisord (pid {process.pid}) is in memory cgroup {process.memory_cgroup}, this process in "
                f"{named}: Navi, supervisord's child, counts the kills of its own",
                "run navi doctor inside the container, as supervisord's user",
            )
        )
    limit = "no limit" if snap.limit_bytes is None else f"limit {_size(snap.limit_bytes)}"
    seen = f"{limit}, usage {_size(snap.usage_bytes)}, peak {_size(snap.peak_bytes)}, oom_kill {snap.oom_kill}"
    if snap.oom_kill is None:
        result.append(
            Finding(
                "memory figures",
                FAIL,
                f"{seen}: {'; '.join(snap.problems)}: OOM kills will be reported as crashes",
                "Linux 4.13 or later (cgroup v1), or cgroup v2",
            )
        )
    elif snap.problems:
        result.append(
            Finding(
                "memory figures",
                WARN,
                f"{seen}; {'; '.join(snap.problems)}",
                "notifications carry these figures as null, and say so in memory.problems",
            )
        )
    else:
        result.append(Finding("memory figures", OK, seen))
    return result


def _user(uid: int, user: str, process: Optional[SupervisordProcess]) -> Finding:
    who = f"uid {uid} ({user})"
    if process is not None and process.is_supervisord and process.uid is not None:
        if process.uid == 0:
            return Finding(
                "user",
                WARN,
                "supervisord runs as root, and so do its programs and Navi",
                "user=mop in [supervisord], or start the container as mop",
            )
        if process.uid != uid:
            return Finding(
                "user",
                WARN,
                f"doctor runs as {who}, supervisord (and Navi) as uid {process.uid}: "
                "the directory was checked for the wrong user",
                f"run navi doctor as uid {process.uid} (exec --user {process.uid})",
            )
        return Finding("user", OK, f"{who}, as supervisord and Navi")
    if uid == 0:
        return Finding(
            "user",
            WARN,
            "doctor runs as root; Navi runs as supervisord's user (mop in the run image)",
            "run navi doctor as that user",
        )
    return Finding("user", OK, who)


def diagnose(facts: Facts) -> list[Finding]:
    """What Navi sees, and what would make its notifications wrong or missing."""
    return [
        *_supervisord(facts.supervisord, facts.process),
        *_last_words(facts.supervisord, facts.settings),
        *_main_log(facts.main_log, facts.supervisord),
        *_notifications(facts.notifications, facts.settings),
        *_memory(facts.memory, facts.process),
        _user(facts.uid, facts.user, facts.process),
    ]


def render(findings: list[Finding]) -> str:
    width = max(len(f.what) for f in findings)
    lines = [f"navi doctor {__version__}: what Navi sees here"]
    for f in findings:
        lines.append(f"{f.status.upper():<4}  {f.what:<{width}}  {f.seen}")
        if f.todo:
            lines.append(f"{'':<4}  {'':<{width}}  -> {f.todo}")
    failed = sum(f.status == FAIL for f in findings)
    warned = sum(f.status == WARN for f in findings)
    if failed:
        lines.append(f"verdict: Navi cannot do its job here ({failed} failure(s), {warned} warning(s))")
    else:
        lines.append(f"verdict: Navi can do its job here ({warned} warning(s))")
    return "\n".join(lines) + "\n"


def exit_status(findings: list[Finding]) -> int:
    return 1 if any(f.status == FAIL for f in findings) else 0


# -- the I/O shell --------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _ask_supervisord(url: str, url_given: bool) -> SupervisordFacts:
    """All that doctor asks supervisord, in one place."""
    try:
        version, state, pid = (rpc.call(url, f"supervisor.{m}") for m in ("getSupervisorVersion", "getState", "getPID"))
        configs: list[dict[str, Any]] = rpc.call(url, "supervisor.getAllConfigInfo")
        infos: list[dict[str, Any]] = rpc.call(url, "supervisor.getAllProcessInfo")
    except Exception as e:  # whatever the client raises, said in one line
        return SupervisordFacts(url, url_given, error=str(e) or type(e).__name__)
    by_name = {(i["group"], i["name"]): i for i in infos}
    programs = []
    for c in configs:
        info = by_name.get((c["group"], c["name"]), {})
        programs.append(
            ProgramFacts(
                name=_text(c["name"]),
                group=_text(c["group"]),
                command=_text(c["command"]),
                state=_text(info.get("statename", "not started")),
                pid=int(info.get("pid", 0)),
                stdout_logfile=_text(c.get("stdout_logfile")),
                stderr_logfile=_text(c.get("stderr_logfile")),
                outputs=(lastwords.where(c, "stderr"), lastwords.where(c, "stdout")),
            )
        )
    return SupervisordFacts(
        url, url_given, None, _text(version), _text(state.get("statename")), int(pid), tuple(programs)
    )


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(1 << 20).decode("utf-8", "replace")


def _look_at(pid: int, proc_root: str, version: Optional[int]) -> SupervisordProcess:
    base = os.path.join(proc_root, str(pid))
    try:
        command = _read(os.path.join(base, "cmdline")).replace("\0", " ")
        uid = os.stat(base).st_uid
    except OSError:
        return SupervisordProcess(pid, False)
    if "supervisord" not in command:
        return SupervisordProcess(pid, False)
    memory = None
    if version is not None:
        with contextlib.suppress(OSError):
            memory = memory_line(_read(os.path.join(base, "cgroup")), version)
    who = identity(pid, proc_root)
    return SupervisordProcess(pid, True, uid, memory, who.key is not None, who.started)


def _read_main_log(settings: Settings, supervisord: SupervisordFacts) -> MainLog:
    try:
        source, name = log_source(settings.supervisord_log, supervisord.url)
        if not settings.supervisord_log and supervisord.error is not None:
            return MainLog(name, None, "supervisord cannot be asked")
        return MainLog(name, source.tail(LOG_TAIL))
    except LogUnavailable as e:
        return MainLog(settings.supervisord_log or f"readLog at {supervisord.url}", None, str(e))


def _directory(path: str, proc_root: str) -> Directory:
    try:
        spool = Spool(path)
    except SpoolError as e:
        return Directory(path, str(e))
    try:
        # A real write, as Navi writes: catches a read-only mount, a full
        # disk or quota, which a permission check does not.
        spool.save(PROBE, b"\n" * PROBE_SIZE)
        spool.remove(PROBE)
        files, size = spool.usage()
    except (SpoolError, OSError) as e:
        return Directory(path, str(e))
    finally:
        spool.close()
    found = Directory(path, None, files, size)
    try:
        mounts = cgroup.parse_mountinfo(_read(os.path.join(proc_root, "self", "mountinfo")))
        st = os.statvfs(path)
    except OSError:
        return found
    mount = mount_of(os.path.realpath(path), mounts)
    return Directory(
        path,
        None,
        files,
        size,
        fstype=mount.fstype if mount else "unknown filesystem",
        mount_point=mount.mount_point if mount else "?",
        free_bytes=st.f_bavail * st.f_frsize,
        total_bytes=st.f_blocks * st.f_frsize,
        free_inodes=st.f_favail if st.f_files else None,
    )


def _read_memory(settings: Settings) -> MemoryFacts:
    try:
        found = cgroup.locate(settings.proc_root, settings.cgroup_root)
    except cgroup.CgroupError as e:
        return MemoryFacts(str(e))
    return MemoryFacts(None, found, cgroup.read(found))


def gather(settings: Settings) -> Facts:
    url_given = bool(settings.supervisor_url)
    supervisord = _ask_supervisord(settings.supervisor_url or SHIPPED_URL, url_given)
    memory = _read_memory(settings)
    process = None
    if supervisord.pid is not None:
        process = _look_at(supervisord.pid, settings.proc_root, memory.found.version if memory.found else None)
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "no name"
    return Facts(
        settings=settings,
        uid=uid,
        user=user,
        supervisord=supervisord,
        process=process,
        main_log=_read_main_log(settings, supervisord),
        notifications=_directory(settings.notifications_dir, settings.proc_root),
        memory=memory,
    )


def main(settings: Settings) -> int:
    findings = diagnose(gather(settings))
    print(render(findings), end="")
    return exit_status(findings)
