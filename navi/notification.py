"""The notification file format: one JSON object per incident.

``schema`` is an integer that grows when a change could break a consumer
(a key removed, renamed or retyped); new optional keys do not change it.

Plain frozen dataclasses, encoded and decoded here with the standard
library: the listener runs in the customer's memory limit, and pydantic
alone would double its size.  ``navi.consumer.schema`` gives pydantic the same
classes, for the published JSON Schema and for consumers' validation.
A field's ``description`` and ``alias`` (its key in the file) are in its
metadata, where pydantic reads them too.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Optional, TypeVar, Union, get_args, get_origin, get_type_hints

SCHEMA_VERSION = 1

# crash, oom and fatal are incidents: a death, or supervisord giving up.
# crash_loop and pressure are episodes, each written when it begins and
# when it ends (new in 2.1: see docs/format.md#versions).
Kind = Literal["crash", "oom", "fatal", "crash_loop", "pressure"]
DEATHS = ("crash", "oom")  # their counts add up to the deaths in supervisord's log
EPISODES = ("crash_loop", "pressure")
Phase = Literal["began", "ended"]


def _doc(description: str, *examples: Any) -> dict[str, Any]:
    """A field's metadata: its description and examples, for the schema."""
    return {"description": description, "examples": list(examples)} if examples else {"description": description}


@dataclass(frozen=True)
class ProcessInfo:
    name: Optional[str] = field(
        metadata=_doc(
            "supervisord's process name, as in the event; null for an OOM kill that no supervised program's death "
            "claimed (the container's notification)",
            "web",
            None,
        )
    )
    group: Optional[str] = field(metadata=_doc("supervisord's group name, as in the event (null likewise)", "web"))
    pid: Optional[int] = field(metadata=_doc("pid of the process that died, when known", 17984))


@dataclass(frozen=True)
class ProgramMemory:
    name: str = field(metadata=_doc("supervisord's process name", "web"))
    group: str = field(metadata=_doc("supervisord's group name", "web"))
    pid: int = field(metadata=_doc("the program's pid when sampled", 17984))
    rss_bytes: int = field(metadata=_doc("resident memory of the program and all its descendants", 190316544))
    sampled_at: datetime = field(
        metadata=_doc("when (Navi samples every 5 s, on TICK_5)", "2026-11-24T23:39:05.120000Z")
    )


@dataclass(frozen=True)
class ExitInfo:
    code: Optional[int] = field(metadata=_doc("exit code; null when killed by a signal or unknown", 3, None))
    signal: Optional[str] = field(metadata=_doc('signal that killed it, like "SIGKILL"; else null', "SIGSEGV", None))
    signal_number: Optional[int] = field(metadata=_doc("number of that signal; else null", 11, None))
    core_dumped: Optional[bool] = field(metadata=_doc("whether it dumped core; null when unknown", False))
    during_startup: bool = field(
        metadata=_doc("it died before startsecs (PROCESS_STATE_BACKOFF), or never got running (FATAL)", False)
    )
    log_line: Optional[str] = field(
        metadata=_doc(
            "supervisord's main log line this was read from",
            "2026-11-24 23:39:09,395 WARN exited: web (terminated by SIGSEGV; not expected)",
        )
    )
    unavailable: Optional[str] = field(
        metadata=_doc(
            "why the exit status is null, when it is",
            None,
            "supervisord's log has no exited: line for it (it may have failed to spawn: see its spawnerr: lines; "
            "or supervisord logs only errors, or the line was rotated away)",
        )
    )


@dataclass(frozen=True)
class MemoryInfo:
    cgroup_version: int = field(metadata=_doc("1 or 2", 2))
    cgroup_path: str = field(metadata=_doc("the memory cgroup's directory as Navi read it", "/sys/fs/cgroup"))
    limit_bytes: Optional[int] = field(metadata=_doc("memory limit; null when unlimited or unread", 201326592))
    usage_bytes: Optional[int] = field(metadata=_doc("memory usage when Navi read it", 35532800))
    peak_bytes: Optional[int] = field(metadata=_doc("peak usage, where the kernel offers it", 201326592, None))
    oom_kill: Optional[int] = field(metadata=_doc("the cgroup's oom_kill counter (total kills)", 1))
    oom_kill_rise: Optional[int] = field(
        metadata=_doc("how much oom_kill rose since Navi last looked; null when it cannot tell", 1)
    )
    problems: list[str] = field(
        metadata=_doc("figures that could not be read, and why", [], ["memory.peak: No such file or directory"])
    )
    victim: Optional[ProgramMemory] = field(
        metadata=_doc("the last sample of the program that died, before it died"), default=None
    )
    programs: list[ProgramMemory] = field(
        metadata=_doc("the last sample of each supervised program, largest first: who held the memory"),
        default_factory=list,
    )


@dataclass(frozen=True)
class StreamTail:
    lines: list[str] = field(
        metadata=_doc(
            "its last lines, oldest first: at most 40 and 4 KiB. Invalid UTF-8 and NUL bytes are replaced "
            "by U+FFFD; anything else is as the program wrote it (escape sequences included)",
            ["Error: Cannot find module 'express'"],
        )
    )
    file: Optional[str] = field(metadata=_doc("the log file they were read from", "/mnt/log/web-stderr.log"))
    cut: bool = field(
        metadata=_doc(
            "earlier output is left out: more than 40 lines or 4 KiB, or the first line is the end of a longer one",
            False,
        )
    )
    unavailable: Optional[str] = field(
        metadata=_doc(
            "why there are no lines, when there are none to be had",
            None,
            "stderr goes to stdout (redirect_stderr=true)",
            "stdout_logfile=NONE: supervisord keeps no log of it",
        )
    )


@dataclass(frozen=True)
class Output:
    stderr: StreamTail = field(metadata=_doc("the end of the program's stderr"))
    stdout: StreamTail = field(metadata=_doc("the end of the program's stdout"))
    at_death: bool = field(
        metadata=_doc(
            "read the moment Navi saw the process die, before supervisord could start it again; false when "
            "read later, at its event (no pidfd watched it): then the lines may end with the restarted "
            "process's first output",
            True,
        )
    )


@dataclass(frozen=True)
class Deaths:
    total: int = field(
        metadata=_doc("unexpected deaths of this program since supervisord started (like restartCount)", 12)
    )
    recent: int = field(metadata=_doc("of those, in the last window_seconds", 5))
    window_seconds: int = field(metadata=_doc("the window of recent (a setting; 600 by default)", 600))
    crash_loop: bool = field(metadata=_doc("whether the program is in a crash loop now", True))


@dataclass(frozen=True)
class CrashLoop:
    phase: Phase = field(metadata=_doc("began: the program entered a crash loop; ended: it left it", "began"))
    began: datetime = field(metadata=_doc("when it entered the loop", "2026-11-24T23:40:01.002000Z"))
    ended: Optional[datetime] = field(metadata=_doc("when it left it; null while it lasts", None))
    why_ended: Optional[str] = field(
        metadata=_doc("why Navi says it is over", None, "up for 600 s without dying", "stopped", "FATAL")
    )
    deaths: int = field(metadata=_doc("deaths within the loop so far", 5))
    first_death: datetime = field(
        metadata=_doc("the first death of the loop (within the window before it began)", "2026-11-24T23:38:12Z")
    )
    last_death: datetime = field(metadata=_doc("the last death so far", "2026-11-24T23:40:01.002000Z"))


@dataclass(frozen=True)
class Pressure:
    phase: Phase = field(
        metadata=_doc(
            "began or ended: a pressure notification's own episode; in an oom, the episode the kill came in", "began"
        )
    )
    episode: str = field(
        metadata=_doc(
            "the id of the pressure notification that began the episode",
            "web-7f9c2:5f8b48f3-5e61-4ce9-9be0-a8ce76da2f0f:1:614770:pressure:20261124T233905.120000Z",
        )
    )
    began: datetime = field(metadata=_doc("when it began", "2026-11-24T23:39:05.120000Z"))
    ended: Optional[datetime] = field(metadata=_doc("when it ended; null while it lasts", None))
    working_set_bytes: Optional[int] = field(
        metadata=_doc(
            "usage without the page cache the kernel can drop (inactive_file), as the kubelet counts it", 161480704
        )
    )
    limit_bytes: Optional[int] = field(metadata=_doc("the memory limit", 201326592))
    peak_working_set_bytes: Optional[int] = field(
        metadata=_doc("the highest working set seen in the episode", 188743680)
    )
    limit_hits: Optional[int] = field(
        metadata=_doc(
            "charges that hit the limit since the episode began (v1 memory.failcnt, v2 memory.events max)", 112
        )
    )
    throttled: Optional[int] = field(
        metadata=_doc("v2: times over memory.high since the episode began (memory.events high); else null", 0)
    )
    stall_some_avg10: Optional[float] = field(
        metadata=_doc(
            "v2 PSI (memory.pressure): share of the last 10 s, in %, that some task stalled on memory; else null",
            4.5,
        )
    )
    stall_full_avg10: Optional[float] = field(metadata=_doc("likewise, all tasks at once; else null", 0.8))


@dataclass(frozen=True)
class Coalesced:
    first: datetime = field(
        metadata=_doc(
            "when the first incident this notification stands for was observed", "2026-11-24T23:40:01.002000Z"
        )
    )
    last: datetime = field(
        metadata=_doc("when the last one was (this notification's own time)", "2026-11-24T23:41:00.950000Z")
    )
    reason: str = field(
        metadata=_doc(
            'why they were not written one by one: "rate limit", "directory full", ...',
            "rate limit",
            "directory full",
            "disk full",
        )
    )


@dataclass(frozen=True)
class Source:
    host: str = field(metadata=_doc("the container's host name", "web-7f9c2"))
    supervisord_pid: Optional[int] = field(metadata=_doc("supervisord's pid (Navi's parent)", 1))
    supervisord_started: Optional[datetime] = field(
        metadata=_doc("when supervisord started; null when it could not be read", "2026-11-24T23:39:06.890000Z")
    )
    navi_version: str = field(metadata=_doc("the version of Navi that wrote the file", "2.0.0"))


@dataclass(frozen=True)
class Notification:
    """One incident: a crash, an OOM kill or a FATAL, as Navi saw it."""

    schema_version: int = field(
        metadata={
            "alias": "schema",
            **_doc(
                "format version: grows only when a change could break a consumer (a key removed, "
                "renamed or retyped); new optional keys leave it alone",
                1,
            ),
        }
    )
    id: str = field(
        metadata=_doc(
            "unique; the same event delivered twice gives the same id: host, supervisord's identity (boot id, pid, "
            "start time in ticks) and the event's serial",
            "web-7f9c2:5f8b48f3-5e61-4ce9-9be0-a8ce76da2f0f:1:614770:24",
        )
    )
    type: Kind = field(
        metadata=_doc(
            "crash, oom or fatal (incidents); crash_loop or pressure (episodes: written as each begins and ends)",
            "oom",
        )
    )
    time: datetime = field(metadata=_doc("when Navi observed the incident (UTC)", "2026-11-24T23:39:09.399933Z"))
    summary: str = field(
        metadata=_doc(
            "one line for a person",
            "web was killed by the kernel's OOM killer (memory limit 192.0 MiB, peak 192.0 MiB)",
        )
    )
    process: ProcessInfo = field(metadata=_doc("the supervised process the incident is about"))
    exit: ExitInfo = field(metadata=_doc("how it ended, from supervisord's main log"))
    memory: Optional[MemoryInfo] = field(
        metadata=_doc("the container's memory cgroup when Navi looked; null when none could be found")
    )
    notes: list[str] = field(
        metadata=_doc(
            "what Navi could not establish, and why",
            [],
            ["this OOM kill was counted at a reading 3 ms before this death was reported"],
        )
    )
    # The event as received, under the keys the original Navi used, so that
    # its consumers (keyed on Header.eventname and Metadata) keep working.
    header: dict[str, str] = field(
        metadata={
            "alias": "Header",
            **_doc(
                "the event's header tokens, as received (the original Navi's key)",
                {
                    "ver": "3.0",
                    "server": "supervisor",
                    "serial": "24",
                    "pool": "navi",
                    "poolserial": "24",
                    "eventname": "PROCESS_STATE_EXITED",
                    "len": "69",
                },
            ),
        }
    )
    metadata: dict[str, str] = field(
        metadata={
            "alias": "Metadata",
            **_doc(
                "the event's payload tokens, as received (the original Navi's key)",
                {"processname": "web", "groupname": "web", "from_state": "RUNNING", "expected": "0", "pid": "17984"},
            ),
        }
    )
    source: Source = field(metadata=_doc("who wrote the file"))
    count: int = field(
        metadata=_doc(
            "incidents of this program and type this notification stands for: more than 1 when a crash storm (or a "
            "full disk) held some back; the counts of all notifications add up to all incidents",
            1,
            12,
        ),
        default=1,
    )
    coalesced: Optional[Coalesced] = field(
        metadata=_doc("when count > 1: the span of the incidents folded in"), default=None
    )
    output: Optional[Output] = field(
        metadata=_doc(
            "crash, oom, fatal and crash_loop of a program: the end of what it wrote before it died (its last "
            "words); null when Navi was told not to read them (--no-output-tail) or the notification is not "
            "about one program"
        ),
        default=None,
    )
    deaths: Optional[Deaths] = field(
        metadata=_doc("every notification about a program: how often it has died unexpectedly"), default=None
    )
    crash_loop: Optional[CrashLoop] = field(
        metadata=_doc("crash_loop notifications: the loop's begin or end, and its deaths"), default=None
    )
    pressure: Optional[Pressure] = field(
        metadata=_doc(
            "pressure notifications: the episode's begin or end and its evidence; in an oom, the episode the "
            "kill came in"
        ),
        default=None,
    )

    def to_json(self) -> bytes:
        return encode(self) + b"\n"


@dataclass(frozen=True)
class Original:
    """What the original Navi (1.0, Go) wrote for an event: its consumers
    decode exactly this.  Written beside the new format on request, for the
    events behind Navi's notifications."""

    header: dict[str, str] = field(metadata={"alias": "Header"})
    metadata: dict[str, str] = field(metadata={"alias": "Metadata"})
    # The event's body after its token line: none for PROCESS_STATE and TICK.
    payload: str = field(metadata={"alias": "Payload"})
    received_at: datetime = field(metadata={"alias": "ReceivedAt"})

    @classmethod
    def of(cls, n: Notification) -> Original:
        return cls(header=n.header, metadata=n.metadata, payload="", received_at=n.time)


# Keys in the order a person reads them (dataclass order puts defaults last).
_FIRST_KEYS = ("schema", "id", "type", "time", "count", "coalesced", "summary")


_KEYS: dict[type, tuple[tuple[str, str], ...]] = {}


def _keys(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute, key in the file) of a dataclass's fields, looked up once:
    the state is encoded at every incident."""
    keys = _KEYS.get(cls)
    if keys is None:
        keys = _KEYS[cls] = tuple((f.name, f.metadata.get("alias", f.name)) for f in dataclasses.fields(cls))
    return keys


def to_data(value: Any) -> Any:
    """A dataclass tree as JSON-ready data, keys under their aliases."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: to_data(getattr(value, name)) for name, key in _keys(type(value))}
    return value


def encode(value: Any) -> bytes:
    data = to_data(value)
    if isinstance(value, Notification):
        data = {**{k: data[k] for k in _FIRST_KEYS}, **data}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


T = TypeVar("T")


class FormatError(ValueError):
    """Data that is not what Navi writes."""


def decode(cls: type[T], data: bytes) -> T:
    """Read back what :func:`encode` wrote (Navi's own state; consumers
    should validate with ``navi.consumer.schema``, which says more)."""
    try:
        return _from_data(cls, json.loads(data), "")  # type: ignore[no-any-return]
    except (ValueError, TypeError) as e:
        raise FormatError(str(e)) from None


_PLANS: dict[type, tuple[tuple[str, str, Any, bool], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, str, Any, bool], ...]:
    """Each field's name, key, type and whether it must be there: resolving
    the type hints is most of a decode's time, so once per class."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = get_type_hints(cls, vars(sys.modules[cls.__module__]))
        plan = _PLANS[cls] = tuple(
            (
                f.name,
                f.metadata.get("alias", f.name),
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
    return plan


def _from_data(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise FormatError(f"{where or 'top'}: an object expected")
        kwargs = {}
        for name, key, hint, required in _plan(tp):
            if key in value:
                kwargs[name] = _from_data(hint, value[key], f"{where}.{key}")
            elif required:
                raise FormatError(f"{where}.{key}: missing")
        return tp(**kwargs)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        return _from_data(next(a for a in args if a is not type(None)), value, where)
    if origin is Literal:
        if value not in args:
            raise FormatError(f"{where}: {value!r} is not one of {args}")
        return value
    if origin is list and isinstance(value, list):
        return [_from_data(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _from_data(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is datetime and isinstance(value, str):
        return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    if type(value) is tp and tp in (int, str, bool):
        return value
    if tp is float and type(value) in (int, float):
        return float(value)
    raise FormatError(f"{where or 'top'}: {value!r} is not {getattr(tp, '__name__', tp)}")
