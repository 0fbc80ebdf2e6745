"""``navi postmortem``: the notification Navi would have written, when it
could not.

With ``memory.oom.group=1`` (Kubernetes 1.28+ on cgroup v2) one OOM kill
takes the whole container at once: supervisord, Navi and the programs, and
nothing inside can report it.  The platform runs this on the host once the
container has exited.  From what outlives the container (the cgroup's
counters and figures, readable until the cgroup is removed; in the volume,
Navi's last state and supervisord's main log) it writes that notification
into the volume's notifications directory, or prints it.  It writes nothing
when Navi reported every kill itself, and never the same one twice.  On
cgroup v1 there is no group kill; kills Navi had no time to report are
reported the same way.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from navi import __version__, names
from navi.listener import cgroup, summaries
from navi.listener.classify import Origin, nobody
from navi.listener.coalesce import Outgoing
from navi.listener.core import State
from navi.listener.pressure import describe
from navi.listener.spool import Spool, SpoolError
from navi.notification import (
    SCHEMA_VERSION,
    ExitInfo,
    FormatError,
    Notification,
    ProgramMemory,
    Source,
    decode,
    to_data,
)


@dataclass(frozen=True)
class Remains:
    """What outlived the container."""

    state: Optional[State]  # Navi's last state, if it saved one
    memory: cgroup.MemorySnapshot  # the cgroup's figures now
    group_kills: Optional[int]  # memory.events oom_group_kill (v2 only)
    pressure: Optional[cgroup.PressureReading] = None  # its pressure figures now


def judge(remains: Remains, host: str, now: datetime) -> Optional[Outgoing]:
    """The notification for the kills Navi did not report, if any."""
    memory, state = remains.memory, remains.state
    if memory.oom_kill is None:
        return None
    counter = state.counter if state is not None else None
    if counter is not None and counter.cgroup != memory.path:
        counter = None  # another cgroup's reading says nothing of this one
    # Kills after Navi's last reading, and those it had counted but not placed.
    unreported = memory.oom_kill - counter.oom_kill + len(counter.kills) if counter else memory.oom_kill
    if unreported <= 0:
        return None
    group = bool(remains.group_kills)
    samples = sorted(state.samples if state else [], key=lambda s: s.rss_bytes, reverse=True)
    programs = [ProgramMemory(s.name, s.group, s.pid, s.rss_bytes, s.sampled_at) for s in samples]
    running = [p.name for p in state.running] if state else []
    info = memory.info(unreported, programs)
    notes = ["written after the container ended, by navi postmortem on the host, from the cgroup and Navi's last state"]
    if state is None:
        notes.append("Navi left no state: every kill the cgroup counted is taken as unreported")
    origin = state.origin if state is not None else None
    key = origin.supervisord_key if origin else "unknown"
    stamp = (state.stamp if state else None) or now
    serial = (state.applied if state is not None and state.applied is not None else -1) + 1
    n = Notification(
        schema_version=SCHEMA_VERSION,
        id=f"{origin.host if origin else host}:{key}:postmortem:{memory.oom_kill}",
        type="oom",
        time=now,
        count=1 if group else unreported,
        summary=summaries.postmortem(group, unreported, running, info),
        process=nobody(),
        exit=ExitInfo(
            code=None,
            signal="SIGKILL",
            signal_number=9,
            core_dumped=False,
            during_startup=False,
            log_line=None,
            unavailable=None,
        ),
        memory=info,
        notes=notes,
        header={},
        metadata={},
        source=_source(origin, host),
        # The pressure episode Navi saw begin, which the kill ended.
        pressure=describe(state.pressure, remains.pressure) if state and state.pressure and remains.pressure else None,
    )
    return Outgoing(names.notification_name(stamp, str(serial)), n)


def _source(origin: Optional[Origin], host: str) -> Source:
    if origin is None:
        return Source(host=host, supervisord_pid=None, supervisord_started=None, navi_version=__version__)
    return Source(origin.host, origin.supervisord_pid, origin.supervisord_started, __version__)


def remains(cgroup_dir: str, notifications_dir: str) -> Remains:
    """Read what outlived the container.  Raises OSError when the cgroup is gone."""
    version = 2 if os.path.exists(os.path.join(cgroup_dir, "memory.events")) else 1
    if version == 1 and not os.path.exists(os.path.join(cgroup_dir, "memory.oom_control")):
        raise FileNotFoundError(f"{cgroup_dir} is no memory cgroup (no memory.events, no memory.oom_control)")
    found = cgroup.MemoryCgroup(version, cgroup_dir, cgroup_dir)
    group_kills = None
    if version == 2:
        with open(os.path.join(cgroup_dir, "memory.events")) as f:
            group_kills = cgroup.parse_flat_keyed(f.read()).get("oom_group_kill")
    state = None
    try:
        spool = Spool(notifications_dir)
        data = spool.load(names.STATE_FILE, names.MAX_STATE_SIZE)
        spool.close()
        state = decode(State, data) if data is not None else None
    except (SpoolError, FormatError) as e:
        print(
            f"navi postmortem: no usable state of Navi's ({e}): every kill counted is taken as unreported",
            file=sys.stderr,
        )
    return Remains(state, cgroup.read(found), group_kills, cgroup.read_pressure(found))


def main(cgroup_dir: str, volume: str, notifications_dir: Optional[str], as_json: bool) -> int:
    directory = notifications_dir or os.path.join(volume, "notifications")
    try:
        found = remains(cgroup_dir, directory)
    except OSError as e:
        print(f"navi postmortem: cannot read the cgroup {cgroup_dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    out = judge(found, os.uname().nodename, datetime.now(timezone.utc))
    if out is None:
        print("navi postmortem: nothing to report: Navi reported every OOM kill the cgroup counted", file=sys.stderr)
        return 0
    if as_json:
        print(json.dumps(to_data(out.notification), ensure_ascii=False))
        return 0
    try:
        spool = Spool(directory)
        written = spool.publish(out.name, out.notification.to_json(), out.notification.id)
        spool.close()
    except SpoolError as e:
        print(f"navi postmortem: {e}", file=sys.stderr)
        return 1
    where = os.path.join(directory, written) if written else "already written"
    print(f"navi postmortem: {out.notification.summary} -> {where}", file=sys.stderr)
    return 0
