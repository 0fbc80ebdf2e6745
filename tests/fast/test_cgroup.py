"""Tests for navi.listener.cgroup on file trees that copy the kernel's formats exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from navi.listener import cgroup
from navi.listener.cgroup import CgroupError, MemoryCgroup

# This machine's real /proc/self/cgroup (hybrid: memory on v1, "0::/" for v2).
HOST_CGROUP = """9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
# This machine's real mountinfo lines for /sys/fs/cgroup.
HOST_MOUNTINFO = """22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# runc in podman without a cgroup namespace: the mount root is the container's cgroup.
PODMAN_CGROUP = "4:memory:/libpod_parent/libpod-abc\n0::/\n"
PODMAN_MOUNTINFO = (
    "611 603 0:32 /libpod_parent/libpod-abc /sys/fs/cgroup/memory "
    "ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory\n"
)
V2_MOUNTINFO = (
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9"
    " - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
)
V1_FILES = {
    "memory.limit_in_bytes": "9223372036854771712\n",
    "memory.usage_in_bytes": "3465216\n",
    "memory.max_usage_in_bytes": "5918720\n",
    "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    "memory.stat": "cache 9682944\nrss 3944448\nhierarchical_memory_limit "
    "9223372036854771712\nhierarchical_memsw_limit 9223372036854771712\n",
}
V2_FILES = {
    "memory.max": "536870912\n",
    "memory.current": "12345\n",
    "memory.peak": "67890\n",
    "memory.events": "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
    "memory.stat": "anon 4096\nfile 8192\n",
    "cgroup.controllers": "cpuset cpu io memory pids\n",
}


def make_tree(tmp: Path, proc_cgroup: str, mountinfo: str, files: dict[str, str]) -> tuple[str, str]:
    """A fake /proc and /sys/fs/cgroup; `files` are relative to the cgroup root."""
    (tmp / "proc" / "self").mkdir(parents=True)
    (tmp / "proc" / "self" / "cgroup").write_text(proc_cgroup)
    (tmp / "proc" / "self" / "mountinfo").write_text(mountinfo)
    (tmp / "cg").mkdir()
    for rel, content in files.items():
        (tmp / "cg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "cg" / rel).write_text(content)
    return str(tmp / "proc"), str(tmp / "cg")


def under(prefix: str, files: dict[str, str]) -> dict[str, str]:
    return {f"{prefix}/{name}": text for name, text in files.items()}


def kernel_escape(path: str) -> str:
    """What the kernel's seq_file mangling does to mountinfo paths."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


# ---- pure parsers -----------------------------------------------------------


def test_parse_proc_cgroup_hybrid() -> None:
    lines = cgroup.parse_proc_cgroup(HOST_CGROUP + "7:cpu,cpuacct:/a:b\ngarbage\n")
    assert lines[5] == cgroup.CgroupLine(4, ("memory",), "/process_api/abc")
    assert lines[0].controllers == ("name=systemd",)
    assert lines[9] == cgroup.CgroupLine(0, (), "/")
    assert lines[10] == cgroup.CgroupLine(7, ("cpu", "cpuacct"), "/a:b")
    assert len(lines) == 11


def test_parse_mountinfo_proc5_example() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        "37 35 0:5 / /x rw shared:2 master:3 - cgroup cgroup rw,memory\nshort line\n"
    )
    first, second = cgroup.parse_mountinfo(text)
    assert first == cgroup.Mount("/mnt1", "/mnt2", "ext3", ("rw", "errors=continue"))
    assert second.super_options == ("rw", "memory")


@pytest.mark.parametrize(
    ("text", "version", "expected"),
    [
        ("9223372036854771712\n", 1, None),
        ("9223372036854710272\n", 1, None),  # 64 KiB pages round differently
        ("67108864\n", 1, 67108864),
        ("max\n", 2, None),
        ("536870912\n", 2, 536870912),
    ],
)
def test_parse_limit(text: str, version: int, expected: int | None) -> None:
    assert cgroup.parse_limit(text, version) == expected


def test_parse_limit_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        cgroup.parse_limit("max\n", 1)


@given(
    st.data(),
    st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True), st.integers(min_value=0, max_value=2**64)),
)
def test_flat_keyed_round_trip(data: st.DataObject, values: dict[str, int]) -> None:
    lines = [f"{k} {v}" for k, v in values.items()] + ["future_key not_a_number"]
    text = "\n".join(data.draw(st.permutations(lines))) + "\n"
    expected = dict(values)
    expected.pop("future_key", None)
    assert cgroup.parse_flat_keyed(text) == expected


@given(
    st.text(st.characters(blacklist_characters="\x00"), min_size=1),
    st.text(st.characters(blacklist_characters="\x00"), min_size=1),
)
def test_mountinfo_unescapes_any_path(root: str, mount_point: str) -> None:
    line = f"36 35 98:0 {kernel_escape(root)} {kernel_escape(mount_point)} rw master:1 - cgroup cgroup rw,memory\n"
    assert cgroup.parse_mountinfo(line) == [cgroup.Mount(root, mount_point, "cgroup", ("rw", "memory"))]


# ---- locate -----------------------------------------------------------------


def test_locate_v1_host(tmp_path: Path) -> None:
    proc, root = make_tree(tmp_path, HOST_CGROUP, HOST_MOUNTINFO, under("memory/process_api/abc", V1_FILES))
    found = cgroup.locate(proc, root)
    assert found == MemoryCgroup(1, f"{root}/memory/process_api/abc", "/process_api/abc")


def test_locate_hybrid_prefers_v1_memory(tmp_path: Path) -> None:
    files = {**under("memory/process_api/abc", V1_FILES), "unified/cgroup.controllers": ""}
    proc, root = make_tree(tmp_path, HOST_CGROUP, HOST_MOUNTINFO, files)
    assert cgroup.locate(proc, root).version == 1


def test_locate_v1_container_without_cgroupns(tmp_path: Path) -> None:
    # A naive join would give memory/libpod_parent/libpod-abc, which does not exist.
    proc, root = make_tree(tmp_path, PODMAN_CGROUP, PODMAN_MOUNTINFO, under("memory", V1_FILES))
    found = cgroup.locate(proc, root)
    assert found.path == f"{root}/memory"
    assert found.cgroup_path == "/libpod_parent/libpod-abc"


def test_locate_v1_with_cgroupns(tmp_path: Path) -> None:
    mountinfo = PODMAN_MOUNTINFO.replace("/libpod_parent/libpod-abc", "/")
    proc, root = make_tree(tmp_path, "4:memory:/\n0::/\n", mountinfo, under("memory", V1_FILES))
    assert cgroup.locate(proc, root) == MemoryCgroup(1, f"{root}/memory", "/")


def test_locate_prefers_longest_mount_root(tmp_path: Path) -> None:
    # Both the host view (root "/") and the container's bind mount exist.
    mem2 = tmp_path / "mem2"
    mem2.mkdir()
    mountinfo = HOST_MOUNTINFO + PODMAN_MOUNTINFO.replace("/sys/fs/cgroup/memory", str(mem2))
    proc, root = make_tree(tmp_path, PODMAN_CGROUP, mountinfo, under("memory/libpod_parent/libpod-abc", V1_FILES))
    assert cgroup.locate(proc, root).path == str(mem2)


def test_locate_v2_pure(tmp_path: Path) -> None:
    proc, root = make_tree(tmp_path, "0::/\n", V2_MOUNTINFO, V2_FILES)
    assert cgroup.locate(proc, root) == MemoryCgroup(2, root, "/")


def test_locate_v2_nested(tmp_path: Path) -> None:
    proc, root = make_tree(
        tmp_path, "0::/system.slice/app.service\n", V2_MOUNTINFO, under("system.slice/app.service", V2_FILES)
    )
    found = cgroup.locate(proc, root)
    nested = "/system.slice/app.service"
    assert found == MemoryCgroup(2, f"{root}{nested}", nested)


def test_locate_octal_escaped_mount_point(tmp_path: Path) -> None:
    mount = tmp_path / "my cgroups\\x" / "memory"  # outside /sys/fs/cgroup: used as is
    mountinfo = f"35 31 0:32 / {kernel_escape(str(mount))} rw,relatime - cgroup cgroup rw,memory\n"
    proc, _ = make_tree(tmp_path, HOST_CGROUP, mountinfo, {})
    (mount / "process_api" / "abc").mkdir(parents=True)
    assert cgroup.locate(proc, "/nowhere").path == f"{mount}/process_api/abc"


def test_locate_missing_proc_cgroup(tmp_path: Path) -> None:
    with pytest.raises(CgroupError) as info:
        cgroup.locate(str(tmp_path / "proc"), str(tmp_path))
    assert str(info.value) == f"cannot read {tmp_path}/proc/self/cgroup: No such file or directory"


def test_locate_no_memory_anywhere(tmp_path: Path) -> None:
    text = HOST_CGROUP.replace("4:memory:/process_api/abc\n", "")
    proc, root = make_tree(tmp_path, text, HOST_MOUNTINFO, {"unified/cgroup.controllers": ""})
    with pytest.raises(CgroupError) as info:
        cgroup.locate(proc, root)
    assert str(info.value) == (
        "no memory cgroup: /proc/self/cgroup lists no memory controller and the "
        f"cgroup2 directory {root}/unified has no memory.current"
    )


@pytest.mark.parametrize("path", ["/libpod_parent/other", "/libpod_parent/libpod-abcd"])
def test_locate_cgroup_outside_mount_is_an_error(tmp_path: Path, path: str) -> None:
    proc, root = make_tree(tmp_path, f"4:memory:{path}\n", PODMAN_MOUNTINFO, under("memory", V1_FILES))
    with pytest.raises(CgroupError, match="is outside the cgroup v1 mount"):
        cgroup.locate(proc, root)


def test_locate_moved_out_of_cgroupns_is_an_error(tmp_path: Path) -> None:
    proc, root = make_tree(tmp_path, "0::/../sibling\n", V2_MOUNTINFO, V2_FILES)
    with pytest.raises(CgroupError, match="outside the cgroup v2 mount"):
        cgroup.locate(proc, root)


def test_locate_missing_directory(tmp_path: Path) -> None:
    proc, root = make_tree(tmp_path, HOST_CGROUP, HOST_MOUNTINFO, {})
    with pytest.raises(CgroupError) as info:
        cgroup.locate(proc, root)
    assert str(info.value) == (
        f"cannot open memory cgroup directory {root}/memory/process_api/abc: No such file or directory"
    )


# ---- read -------------------------------------------------------------------


def snapshot(tmp_path: Path, version: int, files: dict[str, str]) -> cgroup.MemorySnapshot:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return cgroup.read(MemoryCgroup(version, str(tmp_path), "/"))


def test_read_v1_unlimited(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, 1, V1_FILES)
    assert snap == cgroup.MemorySnapshot(1, str(tmp_path), None, 3465216, 5918720, 3, ())


def test_read_v1_limit_from_parent(tmp_path: Path) -> None:
    stat = V1_FILES["memory.stat"].replace("memory_limit 9223372036854771712", "memory_limit 2048")
    snap = snapshot(tmp_path, 1, {**V1_FILES, "memory.stat": stat})
    assert snap.limit_bytes == 2048


def test_read_v1_own_limit(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, 1, {**V1_FILES, "memory.limit_in_bytes": "67108864\n"})
    assert snap.limit_bytes == 67108864


def test_read_v1_kernel_without_oom_kill(tmp_path: Path) -> None:
    old = "oom_kill_disable 0\nunder_oom 0\n"
    snap = snapshot(tmp_path, 1, {**V1_FILES, "memory.oom_control": old})
    assert (snap.oom_kill, snap.usage_bytes) == (None, 3465216)
    assert snap.problems == ("memory.oom_control has no oom_kill counter (kernel older than 4.13)",)


def test_read_v2(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, 2, V2_FILES)
    assert snap == cgroup.MemorySnapshot(2, str(tmp_path), 536870912, 12345, 67890, 1, ())


def test_read_v2_without_peak(tmp_path: Path) -> None:
    files = {k: v for k, v in V2_FILES.items() if k != "memory.peak"}
    snap = snapshot(tmp_path, 2, files)
    assert (snap.peak_bytes, snap.problems, snap.usage_bytes) == (None, (), 12345)


def test_read_v2_events_new_keys_any_order(tmp_path: Path) -> None:
    events = "oom_group_kill 0\nsock_throttled 9\noom_kill 4\noom 7\nlow 0\n"
    snap = snapshot(tmp_path, 2, {**V2_FILES, "memory.events": events})
    assert (snap.oom_kill, snap.problems) == (4, ())


def test_read_v2_inherited_limit_stops_at_mount(tmp_path: Path) -> None:
    top = tmp_path / "cg"
    leaf = top / "system.slice" / "app.service"
    leaf.mkdir(parents=True)
    for name, text in {**V2_FILES, "memory.max": "max\n"}.items():
        (leaf / name).write_text(text)
    (top / "system.slice" / "memory.max").write_text("1073741824\n")
    (top / "memory.max").write_text("2147483648\n")
    (tmp_path / "memory.max").write_text("4096\n")  # above the mount: never read
    snap = cgroup.read(MemoryCgroup(2, str(leaf), "/system.slice/app.service", str(top)))
    assert (snap.limit_bytes, snap.problems) == (1073741824, ())


def test_read_v2_unlimited_everywhere(tmp_path: Path) -> None:
    leaf = tmp_path / "a"
    leaf.mkdir()
    for name, text in {**V2_FILES, "memory.max": "max\n"}.items():
        (leaf / name).write_text(text)
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup.read(MemoryCgroup(2, str(leaf), "/a", str(tmp_path))).limit_bytes is None


def test_read_missing_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "memory.oom_control").mkdir()  # unreadable even for root
    files = {"memory.usage_in_bytes": "100\n", "memory.max_usage_in_bytes": "x\n"}
    snap = snapshot(tmp_path, 1, files)
    figures = (snap.limit_bytes, snap.usage_bytes, snap.peak_bytes, snap.oom_kill)
    assert figures == (None, 100, None, None)
    assert snap.problems == (
        f"cannot read {tmp_path}/memory.limit_in_bytes: No such file or directory",
        f"cannot read {tmp_path}/memory.stat: No such file or directory",
        f"unexpected content in {tmp_path}/memory.max_usage_in_bytes",
        f"cannot read {tmp_path}/memory.oom_control: Is a directory",
    )


def test_read_vanished_cgroup_never_raises(tmp_path: Path) -> None:
    snap = cgroup.read(MemoryCgroup(2, str(tmp_path / "gone"), "/gone"))
    assert snap.usage_bytes is None
    assert len(snap.problems) == 3  # memory.peak is optional


def test_read_unknown_version(tmp_path: Path) -> None:
    snap = cgroup.read(MemoryCgroup(3, str(tmp_path), "/"))
    assert snap.problems == ("unknown cgroup version 3",)


# ---- this machine -----------------------------------------------------------


def test_real_machine() -> None:
    try:
        found = cgroup.locate()
    except CgroupError as e:
        pytest.skip(f"no memory cgroup readable here: {e}")
    snap = cgroup.read(found)
    if snap.usage_bytes is None:
        pytest.skip(f"memory cgroup {found.path} unreadable: {'; '.join(snap.problems)}")
    assert snap.version in (1, 2)
    assert os.path.isdir(snap.path)
    assert snap.usage_bytes > 0
    assert snap.limit_bytes is None or snap.limit_bytes > 0
    assert snap.oom_kill is None or snap.oom_kill >= 0


@pytest.mark.parametrize(("version", "files", "expected"), [(1, V1_FILES, 3), (2, V2_FILES, 1)])
def test_read_oom_kill_alone(tmp_path: Path, version: int, files: dict[str, str], expected: int) -> None:
    snap = snapshot(tmp_path, version, files)
    assert cgroup.read_oom_kill(MemoryCgroup(version, str(tmp_path), "/")) == snap.oom_kill == expected
    assert cgroup.read_oom_kill(MemoryCgroup(version, str(tmp_path / "gone"), "/")) is None
