"""``navi listen`` as a process, driven as supervisord drives it (navi.fake.play,
strict as supervisord), on file trees that reproduce the kernel's cgroup v2
formats and supervisord's log (navi.fake.world)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from navi.eventlistener import OK, READY
from navi.fake.world import FakeWorld
from navi.names import STATE_FILE
from tests.helpers import die, ended, envelope, exited_payload, notifications, start, stderr


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path / "world") as w:
        yield w


def test_crash_then_oom_on_cgroup_v2(world: FakeWorld) -> None:
    sup = start(world)
    die(world, "wëb", 100, "exit status 3")
    sup.event("PROCESS_STATE_EXITED", exited_payload("wëb", 100))
    die(world, "wëb", 101, "terminated by SIGKILL")
    world.set_oom_kill(1, at_limit=True)  # the kernel raises it before it kills
    sup.event("PROCESS_STATE_EXITED", exited_payload("wëb", 101))
    sup.event("PROCESS_STATE_STARTING", "processname:wëb groupname:wëb from_state:EXITED tries:0")
    code, rest = ended(sup)
    assert (code, rest) == (0, b"")
    crash, oom = notifications(world)
    assert crash["type"] == "crash" and crash["exit"]["code"] == 3 and crash["process"]["name"] == "wëb"
    assert oom["type"] == "oom"
    assert oom["exit"]["signal"] == "SIGKILL" and oom["exit"]["signal_number"] == 9
    assert oom["memory"] == {
        "cgroup_version": 2,
        "cgroup_path": str(world.cgroup_dir),
        "limit_bytes": 67108864,
        "usage_bytes": 25165824,  # the victim's memory is freed
        "peak_bytes": 67108864,
        "oom_kill": 1,
        "oom_kill_rise": 1,
        "problems": [],
        "victim": None,
        "programs": [],  # no TICK came to sample them
    }
    assert "Traceback" not in stderr(world)


def test_stray_output_never_reaches_the_protocol_pipe() -> None:
    code = (
        "import os, subprocess, warnings\n"
        "from navi.cli import take_stdout\n"
        "fd = take_stdout()\n"
        "print('a stray print')\n"
        "warnings.warn('a library warning')\n"
        "subprocess.run(['echo', 'a child'])\n"
        "os.write(fd, b'READY\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert done.stdout == b"READY\n"
    assert b"a stray print" in done.stderr and b"a child" in done.stderr and b"a library warning" in done.stderr


def test_bad_input_is_acknowledged_and_reported_in_one_line(world: FakeWorld) -> None:
    sup = start(world)
    sup.send(b"garbage that is not a header\n")
    die(world, "api", 7, "exit status 2")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))  # still in sync
    sup.write_raw(envelope("PROCESS_STATE_EXITED", exited_payload("api", 8))[:-4])  # EOF mid-event
    code, rest = ended(sup)
    assert code == 0 and rest == OK + READY  # the torn event is acknowledged too
    (crash,) = notifications(world)
    assert crash["exit"]["code"] == 2
    errors = [line for line in stderr(world).splitlines() if ": ERROR: " in line]
    assert len(errors) == 2
    assert "malformed header" in errors[0] and "closed in the middle" in errors[1]
    assert "Traceback" not in stderr(world)


def test_missing_directory_then_created(world: FakeWorld) -> None:
    later = world.root / "later"
    sup = start(world, dict(world.env(), NAVI_NOTIFICATIONS_DIR=str(later)))
    die(world, "api", 7, "exit status 2")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))  # held, counted
    later.mkdir()
    die(world, "api", 8, "exit status 4")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 8))
    assert ended(sup) == (0, b"")
    (n,) = notifications(world, later)
    assert n["exit"]["code"] == 4 and n["count"] == 2 and n["coalesced"]["reason"] == "directory unusable"
    said = [line for line in stderr(world).splitlines() if "No such file or directory" in line]
    # One line for the directory, one for the count that could not be saved meanwhile.
    assert len(said) == 2 and str(later) in said[0]
    assert said[1].startswith("navi: ERROR: cannot save Navi's state") and "a restart of Navi loses" in said[1]
    assert "saved again" in stderr(world)
    assert any("could not save its state" in note for note in n["notes"])
    assert "lost" not in stderr(world)


@pytest.mark.parametrize("log_env", [None, "missing"])
def test_exit_status_unknown_says_why(world: FakeWorld, log_env: Optional[str]) -> None:
    env = {k: v for k, v in world.env().items() if k != "NAVI_SUPERVISORD_LOG"}
    if log_env == "missing":
        env["NAVI_SUPERVISORD_LOG"] = str(world.root / "missing.log")
    sup = start(world, env)
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert ended(sup) == (0, b"")
    (crash,) = notifications(world)
    assert crash["exit"]["code"] is None and crash["exit"]["signal"] is None and crash["exit"]["core_dumped"] is None
    reason = crash["exit"]["unavailable"]
    assert ("cannot read supervisord's log" in reason) if log_env else ("no SUPERVISOR_SERVER_URL" in reason)


def test_unreadable_cgroup_degrades_to_crash_with_evidence(world: FakeWorld) -> None:
    sup = start(world, dict(world.env(), NAVI_PROC_ROOT=str(world.root / "noproc")))
    die(world, "api", 7, "terminated by SIGKILL")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert ended(sup) == (0, b"")
    (crash,) = notifications(world)
    assert crash["type"] == "crash" and crash["memory"] is None and crash["exit"]["signal"] == "SIGKILL"
    assert any("cannot be told from a crash" in note for note in crash["notes"])
    cgroup_lines = [line for line in stderr(world).splitlines() if "OOM kills will be reported as crashes" in line]
    assert len(cgroup_lines) == 1 and "noproc" in cgroup_lines[0]


def test_redelivered_event_gives_no_second_file(world: FakeWorld) -> None:
    die(world, "api", 7, "exit status 2")
    for _ in range(2):  # a new Navi gets the same event again
        sup = start(world, first_serial=41)
        sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
        assert ended(sup) == (0, b"")
    assert len(notifications(world)) == 1
    assert "event 41 (PROCESS_STATE_EXITED) delivered again: the last Navi had handled it already" in stderr(world)


def test_a_kill_seen_on_a_tick_is_left_to_the_death_in_the_log(world: FakeWorld) -> None:
    sup = start(world)
    world.set_oom_kill(1, at_limit=True)
    die(world, "api", 7, "terminated by SIGKILL")  # logged; its event comes after the TICK
    sup.event("TICK_5", "when:1764025200")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert ended(sup) == (0, b"")
    (oom,) = notifications(world)
    assert oom["type"] == "oom" and oom["process"]["name"] == "api"
    assert oom["memory"]["oom_kill"] == 1 and oom["memory"]["oom_kill_rise"] == 0
    assert any("ms before this death was reported" in note for note in oom["notes"])


def test_a_kill_no_death_claims_is_the_containers(world: FakeWorld) -> None:
    sup = start(world)
    # A running program (this test's own process, so that it can be sampled).
    sup.event("PROCESS_STATE_RUNNING", f"processname:web groupname:web from_state:STARTING pid:{os.getpid()}")
    sup.event("TICK_5", "when:1764025200")
    world.set_oom_kill(1, at_limit=True)  # a child of web is killed; web lives on
    sup.event("TICK_5", "when:1764025205")
    assert ended(sup) == (0, b"")
    (oom,) = notifications(world)
    assert oom["type"] == "oom" and oom["count"] == 1 and oom["process"]["name"] is None
    assert oom["Header"]["eventname"] == "TICK_5" and oom["memory"]["oom_kill_rise"] == 1
    (web,) = oom["memory"]["programs"]
    assert (web["name"], web["pid"]) == ("web", os.getpid()) and web["rss_bytes"] > 10 << 20


def test_a_replaced_directory_is_opened_again(world: FakeWorld) -> None:
    sup = start(world)
    die(world, "api", 7, "exit status 2")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    old = world.notifications
    for f in old.iterdir():
        f.unlink()
    old.rmdir()
    old.mkdir()
    die(world, "api", 8, "exit status 4")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 8))
    assert ended(sup) == (0, b"")
    (crash,) = notifications(world)
    assert crash["exit"]["code"] == 4
    assert "lost" not in stderr(world)


def test_a_bad_supervisor_url_is_one_line_not_a_crash_loop(world: FakeWorld) -> None:
    env = {k: v for k, v in world.env().items() if k != "NAVI_SUPERVISORD_LOG"}
    env["NAVI_SUPERVISOR_URL"] = "https://supervisor:9001"
    sup = start(world, env)
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert ended(sup) == (0, b"")
    (crash,) = notifications(world)
    assert "neither unix:// nor http://" in crash["exit"]["unavailable"]
    assert [line for line in stderr(world).splitlines() if "ERROR" in line] == [
        "navi: ERROR: supervisor URL 'https://supervisor:9001' is neither unix:// nor http://; "
        "exit statuses will be null until it can be read"
    ]


def test_the_cgroup_going_away_or_starting_over_degrades_and_says_so(world: FakeWorld) -> None:
    sup = start(world)
    (world.cgroup_dir / "memory.events").unlink()  # vanished
    die(world, "api", 7, "terminated by SIGKILL")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    world.set_oom_kill(5)  # back, perhaps another cgroup: a new baseline, not 5 kills
    sup.event("TICK_5", "when:1764025200")
    world.set_oom_kill(2)  # and again: the counter went backwards
    die(world, "api", 8, "terminated by SIGKILL")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 8))
    assert ended(sup) == (0, b"")
    first, second = notifications(world)
    assert first["type"] == second["type"] == "crash"  # never a guess
    assert any("memory.events" in p for p in first["memory"]["problems"])
    assert any("could not be read" in note for note in first["notes"])
    assert any("went back from 5 to 2" in note for note in second["notes"])
    assert "Traceback" not in stderr(world)


def test_random_bytes_on_stdin_only_ever_get_protocol_tokens(world: FakeWorld) -> None:
    """A long random run through the real process: whatever arrives, Navi
    answers with tokens only, says what was wrong in single lines, and exits
    cleanly at EOF."""
    import random

    rnd = random.Random(2026)
    sup = start(world)
    chunks = [rnd.randbytes(rnd.randint(1, 300)) for _ in range(300)]
    for chunk in chunks:  # each followed by a newline: a header (bad or not) is complete
        sup.write_raw(chunk + b"\n")
    sup.write_raw(envelope("TICK_5", "when:1"))
    code, rest = ended(sup)
    assert code == 0
    assert set(rest.replace(OK + READY, b"")) == set(), rest[:200]
    said = stderr(world)
    assert "Traceback" not in said
    assert all(line.startswith("navi: ") for line in said.splitlines())


def test_held_incidents_survive_a_killed_navi(world: FakeWorld) -> None:
    sup = start(world)
    for pid in range(100, 108):  # a storm: 5 written, 3 held
        die(world, "api", pid, "exit status 2")
        sup.event("PROCESS_STATE_EXITED", exited_payload("api", pid))
    # The fifth also begins a crash loop, said beside it.
    assert [n["type"] for n in notifications(world)] == ["crash"] * 5 + ["crash_loop"]
    assert held_counts(world) == [3]
    sup.process.kill()  # dies with incidents held
    sup.close()
    # The new Navi keeps the last one's rate: no fresh burst, the storm is
    # written when it is over (quiet for 0.2 s here), at a TICK.
    again = start(world, {**world.env(), "NAVI_QUIET": "0.2"}, first_serial=sup.supervisor.serial + 1)
    die(world, "api", 108, "exit status 2")
    again.event("PROCESS_STATE_EXITED", exited_payload("api", 108))
    assert len(notifications(world)) == 6 and held_counts(world) == [4]
    time.sleep(0.3)
    again.event("TICK_5", "when:1764025200")
    assert ended(again) == (0, b"")
    found = notifications(world)
    assert [n["count"] for n in found if n["type"] == "crash"] == [1, 1, 1, 1, 1, 4]
    assert found[-1]["deaths"] == {"total": 9, "recent": 9, "window_seconds": 600, "crash_loop": True}
    assert held_counts(world) == []
    assert "3 incident(s) held by the previous Navi" in stderr(world)


def held_counts(world: FakeWorld) -> list[int]:
    state = json.loads((world.notifications / STATE_FILE).read_text())
    return [r["held"]["count"] for r in state["rates"] if r["held"]]


def test_an_incident_loads_no_module(world: FakeWorld) -> None:
    """All an incident needs is loaded before it: a container at its
    memory limit is the worst moment to import."""
    script = (
        "import sys, json\n"
        "from navi.listener.shell import Shell, Settings\n"
        "from navi.listener.protocol import Event\n"
        "env = json.loads(sys.argv[1])\n"
        "shell = Shell(Settings(env['NAVI_NOTIFICATIONS_DIR'], env['NAVI_CGROUP_ROOT'], env['NAVI_PROC_ROOT'],\n"
        "                       None, env['NAVI_SUPERVISORD_LOG'], 100, 1 << 20))\n"
        "before = set(sys.modules)\n"
        "for serial, pid in ((1, 100), (2, 101)):\n"
        "    if pid == 101:  # the kernel counts the kill before the death\n"
        "        text = open(sys.argv[2], encoding='utf-8').read()\n"
        "        open(sys.argv[2], 'w', encoding='utf-8').write(text.replace('oom_kill 0', 'oom_kill 1'))\n"
        "    payload = f'processname:web groupname:web from_state:RUNNING expected:0 pid:{pid}'\n"
        "    shell.handle(Event({'serial': str(serial), 'eventname': 'PROCESS_STATE_EXITED'}, payload))\n"
        "shell.handle(Event({'serial': '3', 'eventname': 'TICK_5'}, 'when:1'))\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    die(world, "web", 100, "exit status 3")
    die(world, "web", 101, "terminated by SIGKILL")
    events = world.cgroup_dir / "memory.events"
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(world.env()), str(events)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
    assert [n["type"] for n in notifications(world)] == ["crash", "oom"], notifications(world)[1]["notes"]
