"""``navi postmortem`` under real supervisord, with a real OOM kill in a
memory cgroup made for the test, once the container has ended."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from navi.demo.sandbox import program
from navi.listener import cgroup
from tests.helpers import MEMORY_LIMIT, triggered, without_pressure

if TYPE_CHECKING:
    from navi.listener.cgroup import MemoryCgroup
    from tests.helpers import SandboxFactory

HOG = triggered("hog", f'exec {sys.executable} -c "b = bytearray(300 * 2**20)"')


def postmortem(cgroup_dir: str, volume: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "navi", "postmortem", "--cgroup", cgroup_dir, "--volume", str(volume), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_kill_no_navi_lived_to_report_is_written_once_after_the_container_ended(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    """On this host's v1, the nearest thing to a group kill: Navi is stopped,
    the program is OOM-killed, and the container ends."""
    box = sandbox(
        program("hog", HOG) + program("sleeper", "sleep 3600"), root=scratch_dir, cgroup_dir=memory_cgroup.path
    )
    box.wait_states({"hog": "RUNNING", "sleeper": "RUNNING", "navi": "RUNNING"})
    box.ctl("stop", "navi")
    box.wait_states({"navi": "STOPPED"})
    box.trigger("hog")
    box.wait_states({"hog": "EXITED"})
    box.stop()  # the container ends
    assert box.incidents() == []
    done = postmortem(memory_cgroup.path, box.mnt)
    assert done.returncode == 0, done.stderr
    (n,) = without_pressure(box.check_files())
    assert n["type"] == "oom" and n["process"]["name"] is None and n["count"] == 1
    assert n["memory"]["oom_kill_rise"] == 1 and n["memory"]["cgroup_path"] == memory_cgroup.path
    assert "did not live to report" in n["summary"]
    again = postmortem(memory_cgroup.path, box.mnt)
    assert again.returncode == 0 and "already written" in again.stderr
    assert len(without_pressure(box.check_files())) == 1
    shown = postmortem(memory_cgroup.path, box.mnt, "--json")
    assert json.loads(shown.stdout)["id"] == n["id"]


def test_a_group_kill_of_the_whole_container_is_written_after_it(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    """memory.oom.group=1 (Kubernetes on cgroup v2): one OOM kill takes
    supervisord, Navi and every program at once; nothing inside is left to
    write, and ``navi postmortem`` does it from what outlived them."""
    if memory_cgroup.version != 2:
        pytest.skip("memory.oom.group is cgroup v2's (the VM tier runs this)")
    Path(memory_cgroup.path, "memory.oom.group").write_text("1")
    box = sandbox(
        program("hog", HOG) + program("sleeper", "sleep 3600"), root=scratch_dir, cgroup_dir=memory_cgroup.path
    )
    box.wait_states({"hog": "RUNNING", "sleeper": "RUNNING", "navi": "RUNNING"})
    state = box.notifications / ".navi-state.json"
    # Navi saves which programs run at a TICK, once a minute at most.
    box.wait_for(lambda: state.exists() and '"sleeper"' in state.read_text(), 90, "Navi's state to name them")
    assert box.process is not None
    box.trigger("hog")
    assert box.process.wait(timeout=120) == -9  # supervisord too
    deadline = time.monotonic() + 30
    while Path(memory_cgroup.path, "cgroup.procs").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Path(memory_cgroup.path, "cgroup.procs").read_text() == "", "the group kill left processes"
    with open(os.path.join(memory_cgroup.path, "memory.events")) as f:
        events = cgroup.parse_flat_keyed(f.read())
    assert events["oom_group_kill"] == 1 and events["oom_kill"] >= 3, events
    assert box.incidents() == []

    done = postmortem(memory_cgroup.path, box.mnt)
    assert done.returncode == 0, done.stderr
    (n,) = without_pressure(box.check_files())
    assert n["type"] == "oom" and n["count"] == 1 and n["process"]["name"] is None
    whole = "the kernel's OOM killer killed the whole container at once (memory.oom.group): supervisord, Navi and "
    assert n["summary"].startswith(whole), n["summary"]
    assert "hog" in n["summary"] and "sleeper" in n["summary"], n["summary"]
    memory = n["memory"]
    assert memory["cgroup_version"] == 2 and memory["cgroup_path"] == memory_cgroup.path
    assert memory["limit_bytes"] == MEMORY_LIMIT and memory["oom_kill"] == events["oom_kill"]
    assert isinstance(memory["peak_bytes"], int) and 0.8 * MEMORY_LIMIT < memory["peak_bytes"] <= MEMORY_LIMIT
    assert memory["problems"] == []
    again = postmortem(memory_cgroup.path, box.mnt)
    assert again.returncode == 0 and "already written" in again.stderr
    assert len(without_pressure(box.check_files())) == 1


def test_nothing_is_written_when_navi_reported_the_kill(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    box = sandbox(program("hog", HOG), root=scratch_dir, cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog": "RUNNING"})
    box.trigger("hog")
    [oom] = box.wait_incidents(1)
    assert oom["type"] == "oom"
    box.stop()
    done = postmortem(memory_cgroup.path, box.mnt)
    assert done.returncode == 0 and "nothing to report" in done.stderr
    assert len(without_pressure(box.check_files())) == 1


def test_a_missing_cgroup_is_one_line_and_status_1(scratch_dir: Path) -> None:
    (scratch_dir / "notifications").mkdir()
    done = postmortem(str(scratch_dir / "gone"), scratch_dir)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("navi postmortem: cannot read the cgroup")
    shutil.rmtree(scratch_dir / "notifications")
    assert not os.listdir(scratch_dir)
