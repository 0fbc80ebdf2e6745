"""The notification file format: one JSON object per incident.

``schema`` is an integer that grows when a change could break a consumer
(a key removed, renamed or retyped); new optional keys do not change it.

Plain frozen dataclasses, encoded and decoded here with the standard
library: the listener runs in the customer's memory limit, and pydantic
alone would double its size.  ``navi.schema`` gives pydantic the same
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

Kind = Literal["crash", "oom", "fatal"]


def _doc(description: str) -> dict[str, str]:
    return {"description": description}


@dataclass(frozen=True)
class ProcessInfo:
    name: Optional[str] = field(metadata=_doc(
        "supervisord's process name, as in the event; null for an OOM kill that no supervised program's death "
        "claimed (the container's notification)"))
    group: Optional[str] = field(metadata=_doc("supervisord's group name, as in the event (null likewise)"))
    pid: Optional[int] = field(metadata=_doc("pid of the process that died, when known"))


@dataclass(frozen=True)
class ProgramMemory:
    name: str
    group: str
    pid: int
    rss_bytes: int = field(metadata=_doc("resident memory of the program and all its descendants"))
    sampled_at: datetime = field(metadata=_doc("when (Navi samples every 5 s, on TICK_5)"))


@dataclass(frozen=True)
class ExitInfo:
    code: Optional[int] = field(metadata=_doc("exit code; null when killed by a signal or unknown"))
    signal: Optional[str] = field(metadata=_doc('signal that killed it, like "SIGKILL"; else null'))
    signal_number: Optional[int] = field(metadata=_doc("number of that signal; else null"))
    core_dumped: Optional[bool] = field(metadata=_doc("whether it dumped core; null when unknown"))
    during_startup: bool = field(metadata=_doc(
        "it died before startsecs (PROCESS_STATE_BACKOFF), or never got running (FATAL)"))
    log_line: Optional[str] = field(metadata=_doc("supervisord's main log line this was read from"))
    unavailable: Optional[str] = field(metadata=_doc("why the exit status is null, when it is"))


@dataclass(frozen=True)
class MemoryInfo:
    cgroup_version: int
    cgroup_path: str = field(metadata=_doc("the memory cgroup's directory as Navi read it"))
    limit_bytes: Optional[int] = field(metadata=_doc("memory limit; null when unlimited or unread"))
    usage_bytes: Optional[int] = field(metadata=_doc("memory usage when Navi read it"))
    peak_bytes: Optional[int] = field(metadata=_doc("peak usage, where the kernel offers it"))
    oom_kill: Optional[int] = field(metadata=_doc("the cgroup's oom_kill counter (total kills)"))
    oom_kill_rise: Optional[int] = field(
        metadata=_doc("how much oom_kill rose since Navi last looked; null when it cannot tell"))
    problems: list[str] = field(metadata=_doc("figures that could not be read, and why"))
    victim: Optional[ProgramMemory] = field(
        metadata=_doc("the last sample of the program that died, before it died"), default=None)
    programs: list[ProgramMemory] = field(metadata=_doc(
        "the last sample of each supervised program, largest first: who held the memory"), default_factory=list)


@dataclass(frozen=True)
class Coalesced:
    first: datetime = field(metadata=_doc("when the first incident this notification stands for was observed"))
    last: datetime = field(metadata=_doc("when the last one was (this notification's own time)"))
    reason: str = field(metadata=_doc('why they were not written one by one: "rate limit", "directory full", ...'))


@dataclass(frozen=True)
class Source:
    host: str
    supervisord_pid: Optional[int]
    supervisord_started: Optional[datetime]
    navi_version: str


@dataclass(frozen=True)
class Notification:
    """One incident: a crash, an OOM kill or a FATAL, as Navi saw it."""

    schema_version: int = field(metadata={"alias": "schema", "description": "format version"})
    id: str = field(metadata=_doc("unique; the same event delivered twice gives the same id"))
    type: Kind = field(metadata=_doc("crash, oom or fatal"))
    time: datetime = field(metadata=_doc("when Navi observed the incident (UTC)"))
    summary: str = field(metadata=_doc("one line for a person"))
    process: ProcessInfo
    exit: ExitInfo
    memory: Optional[MemoryInfo]
    notes: list[str] = field(metadata=_doc("what Navi could not establish, and why"))
    # The event as received, under the keys the original Navi used, so that
    # its consumers (keyed on Header.eventname and Metadata) keep working.
    header: dict[str, str] = field(
        metadata={"alias": "Header", "description": "the event's header tokens, as received"}
    )
    metadata: dict[str, str] = field(
        metadata={"alias": "Metadata", "description": "the event's payload tokens, as received"}
    )
    source: Source
    count: int = field(metadata=_doc(
        "incidents of this program and type this notification stands for: more than 1 when a crash storm (or a "
        "full disk) held some back; the counts of all notifications add up to all incidents"), default=1)
    coalesced: Optional[Coalesced] = field(
        metadata=_doc("when count > 1: the span of the incidents folded in"), default=None)

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


def to_data(value: Any) -> Any:
    """A dataclass tree as JSON-ready data, keys under their aliases."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.metadata.get("alias", f.name): to_data(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
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
    should validate with ``navi.schema``, which says more)."""
    try:
        return _from_data(cls, json.loads(data), "")  # type: ignore[no-any-return]
    except (ValueError, TypeError) as e:
        raise FormatError(str(e)) from None


def _from_data(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise FormatError(f"{where or 'top'}: an object expected")
        hints = get_type_hints(tp, vars(sys.modules[tp.__module__]))
        kwargs = {}
        for f in dataclasses.fields(tp):
            key = f.metadata.get("alias", f.name)
            if key in value:
                kwargs[f.name] = _from_data(hints[f.name], value[key], f"{where}.{key}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FormatError(f"{where}.{key}: missing")
        return tp(**kwargs)  # type: ignore[operator]
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
    raise FormatError(f"{where or 'top'}: {value!r} is not {getattr(tp, '__name__', tp)}")
