"""``navi postmortem``: the notification for OOM kills no Navi lived to
report, from what outlives the container.  Its judgement (pure), then
under real supervisord with a real OOM kill in a memory cgroup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from navi.demo.sandbox import program
from navi.listener.cgroup import MemorySnapshot
from navi.listener.classify import Origin
from navi.listener.core import Counter, RunningProgram, State
from navi.listener.postmortem import Remains, judge
from navi.listener.procs import RssSample
from tests.conftest import triggered

if TYPE_CHECKING:
    from navi.listener.cgroup import MemoryCgroup
    from tests.conftest import SandboxFactory

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
CGROUP = "/sys/fs/cgroup/kubepods/pod1/ctr"
ORIGIN = Origin("web-7f9c2", 1, T0, "boot:1:100", "navi", "navi", "2.0.0")


def memory(oom_kill: Optional[int]) -> MemorySnapshot:
    return MemorySnapshot(2, CGROUP, 192 << 20, 190 << 20, 192 << 20, oom_kill, ())


def state(oom_kill: int, kills: int = 0) -> State:
    return State(
        supervisord="boot:1:100",
        applied=41,
        counter=Counter(CGROUP, oom_kill, [T0] * kills),
        running=[RunningProgram("web", "web", 8), RunningProgram("worker", "worker", 9)],
        samples=[RssSample("web", "web", 8, 150 << 20, T0), RssSample("worker", "worker", 9, 20 << 20, T0)],
        origin=ORIGIN,
        stamp=T0,
    )


def test_a_group_kill_names_the_programs_and_sorts_after_navis_last_file() -> None:
    out = judge(Remains(state(0), memory(4), group_kills=1), "host", T0)
    assert out is not None
    n = out.notification
    assert (n.type, n.count, n.process.name) == ("oom", 1, None)
    assert n.summary.startswith(
        "the kernel's OOM killer killed the whole container at once (memory.oom.group): "
        "supervisord, Navi and web, worker"
    )
    assert n.memory is not None and n.memory.oom_kill_rise == 4 and n.memory.limit_bytes == 192 << 20
    assert [p.name for p in n.memory.programs] == ["web", "worker"]
    assert out.name == "20261201T030000.000000Z-000000000042.json"  # after event 41, Navi's last
    assert n.id == "web-7f9c2:boot:1:100:postmortem:4"  # the same however often it is run


def test_nothing_when_navi_reported_every_kill() -> None:
    assert judge(Remains(state(3), memory(3), group_kills=0), "host", T0) is None


def test_kills_navi_counted_but_had_not_placed_are_reported_on_v1_too() -> None:
    out = judge(Remains(state(3, kills=1), memory(3), group_kills=None), "host", T0)
    assert out is not None and out.notification.count == 1
    assert "did not live to report" in out.notification.summary


def test_without_a_state_every_kill_counted_is_reported_and_that_is_said() -> None:
    out = judge(Remains(None, memory(2), group_kills=None), "host", T0)
    assert out is not None and out.notification.count == 2
    assert any("Navi left no state" in note for note in out.notification.notes)


def test_an_unreadable_counter_reports_nothing() -> None:
    assert judge(Remains(state(0), memory(None), group_kills=None), "host", T0) is None


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
