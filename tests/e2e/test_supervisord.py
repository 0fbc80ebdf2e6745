"""End to end: real supervisord, from the shipped configuration, with Navi as
its event listener, and programs that crash in every way that matters."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from navi.demo.sandbox import program
from tests.helpers import has_memory_cgroup, triggered

if TYPE_CHECKING:
    from tests.helpers import E2ESandbox, SandboxFactory


# Every sandbox has one: its crash, triggered last, proves that every event
# before it was handled (supervisord delivers events to Navi in order, and
# Navi handles one at a time).
MARKER = program("marker", triggered("marker", "exit 99"))


def drain(box: E2ESandbox, settled: dict[str, str]) -> list[dict[str, Any]]:
    """Wait for the programs in ``settled`` to reach their states (so that
    their events are queued), crash the marker, wait for its notification,
    and return the notifications written before it (the marker's must be the
    last one)."""
    box.wait_states(settled)
    box.trigger("marker")
    box.wait_for(lambda: any(n["process"]["name"] == "marker" for n in box.notifications_list()), 20, "marker")
    found = box.check_files()
    assert found[-1]["process"]["name"] == "marker", found
    assert found[-1]["exit"]["code"] == 99
    assert [n for n in found if n["process"]["name"] == "marker"] == [found[-1]]
    return found[:-1]


def check_exit_event(box: E2ESandbox, n: dict[str, Any], name: str, pid: int) -> None:
    """The fields an EXITED notification must carry for ``name`` at ``pid``
    (original Navi consumers key on the event's header and payload)."""
    assert n["schema"] == 1
    assert n["process"] == {"name": name, "group": name, "pid": pid}
    assert n["exit"]["during_startup"] is False
    assert n["exit"]["unavailable"] is None
    assert n["Header"]["eventname"] == "PROCESS_STATE_EXITED"
    assert n["Metadata"]["processname"] == name
    assert n["Metadata"]["groupname"] == name
    assert n["Metadata"]["expected"] == "0"
    assert n["Metadata"]["from_state"] == "RUNNING"
    assert n["Metadata"]["pid"] == str(pid)
    if has_memory_cgroup():
        assert n["notes"] == []
        assert n["memory"] is not None
        assert n["memory"]["oom_kill_rise"] == 0
    assert box.process is not None
    assert n["source"]["supervisord_pid"] == box.process.pid


def test_exit_code_after_startsecs(sandbox: SandboxFactory) -> None:
    box = sandbox(program("three", triggered("three", "exit 3")) + MARKER)
    box.wait_states({"three": "RUNNING", "marker": "RUNNING"})
    pid = box.pid("three")
    assert pid > 0
    assert box.spawned_pids("three") == [pid]
    box.trigger("three")

    [n] = drain(box, {"three": "EXITED"})
    assert n["type"] == "crash"
    check_exit_event(box, n, "three", pid)
    assert n["exit"]["code"] == 3
    assert n["exit"]["signal"] is None
    assert n["exit"]["signal_number"] is None
    assert n["exit"]["core_dumped"] is False
    assert n["exit"]["log_line"].endswith("WARN exited: three (exit status 3; not expected)")
    assert n["summary"] == "three crashed: exit status 3"
    box.check_healthy()


def test_sigsegv(sandbox: SandboxFactory) -> None:
    box = sandbox(program("segv", triggered("segv", "ulimit -c 0; kill -SEGV $$")) + MARKER)
    box.wait_states({"segv": "RUNNING", "marker": "RUNNING"})
    pid = box.pid("segv")
    box.trigger("segv")

    [n] = drain(box, {"segv": "EXITED"})
    assert n["type"] == "crash"
    check_exit_event(box, n, "segv", pid)
    assert n["exit"]["signal"] == "SIGSEGV"
    assert n["exit"]["signal_number"] == 11
    assert n["exit"]["code"] is None
    assert n["exit"]["core_dumped"] is False
    assert n["exit"]["log_line"].endswith("WARN exited: segv (terminated by SIGSEGV; not expected)")
    assert n["summary"] == "segv crashed: killed by SIGSEGV"
    box.check_healthy()


def core_pattern() -> str:
    try:
        return Path("/proc/sys/kernel/core_pattern").read_text().strip()
    except OSError:
        return ""


def test_sigsegv_with_core_dump(sandbox: SandboxFactory) -> None:
    pattern = core_pattern()
    if not pattern or pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write a core file into the working directory")
    box = sandbox(
        program("dumper", triggered("dumper", "ulimit -c unlimited; kill -SEGV $$"), directory="{mnt}/home") + MARKER
    )
    box.wait_states({"dumper": "RUNNING", "marker": "RUNNING"})
    pid = box.pid("dumper")
    box.trigger("dumper")

    [n] = drain(box, {"dumper": "EXITED"})
    cores = [p.name for p in (box.mnt / "home").iterdir() if p.name.startswith("core")]
    if not cores:
        pytest.skip("the kernel wrote no core file here (RLIMIT_CORE capped?)")
    assert n["type"] == "crash"
    check_exit_event(box, n, "dumper", pid)
    assert n["exit"]["signal"] == "SIGSEGV"
    assert n["exit"]["signal_number"] == 11
    assert n["exit"]["code"] is None
    assert n["exit"]["core_dumped"] is True
    assert n["exit"]["log_line"].endswith("WARN exited: dumper (terminated by SIGSEGV (core dumped); not expected)")
    assert n["summary"] == "dumper crashed: killed by SIGSEGV (core dumped)"
    box.check_healthy()


def test_kill_9_from_outside_is_a_crash_not_oom(sandbox: SandboxFactory) -> None:
    box = sandbox(program("victim", "sleep 3600") + MARKER)
    box.wait_states({"victim": "RUNNING", "marker": "RUNNING"})
    pid = box.wait_watched("victim")  # its death is read at once: its last words too
    os.kill(pid, signal.SIGKILL)

    [n] = drain(box, {"victim": "EXITED"})
    assert n["type"] == "crash"
    check_exit_event(box, n, "victim", pid)
    assert n["exit"]["signal"] == "SIGKILL"
    assert n["exit"]["signal_number"] == 9
    assert n["exit"]["code"] is None
    assert n["exit"]["core_dumped"] is False
    assert n["summary"] == "victim crashed: killed by SIGKILL"
    if has_memory_cgroup():
        assert n["memory"]["oom_kill_rise"] == 0
    box.check_healthy()


def test_autorestarted_crashes_each_get_their_own_exit(sandbox: SandboxFactory) -> None:
    # supervisord respawns at once: the exit status must come from the line
    # of this very exit (by pid), not from whatever state it is in now.
    box = sandbox(program("flappy", "sh -c 'sleep 1.2; exit 3'", autorestart="true") + MARKER)
    box.wait_notifications(2)
    box.stop_program("flappy")

    found = drain(box, {"flappy": "STOPPED"})
    exits = box.log("supervisord.log").count("WARN exited: flappy (exit status 3; not expected)")
    assert len(found) == exits >= 2
    spawned = box.spawned_pids("flappy")
    assert len(spawned) == exits + 1  # the last one was stopped, not crashed
    for n, pid in zip(found, spawned):
        assert n["type"] == "crash"
        check_exit_event(box, n, "flappy", pid)
        assert n["exit"]["code"] == 3
    box.check_healthy()


def test_expected_exit_and_stops_are_not_notified(sandbox: SandboxFactory) -> None:
    box = sandbox(
        program("clean", triggered("clean", "exit 0"), exitcodes=0)
        + program("stoppable", "sleep 3600")
        + program("killstop", "sleep 3600", stopsignal="KILL")
        # Ignores SIGTERM: supervisord has to SIGKILL it after stopwaitsecs.
        + program("stubborn", "sh -c 'trap \"\" TERM; while :; do sleep 0.1; done'", stopwaitsecs=1)
        + MARKER
    )
    box.wait_states({name: "RUNNING" for name in ("clean", "stoppable", "killstop", "stubborn", "marker")})
    box.trigger("clean")
    box.wait_states({"clean": "EXITED"})
    for name in ("stoppable", "killstop", "stubborn"):
        assert f"{name}: stopped" in box.ctl("stop", name)
    assert box.wait_states({"stoppable": "STOPPED", "killstop": "STOPPED", "stubborn": "STOPPED"})

    main_log = box.log("supervisord.log")
    assert "INFO exited: clean (exit status 0; expected)" in main_log
    assert "stopped: stoppable (terminated by SIGTERM)" in main_log
    assert "stopped: killstop (terminated by SIGKILL)" in main_log
    assert re.search(r"WARN killing 'stubborn' \(\d+\) with SIGKILL", main_log), main_log
    assert "stopped: stubborn (terminated by SIGKILL)" in main_log

    assert drain(box, {}) == []
    box.check_healthy()


def test_fatal_after_startretries(sandbox: SandboxFactory) -> None:
    box = sandbox(program("failer", 'sh -c "exit 1"', startretries=2) + MARKER)
    box.wait_states({"failer": "FATAL", "marker": "RUNNING"}, timeout=30)

    found = drain(box, {})
    assert [n["type"] for n in found] == ["crash", "crash", "crash", "fatal"]
    serials = [int(n["Header"]["serial"]) for n in found]
    assert serials == sorted(serials), "file names sort in event order"
    pids = box.spawned_pids("failer")
    assert len(pids) == 3
    for n, pid, tries in zip(found, pids, ("1", "2", "3")):
        assert n["Header"]["eventname"] == "PROCESS_STATE_BACKOFF"
        assert n["Metadata"] == {
            "processname": "failer",
            "groupname": "failer",
            "from_state": "STARTING",
            "tries": tries,
        }
        assert n["process"] == {"name": "failer", "group": "failer", "pid": pid}
        assert n["exit"]["code"] == 1
        assert n["exit"]["signal"] is None
        assert n["exit"]["during_startup"] is True
        assert n["exit"]["log_line"].endswith("WARN exited: failer (exit status 1; not expected)")
        assert n["summary"] == "failer crashed during startup: exit status 1"
    fatal = found[3]
    assert fatal["Header"]["eventname"] == "PROCESS_STATE_FATAL"
    assert fatal["Metadata"] == {"processname": "failer", "groupname": "failer", "from_state": "BACKOFF"}
    assert fatal["process"] == {"name": "failer", "group": "failer", "pid": None}
    assert fatal["exit"]["code"] == 1
    assert fatal["exit"]["signal"] is None
    assert fatal["exit"]["during_startup"] is True
    assert fatal["summary"] == "supervisord gave up restarting failer (FATAL); its last exit: exit status 1"
    box.check_healthy()


def test_non_ascii_program_name_keeps_the_stream_in_sync(sandbox: SandboxFactory) -> None:
    # supervisor 4 counts len in characters: "ë" is one character but two
    # bytes; a byte-counting reader would desync and stall on what follows.
    box = sandbox(program("wëb", triggered("web", "exit 3")) + program("after", triggered("after", "exit 4")) + MARKER)
    box.wait_states({"wëb": "RUNNING", "after": "RUNNING", "marker": "RUNNING"})
    web_pid, after_pid = box.pid("wëb"), box.pid("after")
    box.trigger("web")
    box.wait_states({"wëb": "EXITED"})  # its event is queued before the next one
    box.trigger("after")

    web, after = drain(box, {"wëb": "EXITED", "after": "EXITED"})
    assert web["type"] == "crash"
    check_exit_event(box, web, "wëb", web_pid)
    assert web["exit"]["code"] == 3
    assert web["summary"] == "wëb crashed: exit status 3"
    assert after["type"] == "crash"
    check_exit_event(box, after, "after", after_pid)
    assert after["exit"]["code"] == 4
    box.check_healthy()


def test_burst_of_crashes_gives_well_formed_files(sandbox: SandboxFactory) -> None:
    box = sandbox(
        program("burst", triggered("burst", "exit 5"), numprocs=6, process_name="%(program_name)s_%(process_num)d")
        + MARKER
    )
    names = [f"burst_{i}" for i in range(6)]
    box.wait_states({f"burst:{name}": "RUNNING" for name in names} | {"marker": "RUNNING"})
    pids = {name: box.pid(f"burst:{name}") for name in names}
    box.trigger("burst")

    found = drain(box, {f"burst:{name}": "EXITED" for name in names})
    assert sorted(n["process"]["name"] for n in found) == names
    for n in found:
        assert n["type"] == "crash"
        assert n["process"]["group"] == "burst"
        assert n["process"]["pid"] == pids[n["process"]["name"]]
        assert n["exit"]["code"] == 5
    files = box.notification_files()
    assert len(files) == 7
    assert [p.name for p in files] == sorted(p.name for p in files)
    serials = [int(n["Header"]["serial"]) for n in box.notifications_list()]
    assert serials == sorted(serials) and len(set(serials)) == 7
    assert len({n["id"] for n in box.notifications_list()}) == 7
    for p in files:
        assert "burst" not in p.name and "marker" not in p.name
    box.check_healthy()


def test_missing_notifications_dir(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    later = scratch_dir / "notifications"
    box = sandbox(
        program("first", triggered("first", "exit 3")) + program("second", triggered("second", "exit 5")),
        env={"NAVI_NOTIFICATIONS_DIR": str(later)},
    )
    box.wait_states({"first": "RUNNING", "second": "RUNNING"})

    def about_dir() -> list[str]:
        return [line for line in box.log("navi.log").splitlines() if str(later) in line and "ERROR" in line]

    box.wait_for(about_dir, 10, "Navi's complaint about the directory")
    # One line for the directory, one for the state it cannot save there at start.
    complaint, saving = box.wait_for(lambda: about_dir() if len(about_dir()) == 2 else None, 10, "two lines")
    assert "No such file or directory" in complaint
    assert "cannot save Navi's state" in saving

    box.trigger("first")
    box.wait_states({"first": "EXITED"})
    assert "incidents are held and counted" in complaint

    later.mkdir()
    box.trigger("second")
    box.wait_states({"second": "EXITED"})
    # The second is written at once; the first at the next TICK_5.
    box.wait_for(lambda: len(list(later.glob("[!.]*.json"))) == 2, 20, "both crashes' notifications")
    found = box.check_files(later)
    assert [(n["process"]["name"], n["exit"]["code"], n["count"]) for n in found] == [("first", 3, 1), ("second", 5, 1)]
    assert "writing notifications again" in box.log("navi.log")
    # The same problem is logged once, not for every event; and once that the
    # count of the first could not be saved meanwhile.
    assert len(about_dir()) == 2, about_dir()
    assert "until it can, a restart of Navi loses what it holds" in saving
    assert "Navi's state is saved again" in box.log("navi.log")
    box.check_healthy(expect_errors=True)


def test_log_tail_starting_inside_a_character(sandbox: SandboxFactory) -> None:
    """supervisord cannot decode a readLog tail that starts inside a
    multi-byte character (it answers HTTP 500): Navi starts a byte later."""
    from navi.listener.mainlog import RpcLog

    box = sandbox(program("日本語", "sleep 3600"))
    box.wait_states({"日本語": "RUNNING"})
    data = (box.mnt / "log" / "supervisord.log").read_bytes()
    inside = data.rindex("日".encode()) + 1  # the second byte of a 3-byte character
    tail = RpcLog(f"unix://{box.socket}").tail(len(data) - inside)
    after = box.log("supervisord.log")
    # The first try did fail in supervisord (it logs the error, which is
    # why the tail is of the grown log), and the retry read it whole.
    assert "has no attribute 'utf-8'" in after[len(data.decode()) :]
    assert tail and after.endswith(tail)
