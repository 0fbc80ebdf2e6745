"""Find this process's memory cgroup (v1, v2 or hybrid; with or without a
cgroup namespace) and read its memory figures. `locate` raises only
CgroupError; `read` never raises, it lists what it could not read."""

# Optional, not "X | None": others may evaluate these hints (pydantic,
# typing.get_type_hints) on Python 3.9, where "int | None" fails at runtime.
from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from navi.notification import MemoryInfo, ProgramMemory

STANDARD_ROOT = "/sys/fs/cgroup"

_FILE_CAP = 64 * 1024  # memory.* files are tiny
_PROC_CAP = 16 * 1024 * 1024  # mountinfo on a busy host can be large
_V1_UNLIMITED = 2**62  # v1 reports "no limit" as a page-rounded LONG_MAX


class CgroupError(Exception):
    """One actionable line, e.g. "cannot read /proc/self/cgroup: Permission denied"."""


@dataclass(frozen=True)
class MemoryCgroup:
    version: int  # 1 or 2
    path: str  # real directory holding the memory.* files (after re-rooting)
    cgroup_path: str  # the path as /proc/self/cgroup names it
    # Re-rooted mount point; bounds the v2 parent walk. Optional so others can
    # build a MemoryCgroup from the three fields above; not part of equality.
    mount_point: str = field(default="", compare=False)


@dataclass(frozen=True)
class MemorySnapshot:
    version: int
    path: str
    limit_bytes: Optional[int]  # None = no limit
    usage_bytes: Optional[int]
    peak_bytes: Optional[int]
    oom_kill: Optional[int]
    problems: tuple[str, ...]

    def info(self, rise: Optional[int], programs: Sequence[ProgramMemory] = ()) -> MemoryInfo:
        """These figures as a notification carries them."""
        return MemoryInfo(
            cgroup_version=self.version,
            cgroup_path=self.path,
            limit_bytes=self.limit_bytes,
            usage_bytes=self.usage_bytes,
            peak_bytes=self.peak_bytes,
            oom_kill=self.oom_kill,
            oom_kill_rise=rise,
            problems=list(self.problems),
            programs=list(programs),
        )


@dataclass(frozen=True)
class PressureReading:
    """What says how close the container is to its memory limit."""

    limit_bytes: Optional[int]  # None = no limit
    usage_bytes: Optional[int]
    inactive_file_bytes: Optional[int]  # page cache the kernel drops first
    limit_hits: Optional[int]  # v1 memory.failcnt, v2 memory.events max: only ever grow
    throttled: Optional[int]  # v2 memory.events high
    stall_some_avg10: Optional[float]  # v2 PSI, memory.pressure
    stall_full_avg10: Optional[float]


class CgroupLine(NamedTuple):
    hierarchy: int  # 0 for the v2 line
    controllers: tuple[str, ...]  # e.g. ("cpu", "cpuacct"), ("name=systemd",), ()
    path: str


class Mount(NamedTuple):
    root: str  # field 4: the mount's root within its filesystem
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]


def parse_proc_cgroup(text: str) -> list[CgroupLine]:
    """Parse /proc/self/cgroup ("ID:controllers:path" per line); skip junk."""
    result = []
    for line in text.split("\n"):
        parts = line.split(":", 2)  # the path itself may contain ':'
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        result.append(CgroupLine(int(parts[0]), controllers, parts[2]))
    return result


def unescape_mount_field(text: str) -> str:
    """Undo the kernel's octal escaping of space, tab, newline and backslash."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo (proc(5)); skip lines that do not fit."""
    result = []
    # split on "\n" only: a mount point may hold "\r" or "\f" unescaped.
    for line in text.split("\n"):
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)  # optional fields end at a lone "-"
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        root, mount_point = unescape_mount_field(fields[3]), unescape_mount_field(fields[4])
        result.append(Mount(root, mount_point, fields[sep + 1], tuple(fields[sep + 3].split(","))))
    return result


def parse_flat_keyed(text: str) -> dict[str, int]:
    """memory.events/stat/oom_control lines "key value"; odd lines skipped (new keys come)."""
    pairs = (line.split() for line in text.split("\n"))
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and _is_int(p[1])}


def _is_int(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit()


def parse_limit(text: str, version: int) -> Optional[int]:
    """memory.limit_in_bytes (v1) or memory.max (v2); None = unlimited. Raises ValueError."""
    value = text.strip()
    if version == 2 and value == "max":
        return None
    number = int(value)
    return None if version == 1 and number >= _V1_UNLIMITED else number


def parse_count(text: str) -> int:
    """A single-number file such as memory.current. Raises ValueError."""
    return int(text.strip())


def _read_file(path: str, cap: int) -> str:
    with open(path, "rb") as f:
        return os.fsdecode(f.read(cap))


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _relative(path: str, root: str) -> Optional[str]:
    """`path` relative to `root`, or None if it is not inside it."""
    base = root.rstrip("/")
    if path != base and not path.startswith(base + "/"):
        return None
    rest = path[len(base) :].strip("/")
    # "/.." shows a cgroup above our namespace's root: outside our view.
    if ".." in rest.split("/"):
        return None
    return rest


def _reroot(mount_point: str, cgroup_root: str) -> str:
    rest = _relative(mount_point, STANDARD_ROOT)
    if rest is None:
        return mount_point
    return os.path.join(cgroup_root, rest) if rest else cgroup_root


def _resolve(version: int, cgroup_path: str, mounts: list[Mount], cgroup_root: str) -> MemoryCgroup:
    # Several mounts of one hierarchy: the longest root that contains the path.
    best: Optional[tuple[Mount, str]] = None
    for mount in mounts:
        rest = _relative(cgroup_path, mount.root)
        if rest is not None and (best is None or len(mount.root) > len(best[0].root)):
            best = (mount, rest)
    if best is None:
        roots = ", ".join(sorted({m.root for m in mounts}))
        raise CgroupError(
            f"cgroup {cgroup_path} from /proc/self/cgroup is outside the cgroup v{version} "
            f"mount (mount root {roots}): the process is in a cgroup this mount cannot see"
        )
    mount, rest = best
    top = _reroot(mount.mount_point, cgroup_root)
    directory = os.path.join(top, rest) if rest else top
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            raise CgroupError(f"memory cgroup path {directory} is not a directory")
    except (OSError, ValueError) as e:
        reason = _reason(e)
        raise CgroupError(f"cannot open memory cgroup directory {directory}: {reason}") from None
    return MemoryCgroup(version, directory, cgroup_path, top)


def _has_v2_memory(directory: str) -> bool:
    if os.path.exists(os.path.join(directory, "memory.current")):
        return True
    try:  # the root cgroup has no memory.current but lists its controllers
        text = _read_file(os.path.join(directory, "cgroup.controllers"), _FILE_CAP)
    except (OSError, ValueError):
        return False
    return "memory" in text.split()


def locate(proc_root: str = "/proc", cgroup_root: str = STANDARD_ROOT) -> MemoryCgroup:
    """The memory cgroup of the current process. Raises only CgroupError."""
    texts = []
    for name in ("cgroup", "mountinfo"):
        path = os.path.join(proc_root, "self", name)
        try:
            texts.append(_read_file(path, _PROC_CAP))
        except (OSError, ValueError) as e:
            raise CgroupError(f"cannot read {path}: {_reason(e)}") from None
    lines, mounts = parse_proc_cgroup(texts[0]), parse_mountinfo(texts[1])

    v1_line = next((c for c in lines if c.hierarchy != 0 and "memory" in c.controllers), None)
    v1_mounts = [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
    if v1_line is not None and v1_mounts:
        return _resolve(1, v1_line.path, v1_mounts, cgroup_root)
    why_v1 = (
        "/proc/self/cgroup lists no memory controller"
        if v1_line is None
        else "/proc/self/mountinfo has no cgroup mount with the memory controller"
    )

    v2_line = next((c for c in lines if c.hierarchy == 0), None)
    v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]
    if v2_line is None:
        why_v2 = "/proc/self/cgroup has no cgroup2 (0::) line"
    elif not v2_mounts:
        why_v2 = "/proc/self/mountinfo has no cgroup2 mount"
    else:
        found = _resolve(2, v2_line.path, v2_mounts, cgroup_root)
        if _has_v2_memory(found.path):
            return found
        why_v2 = f"the cgroup2 directory {found.path} has no memory.current"
    raise CgroupError(f"no memory cgroup: {why_v1} and {why_v2}")


def _value(
    path: str, parse: Callable[[str], Optional[int]], problems: list[str], optional: bool = False
) -> tuple[bool, Optional[int]]:
    """(read and parsed fine, value); a failure adds one phrase to `problems`."""
    try:
        text = _read_file(path, _FILE_CAP)
    except (OSError, ValueError) as e:
        if not (optional and isinstance(e, FileNotFoundError)):
            problems.append(f"cannot read {path}: {_reason(e)}")
        return False, None
    try:
        return True, parse(text)
    except ValueError:
        problems.append(f"unexpected content in {path}")
        return False, None


def _smallest(*limits: Optional[int]) -> Optional[int]:
    finite = [v for v in limits if v is not None]
    return min(finite) if finite else None


def _v2_ancestor_limit(cgroup: MemoryCgroup) -> Optional[int]:
    """Smallest finite memory.max above `cgroup.path`, not above its mount."""
    limit: Optional[int] = None
    current = cgroup.path
    while True:
        parent = os.path.dirname(current)
        outside = cgroup.mount_point and _relative(parent, cgroup.mount_point) is None
        if parent == current or outside:
            return limit
        try:  # the root cgroup (or anything outside cgroupfs) has no memory.max
            limit = _smallest(limit, parse_limit(_read_file(os.path.join(parent, "memory.max"), _FILE_CAP), 2))
        except (OSError, ValueError):
            return limit
        current = parent


def read_oom_kill(cgroup: MemoryCgroup) -> Optional[int]:
    """The oom_kill counter alone (one small file), or None. Never raises."""
    name = "memory.oom_control" if cgroup.version == 1 else "memory.events"
    _, value = _value(os.path.join(cgroup.path, name), lambda text: parse_flat_keyed(text).get("oom_kill"), [])
    return value


def parse_psi(text: str) -> dict[str, float]:
    """memory.pressure: "some avg10=0.00 avg60=... total=N" and a "full"
    line: each line's avg10."""
    found = {}
    for line in text.split("\n"):
        kind, _, rest = line.partition(" ")
        for item in rest.split():
            name, _, value = item.partition("=")
            if name == "avg10":
                with contextlib.suppress(ValueError):
                    found[kind] = float(value)
    return found


def _limit(cgroup: MemoryCgroup, problems: list[str]) -> tuple[Optional[int], dict[str, int]]:
    """The limit, and memory.stat on v1 (read for it)."""
    if cgroup.version == 1:
        _, own = _value(os.path.join(cgroup.path, "memory.limit_in_bytes"), lambda t: parse_limit(t, 1), problems)
        # A parent may carry the real limit; memory.stat shows the effective one.
        stat = _flat(cgroup, "memory.stat", problems)
        hier = stat.get("hierarchical_memory_limit")
        return _smallest(own, hier if hier is not None and hier < _V1_UNLIMITED else None), stat
    ok, limit = _value(os.path.join(cgroup.path, "memory.max"), lambda t: parse_limit(t, 2), problems)
    if ok and limit is None:  # "max" here may still be capped by an ancestor
        limit = _v2_ancestor_limit(cgroup)
    return limit, {}


def _flat(cgroup: MemoryCgroup, name: str, problems: list[str]) -> dict[str, int]:
    try:
        return parse_flat_keyed(_read_file(os.path.join(cgroup.path, name), _FILE_CAP))
    except (OSError, ValueError) as e:
        problems.append(f"cannot read {os.path.join(cgroup.path, name)}: {_reason(e)}")
        return {}


def read_pressure(cgroup: MemoryCgroup) -> PressureReading:
    """The figures of memory pressure.  Never raises: what cannot be read is None."""
    problems: list[str] = []  # said by read() in notifications; here only figures count
    limit, stat = _limit(cgroup, problems)
    if cgroup.version == 1:
        _, usage = _value(os.path.join(cgroup.path, "memory.usage_in_bytes"), parse_count, problems)
        _, hits = _value(os.path.join(cgroup.path, "memory.failcnt"), parse_count, problems)
        return PressureReading(limit, usage, stat.get("total_inactive_file"), hits, None, None, None)
    _, usage = _value(os.path.join(cgroup.path, "memory.current"), parse_count, problems)
    stat = _flat(cgroup, "memory.stat", problems)
    events = _flat(cgroup, "memory.events", problems)
    try:
        psi = parse_psi(_read_file(os.path.join(cgroup.path, "memory.pressure"), _FILE_CAP))
    except (OSError, ValueError):
        psi = {}  # no PSI in this kernel (CONFIG_PSI, psi=0)
    return PressureReading(
        limit, usage, stat.get("inactive_file"), events.get("max"), events.get("high"), psi.get("some"), psi.get("full")
    )


def read(cgroup: MemoryCgroup) -> MemorySnapshot:
    """Current memory figures of `cgroup`. Never raises."""
    problems: list[str] = []

    def get(
        name: str, parse: Callable[[str], Optional[int]] = parse_count, optional: bool = False
    ) -> tuple[bool, Optional[int]]:
        return _value(os.path.join(cgroup.path, name), parse, problems, optional)

    def key(name: str) -> Callable[[str], Optional[int]]:
        return lambda text: parse_flat_keyed(text).get(name)

    limit = usage = peak = oom_kill = None
    if cgroup.version == 1:
        limit, _ = _limit(cgroup, problems)
        _, usage = get("memory.usage_in_bytes")
        _, peak = get("memory.max_usage_in_bytes")
        ok, oom_kill = get("memory.oom_control", key("oom_kill"))
        if ok and oom_kill is None:
            problems.append("memory.oom_control has no oom_kill counter (kernel older than 4.13)")
    elif cgroup.version == 2:
        limit, _ = _limit(cgroup, problems)
        _, usage = get("memory.current")
        _, peak = get("memory.peak", optional=True)  # Linux 5.19+
        ok, oom_kill = get("memory.events", key("oom_kill"))
        if ok and oom_kill is None:
            problems.append("memory.events has no oom_kill counter")
    else:
        problems.append(f"unknown cgroup version {cgroup.version}")
    return MemorySnapshot(cgroup.version, cgroup.path, limit, usage, peak, oom_kill, tuple(problems))
