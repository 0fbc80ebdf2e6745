"""``navi listen`` as a process, driven as supervisord drives it, on file trees
that reproduce the kernel's cgroup v2 formats and supervisord's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from navi.protocol import OK, READY
from tests.test_protocol import envelope

LOG_TIME = "2026-11-24 23:00:00,123"


class FakeSupervisord:
    """Speaks the protocol to a listener subprocess, strictly: every byte on
    its stdout must be the token the protocol expects at that moment."""

    def __init__(self, tmp: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.stderr_path = tmp / "navi.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "navi", "listen", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env={**{k: v for k, v in os.environ.items() if not k.startswith(("NAVI_", "SUPERVISOR_"))}, **env},
        )
        self.serial = 0
        self.expect(READY)

    def expect(self, token: bytes) -> None:
        assert self.proc.stdout is not None
        got = self.proc.stdout.read(len(token))
        assert got == token, f"protocol violation: wanted {token!r}, got {got!r}; stderr: {self.stderr()}"

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        self.expect(OK)
        self.expect(READY)

    def event(self, name: str, payload: str) -> None:
        self.serial += 1
        self.send(envelope(name, payload, self.serial))

    def close(self) -> tuple[int, bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        rest = self.proc.stdout.read()
        code = self.proc.wait(timeout=10)
        self._stderr.close()
        return code, rest

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def v2_tree(tmp: Path, oom_kill: int = 0) -> dict[str, str]:
    """A cgroup v2 container (cgroup namespace) as the kernel shows it."""
    proc = tmp / "proc" / "self"
    proc.mkdir(parents=True)
    # Who the listener's parent (this test, as supervisord) is.
    for real in (f"{os.getpid()}/stat", "stat", "sys/kernel/random/boot_id"):
        (tmp / "proc" / real).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "proc" / real).write_bytes(Path("/proc", real).read_bytes())
    (proc / "cgroup").write_text("0::/\n")
    (proc / "mountinfo").write_text(
        "1203 1118 0:379 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
        "1210 1203 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate\n"
    )
    cg = tmp / "cg"
    cg.mkdir()
    (cg / "cgroup.controllers").write_text("cpu io memory pids\n")
    (cg / "memory.max").write_text("67108864\n")
    (cg / "memory.current").write_text("66912256\n")
    (cg / "memory.peak").write_text("67108864\n")
    write_events(tmp, oom_kill)
    return {"NAVI_PROC_ROOT": str(tmp / "proc"), "NAVI_CGROUP_ROOT": str(cg)}


def write_events(tmp: Path, oom_kill: int) -> None:
    (tmp / "cg" / "memory.events").write_text(
        f"low 0\nhigh 0\nmax 41\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n"
    )


def log_line(level: str, message: str) -> str:
    return f"{LOG_TIME} {level} {message}\n"


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "notifications").mkdir()
    log = tmp_path / "supervisord.log"
    log.write_text(log_line("INFO", "supervisord started with pid 1"))
    env = v2_tree(tmp_path)
    env.update(NAVI_NOTIFICATIONS_DIR=str(tmp_path / "notifications"), NAVI_SUPERVISORD_LOG=str(log))
    return {"tmp": tmp_path, "log": log, "env": env}


def exited_payload(name: str, pid: int, expected: int = 0) -> str:
    return f"processname:{name} groupname:{name} from_state:RUNNING expected:{expected} pid:{pid}"


def die(log: Path, name: str, pid: int, how: str) -> None:
    with log.open("a") as f:
        f.write(log_line("INFO", f"spawned: '{name}' with pid {pid}"))
        f.write(log_line("WARN", f"exited: {name} ({how}; not expected)"))


def notifications(tmp: Path) -> list[dict[str, Any]]:
    entries = sorted((tmp / "notifications").iterdir())
    assert [p.name for p in entries if p.name.startswith(".") and p.name != ".navi-held.json"] == []  # no temp
    files = [p for p in entries if not p.name.startswith(".")]
    assert all(p.name.endswith(".json") for p in files)
    return [json.loads(p.read_text()) for p in files]


def test_crash_then_oom_on_cgroup_v2(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, world["env"])
    die(log, "wëb", 100, "exit status 3")
    sup.event("PROCESS_STATE_EXITED", exited_payload("wëb", 100))
    die(log, "wëb", 101, "terminated by SIGKILL")
    write_events(tmp, oom_kill=1)  # the kernel raises it before it kills
    sup.event("PROCESS_STATE_EXITED", exited_payload("wëb", 101))
    sup.event("PROCESS_STATE_STARTING", "processname:wëb groupname:wëb from_state:EXITED tries:0")
    code, rest = sup.close()
    assert (code, rest) == (0, b"")
    crash, oom = notifications(tmp)
    assert crash["type"] == "crash" and crash["exit"]["code"] == 3 and crash["process"]["name"] == "wëb"
    assert oom["type"] == "oom"
    assert oom["exit"]["signal"] == "SIGKILL" and oom["exit"]["signal_number"] == 9
    assert oom["memory"] == {
        "cgroup_version": 2, "cgroup_path": str(tmp / "cg"), "limit_bytes": 67108864,
        "usage_bytes": 66912256, "peak_bytes": 67108864, "oom_kill": 1, "oom_kill_rise": 1, "problems": [],
        "victim": None, "programs": [],  # no TICK came to sample them
    }
    assert "Traceback" not in sup.stderr()


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


def test_bad_input_is_acknowledged_and_reported_in_one_line(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, world["env"])
    sup.send(b"garbage that is not a header\n")
    die(log, "api", 7, "exit status 2")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))  # still in sync
    assert sup.proc.stdin is not None
    sup.proc.stdin.write(envelope("PROCESS_STATE_EXITED", exited_payload("api", 8))[:-4])  # EOF mid-event
    code, rest = sup.close()
    assert code == 0 and rest == OK + READY  # the torn event is acknowledged too
    (crash,) = notifications(tmp)
    assert crash["exit"]["code"] == 2
    errors = [line for line in sup.stderr().splitlines() if ": ERROR: " in line]
    assert len(errors) == 2
    assert "malformed header" in errors[0] and "closed in the middle" in errors[1]
    assert "Traceback" not in sup.stderr()


def test_missing_directory_then_created(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    env = dict(world["env"], NAVI_NOTIFICATIONS_DIR=str(tmp / "later"))
    sup = FakeSupervisord(tmp, env)
    die(log, "api", 7, "exit status 2")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))  # held, counted
    (tmp / "later").mkdir()
    die(log, "api", 8, "exit status 4")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 8))
    assert sup.close() == (0, b"")
    files = list((tmp / "later").iterdir())
    assert len(files) == 1
    n = json.loads(files[0].read_text())
    assert n["exit"]["code"] == 4 and n["count"] == 2 and n["coalesced"]["reason"] == "directory unusable"
    startup = [line for line in sup.stderr().splitlines() if "No such file or directory" in line]
    assert len(startup) == 1 and str(tmp / "later") in startup[0]
    assert "lost" not in sup.stderr()


@pytest.mark.parametrize("log_env", [None, "missing"])
def test_exit_status_unknown_says_why(world: dict[str, Any], log_env: Optional[str]) -> None:
    tmp = world["tmp"]
    env = {k: v for k, v in world["env"].items() if k != "NAVI_SUPERVISORD_LOG"}
    if log_env == "missing":
        env["NAVI_SUPERVISORD_LOG"] = str(tmp / "missing.log")
    sup = FakeSupervisord(tmp, env)
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert sup.close() == (0, b"")
    (crash,) = notifications(tmp)
    assert crash["exit"]["code"] is None and crash["exit"]["signal"] is None and crash["exit"]["core_dumped"] is None
    reason = crash["exit"]["unavailable"]
    assert ("cannot read supervisord's log" in reason) if log_env else ("no SUPERVISOR_SERVER_URL" in reason)


def test_unreadable_cgroup_degrades_to_crash_with_evidence(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    env = dict(world["env"], NAVI_PROC_ROOT=str(tmp / "noproc"))
    sup = FakeSupervisord(tmp, env)
    die(log, "api", 7, "terminated by SIGKILL")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert sup.close() == (0, b"")
    (crash,) = notifications(tmp)
    assert crash["type"] == "crash" and crash["memory"] is None and crash["exit"]["signal"] == "SIGKILL"
    assert any("cannot be told from a crash" in note for note in crash["notes"])
    cgroup_lines = [line for line in sup.stderr().splitlines() if "OOM kills will be reported as crashes" in line]
    assert len(cgroup_lines) == 1 and "noproc" in cgroup_lines[0]


def test_redelivered_event_gives_no_second_file(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    die(log, "api", 7, "exit status 2")
    for _ in range(2):  # a new Navi gets the same event again
        sup = FakeSupervisord(tmp, world["env"])
        sup.send(envelope("PROCESS_STATE_EXITED", exited_payload("api", 7), serial=41))
        assert sup.close() == (0, b"")
    assert len(notifications(tmp)) == 1
    assert "already written" in sup.stderr()


def test_a_kill_seen_on_a_tick_is_left_to_the_death_in_the_log(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, world["env"])
    write_events(tmp, oom_kill=1)
    die(log, "api", 7, "terminated by SIGKILL")  # logged; its event comes after the TICK
    sup.event("TICK_5", "when:1764025200")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert sup.close() == (0, b"")
    (oom,) = notifications(tmp)
    assert oom["type"] == "oom" and oom["process"]["name"] == "api"
    assert oom["memory"]["oom_kill"] == 1 and oom["memory"]["oom_kill_rise"] == 0
    assert any("counted while reporting an earlier death" in note for note in oom["notes"])


def test_a_kill_no_death_claims_is_the_containers(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    sup = FakeSupervisord(tmp, world["env"])
    # A running program (this test's own process, so that it can be sampled).
    sup.event("PROCESS_STATE_RUNNING", f"processname:web groupname:web from_state:STARTING pid:{os.getpid()}")
    sup.event("TICK_5", "when:1764025200")
    write_events(tmp, oom_kill=1)  # a child of web is killed; web lives on
    sup.event("TICK_5", "when:1764025205")
    assert sup.close() == (0, b"")
    (oom,) = notifications(tmp)
    assert oom["type"] == "oom" and oom["count"] == 1 and oom["process"]["name"] is None
    assert oom["Header"]["eventname"] == "TICK_5" and oom["memory"]["oom_kill_rise"] == 1
    (web,) = oom["memory"]["programs"]
    assert (web["name"], web["pid"]) == ("web", os.getpid()) and web["rss_bytes"] > 10 << 20


def test_a_replaced_directory_is_opened_again(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, world["env"])
    die(log, "api", 7, "exit status 2")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    old = tmp / "notifications"
    for f in old.iterdir():
        f.unlink()
    old.rmdir()
    old.mkdir()
    die(log, "api", 8, "exit status 4")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 8))
    assert sup.close() == (0, b"")
    (crash,) = notifications(tmp)
    assert crash["exit"]["code"] == 4
    assert "lost" not in sup.stderr()


def test_a_bad_supervisor_url_is_one_line_not_a_crash_loop(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    env = {k: v for k, v in world["env"].items() if k != "NAVI_SUPERVISORD_LOG"}
    env["NAVI_SUPERVISOR_URL"] = "https://supervisor:9001"
    sup = FakeSupervisord(tmp, env)
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    assert sup.close() == (0, b"")
    (crash,) = notifications(tmp)
    assert "neither unix:// nor http://" in crash["exit"]["unavailable"]
    assert [line for line in sup.stderr().splitlines() if "ERROR" in line] == [
        "navi: ERROR: supervisor URL 'https://supervisor:9001' is neither unix:// nor http://; "
        "exit statuses will be null until it can be read"
    ]


def test_the_cgroup_going_away_or_starting_over_degrades_and_says_so(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, world["env"])
    (tmp / "cg" / "memory.events").unlink()  # vanished
    die(log, "api", 7, "terminated by SIGKILL")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
    write_events(tmp, oom_kill=5)  # back, perhaps another cgroup: a new baseline, not 5 kills
    sup.event("TICK_5", "when:1764025200")
    write_events(tmp, oom_kill=2)  # and again: the counter went backwards
    die(log, "api", 8, "terminated by SIGKILL")
    sup.event("PROCESS_STATE_EXITED", exited_payload("api", 8))
    assert sup.close() == (0, b"")
    first, second = notifications(tmp)
    assert first["type"] == second["type"] == "crash"  # never a guess
    assert any("memory.events" in p for p in first["memory"]["problems"])
    assert any("could not be read" in note for note in first["notes"])
    assert any("went back from 5 to 2" in note for note in second["notes"])
    assert "Traceback" not in sup.stderr()


def test_random_bytes_on_stdin_only_ever_get_protocol_tokens(world: dict[str, Any]) -> None:
    """A long random run through the real process: whatever arrives, Navi
    answers with tokens only, says what was wrong in single lines, and exits
    cleanly at EOF."""
    import random

    rnd = random.Random(2026)
    sup = FakeSupervisord(world["tmp"], world["env"])
    assert sup.proc.stdin is not None and sup.proc.stdout is not None
    chunks = [rnd.randbytes(rnd.randint(1, 300)) for _ in range(300)]
    for chunk in chunks:  # each followed by a newline: a header (bad or not) is complete
        sup.proc.stdin.write(chunk + b"\n")
    sup.proc.stdin.write(envelope("TICK_5", "when:1"))
    code, rest = sup.close()
    assert code == 0
    assert set(rest.replace(OK + READY, b"")) == set(), rest[:200]
    stderr = sup.stderr()
    assert "Traceback" not in stderr
    assert all(line.startswith("navi: ") for line in stderr.splitlines())


def test_held_incidents_survive_a_killed_navi(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, world["env"])
    for pid in range(100, 108):  # a storm: 5 written, 3 held
        die(log, "api", pid, "exit status 2")
        sup.event("PROCESS_STATE_EXITED", exited_payload("api", pid))
    assert len(notifications(tmp)) == 5
    state = json.loads((tmp / "notifications" / ".navi-held.json").read_text())
    assert [h["count"] for h in state["held"]] == [3]
    sup.proc.kill()  # dies with incidents held
    sup.close()
    again = FakeSupervisord(tmp, world["env"])
    again.serial = sup.serial
    again.event("TICK_5", "when:1764025200")
    assert again.close() == (0, b"")
    found = notifications(tmp)
    assert [n["count"] for n in found] == [1, 1, 1, 1, 1, 3]
    assert not (tmp / "notifications" / ".navi-held.json").exists()
    assert "3 incident(s) held by the previous Navi" in again.stderr()
