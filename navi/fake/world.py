"""The files a listener reads beside its events, faked under one directory:
a memory cgroup (v1 or v2, in the kernel's formats), the /proc files that
locate it and identify supervisord, supervisord's main log, and a
notifications directory.

Layout under ``root``::

    proc/self/cgroup, proc/self/mountinfo       where the cgroup is
    proc/<supervisord pid>/stat, statm,         who supervisord is, and its
    proc/stat, proc/sys/kernel/random/boot_id   memory (copied from the real
                                                /proc, as psutil reads them)
    sys/fs/cgroup/...                           the cgroup files
    log/supervisord.log                         supervisord's main log
    notifications/

v1 is a container without a cgroup namespace (its cgroup path is translated
through the mount's root, as runc does); v2 is a container with one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from navi.fake.scenario import DEFAULT_START, Log, Memory, Step, log_time
from navi.fdio import write_all

CONTAINER = "/libpod_parent/libpod-6e1f2d"
V1_CGROUP = f"12:pids:{CONTAINER}\n4:memory:{CONTAINER}\n1:name=systemd:{CONTAINER}\n0::{CONTAINER}\n"
V1_MOUNTINFO = (
    "1203 1118 0:379 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
    "1209 1203 0:381 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755\n"
    f"1212 1209 0:32 {CONTAINER} /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup "
    "rw,memory\n"
)
V2_CGROUP = "0::/\n"
V2_MOUNTINFO = (
    "1203 1118 0:379 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
    "1210 1203 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate\n"
)
ROUTINE_USAGE = 24 << 20


class FakeWorld:
    def __init__(
        self,
        root: Path,
        cgroup_version: int = 2,
        memory_limit: int = 64 << 20,
        supervisord_pid: Optional[int] = None,
        start: float = DEFAULT_START,
    ) -> None:
        if cgroup_version not in (1, 2):
            raise ValueError(f"cgroup version {cgroup_version}: 1 or 2")
        self.root = root
        self.version = cgroup_version
        self.limit = memory_limit
        self.supervisord_pid = os.getpid() if supervisord_pid is None else supervisord_pid
        self.proc_root = root / "proc"
        self.cgroup_root = root / "sys" / "fs" / "cgroup"
        self.cgroup_dir = self.cgroup_root / "memory" if cgroup_version == 1 else self.cgroup_root
        self.log_path = root / "log" / "supervisord.log"
        self.notifications = root / "notifications"
        self.oom_kill = 0
        self.usage = ROUTINE_USAGE
        self.peak = ROUTINE_USAGE
        self.failcnt = 0  # v1 memory.failcnt, v2 "max" in memory.events: hits of the limit
        self._make_proc()
        self.cgroup_dir.mkdir(parents=True)
        self._write_memory()
        self.notifications.mkdir()
        self.log_path.parent.mkdir()
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.append_log(f"{log_time(start)} INFO supervisord started with pid {self.supervisord_pid}")

    def __enter__(self) -> FakeWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1

    def env(self) -> dict[str, str]:
        """``navi listen``'s settings for this world."""
        return {
            "NAVI_PROC_ROOT": str(self.proc_root),
            "NAVI_CGROUP_ROOT": str(self.cgroup_root),
            "NAVI_SUPERVISORD_LOG": str(self.log_path),
            "NAVI_NOTIFICATIONS_DIR": str(self.notifications),
        }

    def apply(self, step: Step) -> None:
        if isinstance(step, Log):
            self.append_log(step.line)
        elif isinstance(step, Memory):
            if step.share is not None:
                self.usage = int(self.limit * step.share)
                self.peak = max(self.peak, self.usage)
            self.set_oom_kill(step.oom_kill, step.at_limit)

    def append_log(self, line: str) -> None:
        write_all(self._log_fd, (line + "\n").encode("utf-8", "surrogateescape"))

    def set_oom_kill(self, value: int, at_limit: bool = False) -> None:
        """The counter's new value; at an OOM kill peak reaches the limit, and
        usage falls back (the victim's memory is freed)."""
        if at_limit:
            self.failcnt += 41 * max(1, value - self.oom_kill)
            self.usage = ROUTINE_USAGE
            self.peak = self.limit
        self.oom_kill = value
        self._write_memory()

    def _make_proc(self) -> None:
        self_dir = self.proc_root / "self"
        self_dir.mkdir(parents=True)
        (self_dir / "cgroup").write_text(V1_CGROUP if self.version == 1 else V2_CGROUP)
        (self_dir / "mountinfo").write_text(V1_MOUNTINFO if self.version == 1 else V2_MOUNTINFO)
        # Who the listener's parent is: this process, playing supervisord.
        for name in (
            f"{self.supervisord_pid}/stat",
            f"{self.supervisord_pid}/statm",
            "stat",
            "sys/kernel/random/boot_id",
        ):
            target = self.proc_root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path("/proc", name).read_bytes())

    def _write_memory(self) -> None:
        if self.version == 1:
            files = {
                "memory.limit_in_bytes": f"{self.limit}\n",
                "memory.usage_in_bytes": f"{self.usage}\n",
                "memory.max_usage_in_bytes": f"{self.peak}\n",
                "memory.failcnt": f"{self.failcnt}\n",
                "memory.oom_control": f"oom_kill_disable 0\nunder_oom 0\noom_kill {self.oom_kill}\n",
                "memory.stat": f"cache 0\nrss {self.usage}\nhierarchical_memory_limit {self.limit}\n"
                "hierarchical_memsw_limit 9223372036854771712\n",
            }
        else:
            files = {
                "cgroup.controllers": "cpu io memory pids\n",
                "memory.max": f"{self.limit}\n",
                "memory.current": f"{self.usage}\n",
                "memory.peak": f"{self.peak}\n",
                "memory.events": f"low 0\nhigh 0\nmax {self.failcnt}\noom {self.oom_kill}\n"
                f"oom_kill {self.oom_kill}\noom_group_kill 0\n",
                "memory.stat": f"anon {self.usage}\nfile 0\n",
            }
        for name, text in files.items():
            (self.cgroup_dir / name).write_text(text)
