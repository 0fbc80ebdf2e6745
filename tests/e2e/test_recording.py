"""A recording of a real supervisord (``navi fake record`` as one of its event
listeners), replayed by the fake supervisord to ``navi listen``."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from navi.demo.sandbox import program
from navi.fake.play import play
from navi.fake.scenario import Log, Send, Step, parse
from navi.fake.world import FakeWorld
from tests.helpers import NAVI, SandboxFactory, notifications

MODEL = """
program exits-3 autorestart false
program killed autorestart false
program fails-at-start autorestart false startretries 1
program sleeper autorestart false
exits-3 crashes with code 3
killed is killed
fails-at-start fails to start
sleeper is stopped
"""
PROGRAMS = ("exits-3", "killed", "fails-at-start", "sleeper")


def per_program(steps: list[Step]) -> dict[str, tuple[list[str], list[str]]]:
    """Each program's events, and its main log lines, in order, pids and times
    left out.  (How the two interleave is timing: supervisord logs at once and
    dispatches the queued events on later passes of its loop.)"""
    seen: dict[str, tuple[list[str], list[str]]] = {name: ([], []) for name in PROGRAMS}
    for step in steps:
        if isinstance(step, Send):
            name = dict(t.split(":", 1) for t in step.payload.split()).get("processname", "")
            text, kind = f"{step.eventname} {step.payload}", 0
        elif isinstance(step, Log):
            m = re.match(r"\S+ \S+ (\w+) (spawned: '|exited: |gave up: |stopped: )([^ ']+)", step.line)
            if m is None:
                continue  # the time a program became RUNNING depends on supervisord's loop
            name, text, kind = m.group(3), step.line.split(" ", 2)[2], 1
        else:
            continue
        if name in seen:
            seen[name][kind].append(re.sub(r"pid:? ?\d+", "pid N", text))
    return seen


def test_a_recording_of_real_supervisord_replays_to_the_same_notifications(
    sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    recording = scratch_dir / "recording.jsonl"
    box = sandbox(
        program("exits-3", 'sh -c "sleep 1.5; exit 3"')
        + program("killed", "sh -c 'sleep 1.5; kill -KILL $$'")
        + program("fails-at-start", 'sh -c "exit 1"', startretries=1)
        + program("sleeper", "sleep 3600")
        + f"[eventlistener:recorder]\ncommand={sys.executable} -m navi fake record {recording}\n"
        "events=PROCESS_STATE,TICK_5\nbuffer_size=1024\nstdout_logfile=NONE\nstderr_logfile={mnt}/log/recorder.log\n"
    )
    real = box.wait_notifications(5)
    box.stop_program("sleeper")
    box.wait_for(
        lambda: "processname:sleeper groupname:sleeper from_state:STOPPING" in recording.read_text(),
        20,
        "the recording of sleeper's stop",
    )
    box.check_healthy()  # the recorder never broke the protocol either: no UNKNOWN in the log
    assert "ERROR" not in box.log("recorder.log"), box.log("recorder.log")
    recorded = parse(recording.read_text())

    # The scenario words give what real supervisord did, program by program.
    assert per_program(recorded) == per_program(parse(MODEL))

    # And the recording, replayed to navi listen, gives the notifications Navi wrote under supervisord.
    with FakeWorld(scratch_dir / "world") as world:
        outcome = play(recorded, NAVI, world, stderr=scratch_dir / "replay.stderr")
        assert outcome.violations == ()
        replayed = notifications(world)

    def key(n: dict[str, Any]) -> tuple[Any, ...]:
        return (
            n["Header"]["serial"],
            n["type"],
            n["process"]["name"],
            n["process"]["pid"],
            n["exit"]["code"],
            n["exit"]["signal"],
            n["exit"]["during_startup"],
            n["exit"]["log_line"],
        )

    assert [key(n) for n in replayed] == [key(n) for n in real]
    assert sorted((n["type"], n["process"]["name"]) for n in real) == [
        ("crash", "exits-3"),
        ("crash", "fails-at-start"),
        ("crash", "fails-at-start"),
        ("crash", "killed"),
        ("fatal", "fails-at-start"),
    ]
