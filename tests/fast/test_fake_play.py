"""The fake supervisord at work: real ``navi listen`` through scenarios on
fake cgroup v1 and v2 trees, listeners that break the protocol in each way
supervisord notices, the ``navi fake`` command, and the recorder.
tests/e2e/test_recording.py records a real supervisord and replays it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from navi.fake.play import Outcome, play
from navi.fake.scenario import Log, Memory, Send, Step, Supervisord, generate, parse
from navi.fake.world import FakeWorld
from navi.names import STATE_FILE
from tests.helpers import NAVI, notifications


@pytest.fixture(params=[2])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path / "world", cgroup_version=request.param) as w:
        yield w


def to_navi(world: FakeWorld, scenario: str) -> Outcome:
    outcome = play(parse(scenario, Supervisord(start=time.time())), NAVI, world, stderr=world.root / "navi.stderr")
    assert outcome.violations == () and outcome.warnings == ()
    assert outcome.closed is not None and outcome.closed.exit_code == 0 and not outcome.closed.stopped
    said = (world.root / "navi.stderr").read_text()
    assert "Traceback" not in said and "ERROR" not in said, said
    return outcome


def test_a_crash_with_code_3(world: FakeWorld) -> None:
    outcome = to_navi(world, "web crashes with code 3")
    assert outcome.events == len(outcome.timings_ns) == 5
    (crash,) = notifications(world)
    assert crash["type"] == "crash" and crash["process"] == {"name": "web", "group": "web", "pid": 4200000}
    assert crash["exit"]["code"] == 3 and crash["exit"]["signal"] is None
    assert crash["exit"]["log_line"].endswith(" WARN exited: web (exit status 3; not expected)")
    assert crash["Header"]["serial"] == "2" and crash["Header"]["eventname"] == "PROCESS_STATE_EXITED"


@pytest.mark.parametrize("world", [1, 2], indirect=True)
def test_an_oom_kill_on_cgroup_v1_and_v2(world: FakeWorld) -> None:
    to_navi(world, "worker is OOM-killed")
    (oom,) = notifications(world)
    assert oom["type"] == "oom" and oom["process"]["name"] == "worker" and oom["exit"]["signal"] == "SIGKILL"
    memory = oom["memory"]
    assert (memory["cgroup_version"], memory["cgroup_path"]) == (world.version, str(world.cgroup_dir))
    assert (memory["limit_bytes"], memory["peak_bytes"]) == (world.limit, world.limit)
    assert (memory["oom_kill"], memory["oom_kill_rise"], memory["problems"]) == (1, 1, [])


def test_a_crash_loop_is_written_five_times_then_held_and_counted(world: FakeWorld) -> None:
    outcome = to_navi(world, "api crash-loops 500 times")
    assert outcome.events == 2 + 3 * 500
    written = notifications(world)
    # The fifth death begins a crash loop: said once, beside it.
    assert [(n["type"], n["process"]["name"], n.get("count", 1)) for n in written] == [("crash", "api", 1)] * 5 + [
        ("crash_loop", "api", 1)
    ]
    assert written[-1]["crash_loop"]["phase"] == "began" and written[-1]["deaths"]["recent"] == 5
    rates = json.loads((world.notifications / STATE_FILE).read_text())["rates"]
    assert [r["held"]["count"] for r in rates] == [495]  # all 500 accounted for


def test_memory_pressure_begins_and_ends_with_who_held_it(world: FakeWorld) -> None:
    """A climb the TICKs see; the fast samples in between find nothing
    more in the fake cgroup, and the episode ends after its calm."""
    world_env = {**world.env(), "NAVI_PRESSURE_CALM": "1e-6"}
    outcome = play(
        parse("tick\nmemory 70%\ntick\nmemory 90%\ntick\nmemory 30%\ntick 2 times", Supervisord(start=time.time())),
        NAVI,
        world,
        env=world_env,
        stderr=world.root / "navi.stderr",
    )
    assert outcome.closed is not None and outcome.closed.exit_code == 0
    began, ended = notifications(world)
    assert (began["type"], began["pressure"]["phase"], ended["pressure"]["phase"]) == ("pressure", "began", "ended")
    assert began["pressure"]["episode"] == ended["pressure"]["episode"]
    assert began["pressure"]["working_set_bytes"] == int(0.9 * world.limit)
    assert began["memory"]["limit_bytes"] == world.limit and began["process"]["name"] is None
    assert ended["pressure"]["peak_working_set_bytes"] == int(0.9 * world.limit)


def test_failing_at_start_until_fatal(world: FakeWorld) -> None:
    to_navi(world, "program db startretries 2\ndb fails to start with code 78\n")
    found = notifications(world)
    assert [(n["type"], n["exit"]["code"], n["exit"]["during_startup"]) for n in found] == [("crash", 78, True)] * 3 + [
        ("fatal", 78, True)
    ]


def test_a_childs_oom_kill_is_the_containers(world: FakeWorld) -> None:
    to_navi(world, "web starts\ntick\nweb's child is OOM-killed\ntick\n")
    (oom,) = notifications(world)
    assert oom["type"] == "oom" and oom["process"]["name"] is None and oom["Header"]["eventname"] == "TICK_5"


LISTENER = r"""
import sys, time
mode = sys.argv[1]
out, inp = sys.stdout.buffer, sys.stdin.buffer
def say(data):
    out.write(data)
    out.flush()
if mode == "garbage-first":
    say(b"Starting up...\n")
if mode == "silent":
    time.sleep(60)
while True:
    say(b"READY\n")
    if mode == "stray-print":
        say(b"debug: got here\n")
    line = inp.readline()
    if not line:
        break
    inp.read(int(line.split(b"len:")[1]))  # ASCII payloads: characters are bytes
    if mode == "dies":
        sys.exit(3)
    say({"trailing-newline": b"RESULT 2\nOK\n", "fails": b"RESULT 4\nFAIL", "bad-length": b"RESULT 3\nOK",
         "loose": b"RESULT  2\nOK"}.get(mode, b"RESULT 2\nOK"))
"""


@pytest.mark.parametrize(
    ("mode", "violation"),
    [
        ("stray-print", r"wrote b'debug: got here(\\n)?' (after READY|where its RESULT <length> line should be)"),
        (
            "trailing-newline",
            r"serial 0 \(TICK_5\): wrote b'\\nREADY\\n' after its RESULT: the result must not end "
            r"with a newline; supervisord marks the listener UNKNOWN",
        ),
        ("silent", r"^at start: no READY within 1 s; supervisord would wait"),
        ("garbage-first", r"^at start: wrote b'Starting up\.\.\.\\n(READY\\n)?' where only READY\\n may come"),
        ("fails", r"answered b'FAIL' 3 times; supervisord sends a rejected event again at once, forever"),
        (
            "bad-length",
            r"serial 0 \(TICK_5\): no READY within 1 s \(it wrote b'EADY\\n', not a whole token\) "
            r"after a RESULT of b'OKR': does its length count its body\?",
        ),
        ("dies", r"serial 0 \(TICK_5\): exited with code 3 while holding the event; supervisord sends it again"),
    ],
)
def test_a_listener_that_breaks_the_protocol_is_flagged(tmp_path: Path, mode: str, violation: str) -> None:
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    steps: list[Step] = [Send("TICK_5", "when:5"), Send("TICK_5", "when:10")]
    outcome = play(steps, [sys.executable, str(script), mode], timeout=1.0)
    (said,) = outcome.violations
    assert re.search(violation, said), said
    assert outcome.events == 0 and outcome.closed is None  # no more events after it


def test_what_supervisor_lets_pass_is_a_warning(tmp_path: Path) -> None:
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    outcome = play([Send("TICK_5", "when:5")] * 2, [sys.executable, str(script), "loose"])
    assert outcome.violations == () and outcome.events == 2
    assert [w.split(":")[0] for w in outcome.warnings] == ["event serial 0 (TICK_5)", "event serial 1 (TICK_5)"]
    assert "result length b' 2' is not plain digits (supervisor 4 lets it pass)" in outcome.warnings[0]


def test_a_generated_stream_is_played_to_a_plain_listener(tmp_path: Path) -> None:
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    steps = generate(2000, crashes=200, oom_kills=20)
    outcome = play(steps, [sys.executable, str(script), "ok"])
    assert (outcome.events, len(outcome.timings_ns), outcome.violations) == (2000, 2000, ())
    assert outcome.pid > 0 and outcome.closed is not None and outcome.closed.exit_code == 0
    assert all(ns > 0 for ns in outcome.timings_ns)


def navi_fake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command, with its temporary directory made in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "navi", "fake", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(cwd)},
    )


def test_the_command_plays_words_to_navi_listen(tmp_path: Path) -> None:
    done = navi_fake(
        "play",
        "--dir",
        str(tmp_path / "d"),
        "--cgroup",
        "1",
        "web",
        "crashes",
        "with",
        "code",
        "3,",
        "worker",
        "is",
        "OOM-killed",
        "then",
        "api",
        "crash-loops",
        "8",
        "times",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "# web crashes with code 3" in lines and "# worker is OOM-killed" in lines
    assert any(
        re.match(r"\s+2  PROCESS_STATE_EXITED\s+web\s+from_state:RUNNING expected:0 pid:4200000\s+OK", line)
        for line in lines
    ), done.stdout
    assert any("cgroup v1  oom_kill 1, usage 24.0 MiB of 64.0 MiB, peak 64.0 MiB" in line for line in lines)
    assert "notifications written: 8, in " + str(tmp_path / "d" / "notifications") in lines
    assert lines[-1] == "held, to be written later: 3 incidents (rate limit) of api"
    assert any(re.match(r"  crash  web\s+web crashed: exit status 3 ", line) for line in lines)
    assert any(re.match(r"  oom    worker\s+worker was killed by the kernel's OOM killer", line) for line in lines)
    assert done.stderr == ""


def test_the_command_flags_a_broken_listener_and_bad_words(tmp_path: Path) -> None:
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    done = navi_fake("play", "web", "crashes", "--", sys.executable, str(script), "stray-print", cwd=tmp_path)
    assert done.returncode == 1
    # Whether the stray line comes in the same read as READY or after the
    # event went out is timing, as under supervisord: either breaks it.
    assert re.search(
        r"^navi fake: PROTOCOL VIOLATION: (at start|event serial 0 \(PROCESS_STATE_STARTING\)): "
        r"wrote b'debug: got here",
        done.stdout,
        re.M,
    ), done.stdout
    assert list(tmp_path.iterdir()) == [script]  # the temporary tree is gone
    bad = navi_fake("play", "web", "explodes", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("navi fake: 'web explodes': no verb I know") and bad.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == [script]  # the temporary tree is gone


# ---- the recorder ---------------------------------------------------------------------------


def test_what_is_played_to_the_recorder_is_what_it_records(world: FakeWorld) -> None:
    """Events, log lines and OOM kills, round trip, on the fake world."""
    recording = world.root / "recording.jsonl"
    steps = parse("web crashes with code 3\nworker is OOM-killed\ntick\nevent X wëird:payload\n")
    outcome = play(
        steps,
        [sys.executable, "-m", "navi", "fake", "record", str(recording)],
        world,
        stderr=world.root / "recorder.stderr",
    )
    assert outcome.violations == () and outcome.events == 12
    # The eventlistener loop it shares with navi listen says only that it ended.
    assert (world.root / "recorder.stderr").read_text() == "navi: INFO: stdin closed; exiting\n"
    recorded = parse(recording.read_text(encoding="utf-8"))
    spawn_lines = [s for s in recorded if isinstance(s, Log)][:2]  # supervisord's start, and the recorder's spawn
    assert "supervisord started with pid" in spawn_lines[0].line and "spawned: 'navi' with pid" in spawn_lines[1].line
    assert [s for s in recorded[2:] if not isinstance(s, Send)] == [s for s in steps if isinstance(s, (Log, Memory))]
    sent = [s for s in recorded if isinstance(s, Send)]
    assert [(s.eventname, s.payload) for s in sent] == [(s.eventname, s.payload) for s in steps if isinstance(s, Send)]
    assert all(s.header is not None and f"serial:{i} pool:navi poolserial:{i} " in s.header for i, s in enumerate(sent))
