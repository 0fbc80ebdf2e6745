"""End to end: a real OOM kill by the kernel, in a memory cgroup made for the
test, seen by Navi under real supervisord."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from navi.demo.sandbox import program
from tests.helpers import triggered

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
    [oom] = box.wait_notifications(1)
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
    box.wait_notifications(2)
    found = box.check_files()
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
    [oom] = box.wait_notifications(1, timeout=20)
    assert oom["type"] == "oom" and oom["count"] == 1
    assert oom["process"] == {"name": None, "group": None, "pid": None}
    assert oom["Header"]["eventname"] == "TICK_5"
    assert "no supervised program died" in oom["summary"]
    assert oom["memory"]["limit_bytes"] == LIMIT and oom["memory"]["oom_kill"] >= 1
    assert [p["name"] for p in oom["memory"]["programs"]] == ["parent"]  # sampled at that TICK
    assert box.status()["parent"] == "RUNNING"  # the program lived on
    time.sleep(6)  # one more TICK_5: the kill is reported once, not again
    assert len(box.check_files()) == 1
    box.check_healthy()
