"""End to end, under real supervisord: what a notification tells beyond the
death itself.  A crash loop entered and left; a death during startsecs seen
at once; memory pressure told well before a real OOM kill."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from navi.demo.sandbox import program
from tests.helpers import MEMORY_LIMIT, triggered

if TYPE_CHECKING:
    from navi.listener.cgroup import MemoryCgroup
    from tests.helpers import SandboxFactory


def when(n: dict[str, Any], key: str = "time") -> datetime:
    return datetime.fromisoformat(n[key].replace("Z", "+00:00"))


# Dies three times (after startsecs: supervisord restarts it for ever), then
# stays up: a crash loop that begins, and ends once it has been calm.
FLAKY = (
    "sh -c 'n=$(cat {mnt}/tmp/runs 2>/dev/null || echo 0); echo $((n+1)) > {mnt}/tmp/runs; "
    'echo "run $n"; sleep 1.2; if [ $n -lt 3 ]; then echo "fatal: run $n gave up" >&2; exit 2; fi; exec sleep 3600\''
)


def test_a_crash_loop_begins_with_its_deaths_and_ends_when_calm(sandbox: SandboxFactory) -> None:
    box = sandbox(
        program("flaky", FLAKY, autorestart="true", startsecs=1),
        env={"NAVI_LOOP_DEATHS": "3", "NAVI_LOOP_WINDOW": "60", "NAVI_LOOP_CALM": "4"},
    )

    def loop_over() -> list[dict[str, Any]]:
        found = [n for n in box.notifications_list() if n["type"] == "crash_loop"]
        return found if len(found) == 2 else []

    began, ended = box.wait_for(loop_over, 40, "the crash loop to begin and end")
    crashes = [n for n in box.notifications_list() if n["type"] == "crash"]
    assert [n["deaths"]["total"] for n in crashes] == [1, 2, 3]
    assert crashes[-1]["deaths"] == {"total": 3, "recent": 3, "window_seconds": 60, "crash_loop": True}
    assert began["crash_loop"]["phase"] == "began" and began["crash_loop"]["deaths"] == 3
    assert began["crash_loop"]["first_death"] == crashes[0]["time"]
    assert began["crash_loop"]["last_death"] == crashes[-1]["time"]
    assert began["summary"].startswith("flaky is in a crash loop: 3 deaths in ")
    assert began["summary"].endswith("its last exit: exit status 2 \u2014 fatal: run 2 gave up")
    assert began["output"]["stdout"]["lines"][-1] == "run 2"
    assert ended["crash_loop"]["phase"] == "ended" and ended["crash_loop"]["why_ended"] == "no death for 4 s"
    assert (when(ended) - when(crashes[-1])).total_seconds() >= 4
    assert not ended["deaths"]["crash_loop"] and ended["deaths"]["total"] == 3
    assert box.status()["flaky"] == "RUNNING"
    box.check_healthy()


# Told to go on (Navi is up), it dies a second later, well within startsecs.
STARTS_BADLY = triggered("api", "echo listening...; sleep 1; echo cannot bind :8080 >&2; exit 4")


def test_a_death_during_startup_is_seen_at_its_death(sandbox: SandboxFactory) -> None:
    """The pid of a STARTING program (from its spawned: line) is watched like
    a running one's: its last words are read at its death, and supervisord
    woken at once."""
    box = sandbox(program("api", STARTS_BADLY, startsecs=10, startretries=1, autorestart="true"))
    box.wait_states({"navi": "RUNNING", "api": "STARTING"})
    box.trigger("api")
    fatal = box.wait_for(
        lambda: next((n for n in box.notifications_list() if n["type"] == "fatal"), None), 30, "api to go FATAL"
    )
    crashes = [n for n in box.notifications_list() if n["type"] == "crash"]
    assert len(crashes) == 2 and all(n["exit"]["during_startup"] for n in crashes)
    for crash in crashes:
        assert crash["output"]["at_death"] is True, crash["output"]
        assert crash["summary"] == "api crashed during startup: exit status 4 \u2014 cannot bind :8080"
        assert not [note for note in crash["notes"] if "its output" in note], crash["notes"]
    assert fatal["summary"].endswith("its last exit: exit status 4 \u2014 cannot bind :8080")
    box.check_healthy()


def test_pressure_is_told_10_s_before_a_real_oom_kill(memory_cgroup: MemoryCgroup, sandbox: SandboxFactory) -> None:
    """A climb from half the limit to past it in 30 s (navi.demo.ramp)."""
    usage = "memory.usage_in_bytes" if memory_cgroup.version == 1 else "memory.current"
    limit = MEMORY_LIMIT
    command = f"exec {sys.executable} -m navi.demo.ramp {memory_cgroup.path}/{usage} {limit} 30"
    box = sandbox(
        program("ramp", triggered("ramp", command)), cgroup_dir=memory_cgroup.path, env={"NAVI_PRESSURE_CALM": "5"}
    )
    box.wait_states({"ramp": "RUNNING", "navi": "RUNNING"})
    box.trigger("ramp")

    def told() -> list[dict[str, Any]]:
        found = box.notifications_list()
        return found if any(n["type"] == "oom" for n in found) else []

    found = box.wait_for(told, 90, "the ramp's OOM kill")
    began = next(n for n in found if n["type"] == "pressure")
    oom = next(n for n in found if n["type"] == "oom")
    assert began["pressure"]["phase"] == "began" and began["process"]["name"] is None
    assert began["pressure"]["working_set_bytes"] >= 0.75 * limit and began["pressure"]["limit_bytes"] == limit
    assert began["summary"].startswith("the container is near its memory limit: working set ")
    assert [p["name"] for p in began["memory"]["programs"]][:1] == ["ramp"]  # who held it
    assert (when(oom) - when(began)).total_seconds() >= 10, (began["time"], oom["time"])
    assert oom["process"]["name"] == "ramp" and oom["pressure"]["episode"] == began["pressure"]["episode"]
    # After the kill the memory is freed: the episode ends (its calm: 5 s here).
    ended = box.wait_for(
        lambda: next((n for n in box.notifications_list() if n.get("pressure", {}).get("phase") == "ended"), None),
        60,
        "the episode to end",
    )
    assert ended["pressure"]["episode"] == began["pressure"]["episode"]
    box.check_healthy()
