"""Process facts from psutil: a program's resident size with its
descendants, read from a procfs that may be the kernel's, a fake tree, or
gone; supervisord's identity, unchanged from the hand-written reader."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from bench import procfs as bench_procfs
from navi.listener import procs
from navi.listener.procs import identity

NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


@pytest.fixture
def family() -> Iterator[subprocess.Popen[bytes]]:
    """A shell with two children (one holding 32 MiB), as a program's tree."""
    hog = "import time; b = bytearray(32 << 20); b[::4096] = b'x' * (len(b) // 4096); time.sleep(60)"
    proc = subprocess.Popen(["sh", "-c", f"sleep 60 & {shlex.quote(sys.executable)} -c {shlex.quote(hog)} & wait"])
    try:
        deadline = time.monotonic() + 10
        while (
            len(psutil.Process(proc.pid).children(recursive=True)) < 2
            or max(c.memory_info().rss for c in psutil.Process(proc.pid).children()) < 32 << 20
        ):
            assert time.monotonic() < deadline, "the children did not start"
            time.sleep(0.05)
        yield proc
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def test_a_program_counts_with_its_descendants(family: subprocess.Popen[bytes]) -> None:
    (s,) = procs.sample([("web", "web", family.pid)], "/proc", NOW)
    own = psutil.Process(family.pid).memory_info().rss
    assert (s.name, s.group, s.pid, s.sampled_at) == ("web", "web", family.pid, NOW)
    assert s.rss_bytes >= own + (32 << 20)
    assert psutil.PROCFS_PATH == "/proc"  # put back


def test_many_programs_in_one_pass(family: subprocess.Popen[bytes]) -> None:
    children = psutil.Process(family.pid).children()
    programs = [("g", f"p{c.pid}", c.pid) for c in children] + [("g", "gone", 2**22 + 1)]
    samples = procs.sample(programs, "/proc", NOW)
    assert sorted(s.pid for s in samples) == sorted(c.pid for c in children)
    assert max(s.rss_bytes for s in samples) >= 32 << 20


def test_a_program_gone_has_no_sample_and_a_zombie_counts_nothing() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    zombie = subprocess.Popen(["true"])  # not reaped until the end
    deadline = time.monotonic() + 10
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        samples = procs.sample([("a", "gone", gone.pid), ("a", "zombie", zombie.pid)], "/proc", NOW)
        assert [(s.name, s.rss_bytes) for s in samples] == [("zombie", 0)]
    finally:
        zombie.wait()
    assert procs.sample([], "/proc", NOW) == []


def test_a_fake_tree_without_the_files_gives_no_sample(tmp_path: Path) -> None:
    """What psutil does where a file is missing or wrong: never an exception."""
    me = os.getpid()
    proc = tmp_path / "proc"
    assert procs.sample([("a", "a", me)], str(proc), NOW) == []  # no procfs at all
    proc.mkdir()
    assert procs.sample([("a", "a", me)], str(proc), NOW) == []  # an empty one
    (proc / str(me)).mkdir()
    assert procs.sample([("a", "a", me)], str(proc), NOW) == []  # no stat, no statm
    shutil.copy(f"/proc/{me}/stat", proc / str(me) / "stat")
    assert procs.sample([("a", "a", me)], str(proc), NOW) == []  # a stat, no statm
    (proc / "1").mkdir()
    (proc / "1" / "stat").write_text("garbage")
    (proc / "1" / "statm").write_text("garbage\n")
    (proc / "2").mkdir()
    (proc / "2" / "stat").write_text("")
    shutil.copy(f"/proc/{me}/statm", proc / str(me) / "statm")
    (s,) = procs.sample([("a", "a", me), ("b", "b", 1), ("c", "c", 2)], str(proc), NOW)
    assert s.pid == me and s.rss_bytes > 1 << 20
    assert psutil.PROCFS_PATH == "/proc"


def test_the_same_pids_under_another_procfs_are_read_there(tmp_path: Path, family: subprocess.Popen[bytes]) -> None:
    """Processes kept from one pass are not reused under another root."""
    assert procs.sample([("web", "web", family.pid)], "/proc", NOW)
    proc = tmp_path / "proc"
    (proc / str(family.pid)).mkdir(parents=True)
    shutil.copy(f"/proc/{family.pid}/stat", proc / str(family.pid) / "stat")
    (proc / str(family.pid) / "statm").write_text("100 7 0 0 0 0 0\n")
    (s,) = procs.sample([("web", "web", family.pid)], str(proc), NOW)
    assert s.rss_bytes == 7 * os.sysconf("SC_PAGE_SIZE")  # its children are not in that tree
    assert procs.sample([("web", "web", family.pid)], "/proc", NOW)[0].rss_bytes >= 32 << 20


def test_identity_keeps_its_key_and_takes_the_start_from_psutil(tmp_path: Path) -> None:
    me = psutil.Process()
    who = identity(me.pid)
    assert who.key is not None and who.started is not None
    boot_id, pid, ticks = who.key.rsplit(":", 2)
    assert boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert int(pid) == me.pid
    # The key's ticks are the start in clock ticks since boot, as psutil has it.
    assert int(ticks) == round((me.create_time() - psutil.boot_time()) * os.sysconf("SC_CLK_TCK"))
    assert who.started == datetime.fromtimestamp(me.create_time(), timezone.utc)
    # The same from a copy of the files.
    proc = tmp_path / "proc"
    for name in (f"{me.pid}/stat", "stat", "sys/kernel/random/boot_id"):
        (proc / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f"/proc/{name}", proc / name)
    assert identity(me.pid, str(proc)) == who
    (proc / "stat").unlink()  # no boot time there: still the key
    without = identity(me.pid, str(proc))
    assert without.key == who.key
    assert without.started in (None, who.started)  # psutil 5.9 keeps the boot time it read first
    assert psutil.PROCFS_PATH == "/proc"


def test_the_bench_reads_a_process_through_psutil() -> None:
    me = os.getpid()
    assert 1 < bench_procfs.rss_mb(me) <= bench_procfs.peak_rss_mb(me)
    assert bench_procfs.wakeups(me) >= 0 and bench_procfs.cpu_seconds(me) > 0
