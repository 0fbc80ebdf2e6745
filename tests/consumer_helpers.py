"""Notifications for the consumer's tests, with a serial of one's choosing,
published by the real spool."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from navi.listener.spool import Spool
from navi.names import notification_name as file_name
from navi.notification import SCHEMA_VERSION, ExitInfo, MemoryInfo, Notification, ProcessInfo, Source

STARTED = datetime(2026, 11, 24, 23, 39, 6, 890000, tzinfo=timezone.utc)


def sample(serial: int, program: str = "web") -> Notification:
    return Notification(
        schema_version=SCHEMA_VERSION,
        id=f"host:boot:1:614770:{serial}",
        type="crash",
        time=STARTED + timedelta(seconds=serial),
        summary=f"{program} crashed: exit status 3",
        process=ProcessInfo(name=program, group=program, pid=1000 + serial),
        exit=ExitInfo(code=3, signal=None, signal_number=None, core_dumped=False, during_startup=False,
                      log_line=f"2026-11-24 23:39:09,395 WARN exited: {program} (exit status 3; not expected)",
                      unavailable=None),
        memory=MemoryInfo(cgroup_version=2, cgroup_path="/sys/fs/cgroup", limit_bytes=201326592,
                          usage_bytes=35532800, peak_bytes=None, oom_kill=0, oom_kill_rise=0, problems=[]),
        notes=[],
        header={"ver": "3.0", "server": "supervisor", "serial": str(serial), "pool": "navi",
                "poolserial": str(serial), "eventname": "PROCESS_STATE_EXITED", "len": "60"},
        metadata={"processname": program, "groupname": program, "from_state": "RUNNING", "expected": "0",
                  "pid": str(1000 + serial)},
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
