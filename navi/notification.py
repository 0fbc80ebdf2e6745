"""The notification file format: one JSON object per incident.

``schema`` is an integer that grows when a change could break a consumer
(a key removed, renamed or retyped); new optional keys do not change it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Kind = Literal["crash", "oom", "fatal"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ProcessInfo(_Model):
    name: Optional[str] = Field(
        description="supervisord's process name, as in the event; null for an OOM kill that no "
        "supervised program's death claimed (the container's notification)"
    )
    group: Optional[str] = Field(description="supervisord's group name, as in the event (null likewise)")
    pid: Optional[int] = Field(description="pid of the process that died, when known")


class ProgramMemory(_Model):
    name: str
    group: str
    pid: int
    rss_bytes: int = Field(description="resident memory of the program and all its descendants")
    sampled_at: datetime = Field(description="when (Navi samples every 5 s, on TICK_5)")


class ExitInfo(_Model):
    code: Optional[int] = Field(description="exit code; null when killed by a signal or unknown")
    signal: Optional[str] = Field(description='signal that killed it, like "SIGKILL"; else null')
    signal_number: Optional[int] = Field(description="number of that signal; else null")
    core_dumped: Optional[bool] = Field(description="whether it dumped core; null when unknown")
    during_startup: bool = Field(
        description="it died before startsecs (PROCESS_STATE_BACKOFF), or never got running (FATAL)"
    )
    log_line: Optional[str] = Field(description="supervisord's main log line this was read from")
    unavailable: Optional[str] = Field(description="why the exit status is null, when it is")


class MemoryInfo(_Model):
    cgroup_version: int
    cgroup_path: str = Field(description="the memory cgroup's directory as Navi read it")
    limit_bytes: Optional[int] = Field(description="memory limit; null when unlimited or unread")
    usage_bytes: Optional[int]
    peak_bytes: Optional[int] = Field(description="peak usage, where the kernel offers it")
    oom_kill: Optional[int] = Field(description="the cgroup's oom_kill counter (total kills)")
    oom_kill_rise: Optional[int] = Field(
        description="how much oom_kill rose since Navi last looked; null when it cannot tell"
    )
    problems: list[str] = Field(description="figures that could not be read, and why")
    victim: Optional[ProgramMemory] = Field(
        None, description="the last sample of the program that died, before it died"
    )
    programs: list[ProgramMemory] = Field(
        default_factory=list,
        description="the last sample of each supervised program, largest first: who held the memory",
    )


class Coalesced(_Model):
    first: datetime = Field(description="when the first incident this notification stands for was observed")
    last: datetime = Field(description="when the last one was (this notification's own time)")
    reason: str = Field(description='why they were not written one by one: "rate limit", "directory full", ...')


class Source(_Model):
    host: str
    supervisord_pid: Optional[int]
    supervisord_started: Optional[datetime]
    navi_version: str


class Notification(_Model):
    schema_version: int = Field(alias="schema", description="format version")
    id: str = Field(description="unique; the same event delivered twice gives the same id")
    type: Kind
    time: datetime = Field(description="when Navi observed the incident (UTC)")
    count: int = Field(
        1,
        description="incidents of this program and type this notification stands for: more than 1 when a "
        "crash storm (or a full disk) held some back; the counts of all notifications add up to all incidents",
    )
    coalesced: Optional[Coalesced] = Field(None, description="when count > 1: the span of the incidents folded in")
    summary: str = Field(description="one line for a person")
    process: ProcessInfo
    exit: ExitInfo
    memory: Optional[MemoryInfo]
    notes: list[str] = Field(description="what Navi could not establish, and why")
    # The event as received, under the keys the original Navi used, so that
    # its consumers (keyed on Header.eventname and Metadata) keep working.
    header: dict[str, str] = Field(alias="Header", description="the event's header tokens, as received")
    metadata: dict[str, str] = Field(alias="Metadata", description="the event's payload tokens, as received")
    source: Source

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode() + b"\n"
