"""End to end, with real OOM kills in a memory cgroup made for the test:
incidents that reach a Navi that was not there when they happened.

supervisord buffers events while Navi is stopped or being respawned, and
hands them to the next Navi, whose own first reading of the oom_kill
counter already counts the kill.  It goes on from the last Navi's saved
reading instead, so the death is still an OOM kill."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import psutil

from navi.demo.sandbox import program
from tests.helpers import triggered

if TYPE_CHECKING:
    from navi.listener.cgroup import MemoryCgroup
    from tests.helpers import E2ESandbox, SandboxFactory

# exec: supervisord sees the SIGKILL itself; bytearray(n) touches every page.
HOG = triggered("hog", f'exec {sys.executable} -c "b = bytearray(300 * 2**20)"')
# Navi starts 2 s late while {mnt}/tmp/slow exists: the kill happens while no Navi runs.
SLOW_NAVI = "sh -c 'if [ -e {mnt}/tmp/slow ]; then sleep 2; fi; exec navi listen'"


# The first Navi of this supervisord waits for {mnt}/tmp/go: a slow first start.
LATE_NAVI = "sh -c 'while [ ! -e {mnt}/tmp/go ]; do sleep 0.1; done; exec navi listen'"


def assert_oom_of_hog(box: E2ESandbox) -> dict[str, Any]:
    found = box.wait_incidents(1, timeout=120)
    assert len(found) == 1, [(n["type"], n["summary"], n["notes"]) for n in found]
    [oom] = found
    assert oom["type"] == "oom", oom
    assert oom["process"]["name"] == "hog" and oom["exit"]["signal"] == "SIGKILL"
    assert oom["memory"]["oom_kill"] >= 1
    assert not any("baseline" in note for note in oom["notes"]), oom["notes"]
    return oom


def test_a_kill_before_the_first_navi_is_up_is_an_oom(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    """No state and no earlier reading: the counter's kills are taken as this
    young supervisord's container's, not as a baseline."""
    box = sandbox(program("hog", HOG), cgroup_dir=memory_cgroup.path, navi_command=LATE_NAVI)
    box.wait_states({"hog": "RUNNING"})
    box.trigger("hog")
    box.wait_states({"hog": "EXITED"})
    assert not (box.notifications / ".navi-state.json").exists()
    (box.mnt / "tmp" / "go").touch()
    oom = assert_oom_of_hog(box)
    assert any("before this container's first Navi read" in note for note in oom["notes"]), oom["notes"]


def test_a_kill_while_navi_is_stopped_is_an_oom_when_it_starts(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory
) -> None:
    box = sandbox(program("hog", HOG), cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog": "RUNNING", "navi": "RUNNING"})
    box.ctl("stop", "navi")
    box.wait_states({"navi": "STOPPED"})
    box.trigger("hog")
    box.wait_states({"hog": "EXITED"})
    assert "WARN exited: hog (terminated by SIGKILL; not expected)" in box.log("supervisord.log")
    assert box.incidents() == []
    box.ctl("start", "navi")
    assert_oom_of_hog(box)
    box.check_healthy(navi_starts=2)


def test_a_kill_while_navi_is_killed_and_respawning_is_an_oom(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory
) -> None:
    box = sandbox(program("hog", HOG), cgroup_dir=memory_cgroup.path, navi_command=SLOW_NAVI)
    box.wait_states({"hog": "RUNNING", "navi": "RUNNING"})
    box.wait_for(lambda: (box.notifications / ".navi-state.json").exists(), 60, "Navi's first state")
    (box.mnt / "tmp" / "slow").touch()
    os.kill(box.pid("navi"), signal.SIGKILL)
    box.trigger("hog")
    box.wait_states({"hog": "EXITED"})
    (box.mnt / "tmp" / "slow").unlink()
    assert_oom_of_hog(box)
    assert "exited: navi (terminated by SIGKILL; not expected)" in box.log("supervisord.log")
    assert len(box.spawned_pids("navi")) == 2


def test_navi_itself_killed_by_the_oom_killer_is_reported_as_navi(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory
) -> None:
    """The kernel picks Navi (its oom_score_adj at 1000) when a program takes
    the cgroup past its limit: the program takes 1 MiB at a time until Navi is
    gone, then ends (expectedly) before Navi is started again."""
    grab = triggered("grab", f"exec {sys.executable} {{mnt}}/app/grab.py")
    box = sandbox(program("grabber", grab), cgroup_dir=memory_cgroup.path)
    box.wait_states({"grabber": "RUNNING", "navi": "RUNNING"})
    box.wait_for(lambda: (box.notifications / ".navi-state.json").exists(), 60, "Navi's first state")
    navi_pid = box.pid("navi")
    with open(f"/proc/{navi_pid}/oom_score_adj", "w") as f:
        f.write("1000")
    (box.mnt / "app" / "grab.py").write_text(GRAB.format(pid=navi_pid))
    box.trigger("grab")
    box.wait_for(lambda: len(box.spawned_pids("navi")) == 2, 120, "Navi to be started again")

    def navis() -> list[dict[str, Any]]:
        return [n for n in box.incidents() if n["process"]["name"] == "navi"]

    # Under load the grabber may go on a moment too long and be killed in turn:
    # its own oom, and the one left at the next TICK is still Navi's.
    [own] = box.wait_for(navis, 120, "the notification of Navi's own OOM kill")
    assert own["type"] == "oom", own
    assert own["process"]["pid"] == navi_pid
    assert own["exit"]["signal"] == "SIGKILL"
    assert own["summary"].startswith("Navi itself (navi) was killed by the kernel's OOM killer")
    assert "not the customer's program" in own["notes"][0]
    others = [n for n in box.incidents() if n is not own and n["process"]["name"] != "navi"]
    assert all(n["type"] == "oom" and n["process"]["name"] == "grabber" for n in others), others
    if others:
        return
    assert "exited: grabber (exit status 0; expected)" in box.log("supervisord.log")
    assert not psutil.pid_exists(navi_pid)


# Until Navi is gone: a zombie (killed, not yet reaped) holds no memory.
GRAB = """
import time
def alive():
    try:
        return open("/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
chunks = []
while alive():
    chunks.append(bytearray(1 << 20))
time.sleep(0.2)
"""


def _members(path: str) -> list[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return [int(pid) for pid in f.read().split()]


def memory_cgroup_limit(cgroup: MemoryCgroup) -> int:
    name = "memory.limit_in_bytes" if cgroup.version == 1 else "memory.max"
    with open(os.path.join(cgroup.path, name)) as f:
        return int(f.read())
