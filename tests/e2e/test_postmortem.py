"""``navi postmortem`` under real supervisord, with a real OOM kill in a
memory cgroup made for the test, once the container has ended."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from navi.demo.sandbox import program
from tests.helpers import triggered

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
    assert box.notifications_list() == []
    done = postmortem(memory_cgroup.path, box.mnt)
    assert done.returncode == 0, done.stderr
    (n,) = box.check_files()
    assert n["type"] == "oom" and n["process"]["name"] is None and n["count"] == 1
    assert n["memory"]["oom_kill_rise"] == 1 and n["memory"]["cgroup_path"] == memory_cgroup.path
    assert "did not live to report" in n["summary"]
    again = postmortem(memory_cgroup.path, box.mnt)
    assert again.returncode == 0 and "already written" in again.stderr
    assert len(box.check_files()) == 1
    shown = postmortem(memory_cgroup.path, box.mnt, "--json")
    assert json.loads(shown.stdout)["id"] == n["id"]


def test_nothing_is_written_when_navi_reported_the_kill(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    box = sandbox(program("hog", HOG), root=scratch_dir, cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog": "RUNNING"})
    box.trigger("hog")
    [oom] = box.wait_notifications(1)
    assert oom["type"] == "oom"
    box.stop()
    done = postmortem(memory_cgroup.path, box.mnt)
    assert done.returncode == 0 and "nothing to report" in done.stderr
    assert len(box.check_files()) == 1


def test_a_missing_cgroup_is_one_line_and_status_1(scratch_dir: Path) -> None:
    (scratch_dir / "notifications").mkdir()
    done = postmortem(str(scratch_dir / "gone"), scratch_dir)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("navi postmortem: cannot read the cgroup")
    shutil.rmtree(scratch_dir / "notifications")
    assert not os.listdir(scratch_dir)
