"""End to end: real OOM kills by the kernel, and other deaths, in a memory
cgroup made for the test (the container's), seen by Navi under real
supervisord.  The VM tier (tests/vm/) runs these on cgroup v2 too; the
ones only v2 has skip elsewhere."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from navi.demo.sandbox import program
from tests.helpers import triggered, without_pressure

if TYPE_CHECKING:
    from navi.listener.cgroup import MemoryCgroup
    from tests.helpers import SandboxFactory

LIMIT = 134217728  # what the memory_cgroup fixture sets: 128 MiB, no swap


# exec: the hog is the process supervisord started, so supervisord sees the
# SIGKILL itself (a shell in between would turn it into "exit status 137").
# bytearray(n) zero-fills its buffer, touching every page.
HOG = triggered("hog", f'exec {sys.executable} -c "b = bytearray(300 * 2**20)"')


def test_real_oom_kill_then_kill_9(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    box = sandbox(program("hog", HOG) + program("sleeper", "sleep 3600"), cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog": "RUNNING", "sleeper": "RUNNING"})
    assert box.spawned_pids("navi") and box.process is not None
    with open(os.path.join(memory_cgroup.path, "cgroup.procs")) as f:
        members = {int(pid) for pid in f.read().split()}
    hog_pid, sleeper_pid = box.pid("hog"), box.pid("sleeper")
    assert {box.process.pid, hog_pid, sleeper_pid, *box.spawned_pids("navi")} <= members

    box.trigger("hog")
    [oom] = box.wait_incidents(1)
    box.wait_states({"hog": "EXITED"})
    assert "WARN exited: hog (terminated by SIGKILL; not expected)" in box.log("supervisord.log")

    assert oom["type"] == "oom"
    assert oom["process"] == {"name": "hog", "group": "hog", "pid": hog_pid}
    assert oom["Header"]["eventname"] == "PROCESS_STATE_EXITED"
    assert oom["Metadata"]["pid"] == str(hog_pid)
    assert oom["exit"]["signal"] == "SIGKILL"
    assert oom["exit"]["signal_number"] == 9
    assert oom["exit"]["code"] is None
    assert oom["exit"]["during_startup"] is False
    assert "OOM" in oom["summary"]
    assert oom["summary"].startswith("hog was killed by the kernel's OOM killer (memory limit 128.0 MiB, peak ")
    memory = oom["memory"]
    assert memory["cgroup_version"] == memory_cgroup.version
    assert memory["cgroup_path"] == memory_cgroup.path
    assert memory["limit_bytes"] == LIMIT
    assert memory["oom_kill"] >= 1
    # Counted here, or (if a TICK came between the kill and this event) at
    # that TICK, which left it to this death waiting in the log.
    counted_earlier = [n for n in oom["notes"] if n.startswith("this OOM kill was counted ")]
    assert memory["oom_kill_rise"] == (0 if counted_earlier else 1)
    assert isinstance(memory["usage_bytes"], int) and memory["usage_bytes"] > 0
    assert isinstance(memory["peak_bytes"], int)
    assert 0.8 * LIMIT < memory["peak_bytes"] <= LIMIT
    assert memory["problems"] == []
    assert oom["notes"] == counted_earlier

    # A kill -9 from outside, in the same cgroup: the counter did not rise.
    os.kill(sleeper_pid, signal.SIGKILL)
    box.wait_incidents(2)
    found = without_pressure(box.check_files())
    assert [n["type"] for n in found] == ["oom", "crash"]
    crash = found[1]
    assert crash["process"] == {"name": "sleeper", "group": "sleeper", "pid": sleeper_pid}
    assert crash["exit"]["signal"] == "SIGKILL"
    assert crash["exit"]["signal_number"] == 9
    assert crash["summary"] == "sleeper crashed: killed by SIGKILL"
    assert crash["memory"]["cgroup_path"] == memory_cgroup.path
    assert crash["memory"]["oom_kill"] == memory["oom_kill"]
    assert crash["memory"]["oom_kill_rise"] == 0
    box.check_healthy()


def test_a_child_oom_killed_while_its_program_lives_on(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    """A shell start script whose child is OOM-killed: no supervised program
    exits, and the container's oom notification says so, within a TICK."""
    parent = triggered("parent", f'{sys.executable} -c "b = bytearray(300 * 2**20)"; exec sleep 3600')
    box = sandbox(program("parent", parent), cgroup_dir=memory_cgroup.path)
    box.wait_states({"parent": "RUNNING"})
    box.trigger("parent")
    [oom] = box.wait_incidents(1, timeout=20)
    assert oom["type"] == "oom" and oom["count"] == 1
    assert oom["process"] == {"name": None, "group": None, "pid": None}
    assert oom["Header"]["eventname"] == "TICK_5"
    assert "no supervised program died" in oom["summary"]
    assert oom["memory"]["limit_bytes"] == LIMIT and oom["memory"]["oom_kill"] >= 1
    assert [p["name"] for p in oom["memory"]["programs"]] == ["parent"]  # sampled at that TICK
    assert box.status()["parent"] == "RUNNING"  # the program lived on
    time.sleep(6)  # one more TICK_5: the kill is reported once, not again
    assert len(without_pressure(box.check_files())) == 1
    box.check_healthy()


def check_figures(n: dict[str, Any], cgroup: MemoryCgroup, oom_kill: int) -> None:
    """The container's own memory figures, as its kernel keeps them."""
    memory = n["memory"]
    assert memory["cgroup_version"] == cgroup.version
    assert memory["cgroup_path"] == cgroup.path
    assert memory["limit_bytes"] == LIMIT
    assert memory["oom_kill"] == oom_kill
    assert memory["problems"] == []
    assert isinstance(memory["usage_bytes"], int) and memory["usage_bytes"] > 0
    # v1's max_usage_in_bytes, or v2's memory.peak (Linux 5.19+).
    if cgroup.version == 1 or os.path.exists(os.path.join(cgroup.path, "memory.peak")):
        assert isinstance(memory["peak_bytes"], int) and memory["peak_bytes"] <= LIMIT


def test_a_crash_and_a_death_by_signal_in_the_cgroup(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    segv = triggered("segv", "ulimit -c 0; kill -SEGV $$")
    box = sandbox(program("three", triggered("three", "exit 3")) + program("segv", segv), cgroup_dir=memory_cgroup.path)
    box.wait_states({"three": "RUNNING", "segv": "RUNNING"})
    pids = {name: box.pid(name) for name in ("three", "segv")}
    box.trigger("three")
    box.trigger("segv")
    box.wait_incidents(2)
    found = {n["process"]["name"]: n for n in without_pressure(box.check_files())}
    assert set(found) == {"three", "segv"}
    three, killed = found["three"], found["segv"]
    assert three["type"] == "crash" and three["summary"] == "three crashed: exit status 3"
    assert (three["exit"]["code"], three["exit"]["signal"]) == (3, None)
    assert killed["type"] == "crash" and killed["summary"] == "segv crashed: killed by SIGSEGV"
    assert (killed["exit"]["code"], killed["exit"]["signal"], killed["exit"]["signal_number"]) == (None, "SIGSEGV", 11)
    for name, n in found.items():
        assert n["process"]["pid"] == pids[name]
        assert n["memory"]["oom_kill_rise"] == 0 and n["notes"] == []
        check_figures(n, memory_cgroup, oom_kill=0)
    box.check_healthy()


def test_a_shell_wrapped_oom_kill_is_exit_137(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    """The shell stays (``exit $?`` is still to run): its child's SIGKILL
    reaches supervisord as exit status 137."""
    hog = triggered("hog", f'{sys.executable} -c "b = bytearray(300 * 2**20)"; exit $?')
    box = sandbox(program("hog", hog), cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog": "RUNNING"})
    pid = box.pid("hog")
    box.trigger("hog")
    [oom] = box.wait_incidents(1)
    assert "WARN exited: hog (exit status 137; not expected)" in box.log("supervisord.log")
    assert oom["type"] == "oom", oom
    assert oom["process"] == {"name": "hog", "group": "hog", "pid": pid}
    assert (oom["exit"]["code"], oom["exit"]["signal"]) == (137, None)
    assert oom["summary"].startswith("hog was killed by the kernel's OOM killer (memory limit 128.0 MiB")
    check_figures(oom, memory_cgroup, oom_kill=1)
    box.check_healthy()


def test_two_programs_oom_killed_within_a_second(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    """Both let go at once: each is a notification of its own."""
    hog = triggered("hogs", f'exec {sys.executable} -c "b = bytearray(300 * 2**20)"')
    box = sandbox(program("hog1", hog) + program("hog2", hog), cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog1": "RUNNING", "hog2": "RUNNING"})
    pids = {name: box.pid(name) for name in ("hog1", "hog2")}
    # Where the CPU is slow (the VM tier's), the hogs' memory is freed so
    # slowly that the kernel may go on to kill supervisord or Navi: keep
    # them out of its choice (their programs, forked before, are not).
    # Lowering it needs CAP_SYS_RESOURCE, which root in a container (this
    # host) may lack; there the CPU is fast enough.
    assert box.process is not None
    for pid in (box.process.pid, box.pid("navi")):
        with contextlib.suppress(PermissionError):
            Path(f"/proc/{pid}/oom_score_adj").write_text("-1000")
    box.trigger("hogs")
    box.wait_incidents(2)
    found = without_pressure(box.check_files())
    assert sorted((n["type"], n["process"]["name"]) for n in found) == [("oom", "hog1"), ("oom", "hog2")], found
    for n in found:
        assert n["process"]["pid"] == pids[n["process"]["name"]]
        assert n["exit"]["signal"] == "SIGKILL"
        assert n["memory"]["limit_bytes"] == LIMIT and n["memory"]["problems"] == []
    assert max(n["memory"]["oom_kill"] for n in found) == 2
    box.check_healthy()


# A key this kernel does not have, before the one Navi reads, and named so
# that a parser matching on a prefix of "oom_kill" would take its value.
NEW_KEY = "oom_kill_later 9\n"


def test_a_key_navi_does_not_know_in_memory_events(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    """The kernel's own memory.events with one more key, bind-mounted over
    the file: a copy that the test brings up to date with the kernel's
    counts after the OOM kill, while Navi is stopped (SIGSTOP), so that Navi
    reads the kernel's real counts in a file that has a key it does not know."""
    if memory_cgroup.version != 2:
        pytest.skip("memory.events is cgroup v2's (the VM tier runs this)")
    events = os.path.join(memory_cgroup.path, "memory.events")
    kernels = os.open(events, os.O_RDONLY)  # still the kernel's file once the copy hides it
    copy = scratch_dir / "memory.events"

    def mirror() -> None:
        lines = os.pread(kernels, 65536, 0).decode().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("oom_kill "))
        copy.write_text("".join(lines[:at]) + NEW_KEY + "".join(lines[at:]))  # the same inode: the mount sees it

    try:
        mirror()
        subprocess.run(["mount", "--bind", str(copy), events], check=True, capture_output=True)
        try:
            assert NEW_KEY in Path(events).read_text()
            box = sandbox(program("hog", HOG), cgroup_dir=memory_cgroup.path)
            box.wait_states({"hog": "RUNNING", "navi": "RUNNING"})
            box.wait_for(lambda: (box.notifications / ".navi-state.json").exists(), 30, "Navi's first state")
            navi = box.pid("navi")
            os.kill(navi, signal.SIGSTOP)
            try:
                box.trigger("hog")
                box.wait_states({"hog": "EXITED"})
                mirror()
            finally:
                os.kill(navi, signal.SIGCONT)
            [oom] = box.wait_incidents(1)
            assert oom["type"] == "oom" and oom["process"]["name"] == "hog", oom
            check_figures(oom, memory_cgroup, oom_kill=1)
            box.check_healthy()
        finally:
            subprocess.run(["umount", events], check=True, capture_output=True)
    finally:
        os.close(kernels)
