"""End to end, under real supervisord: a crash storm, a full directory and a
full disk.  Navi keeps the event pipe moving and loses no incident."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from navi.demo.sandbox import program
from navi.notification import DEATHS
from tests.helpers import triggered

if TYPE_CHECKING:
    from tests.helpers import SandboxFactory


def unexpected_exits(log: str, name: str) -> int:
    return log.count(f"WARN exited: {name} (")


def test_a_crash_storm_is_coalesced_and_every_incident_counted(sandbox: SandboxFactory) -> None:
    # Run past startsecs (0) every time: supervisord restarts it at once, forever.
    # NAVI_QUIET: the storm is over after 1 s of quiet instead of 10 s.
    box = sandbox(program("storm", 'sh -c "exit 3"', startsecs=0, autorestart="true"), env={"NAVI_QUIET": "1"})
    box.wait_for(lambda: unexpected_exits(box.log("supervisord.log"), "storm") >= 60, 30, "60 crashes")
    box.stop_program("storm")
    incidents = unexpected_exits(box.log("supervisord.log"), "storm")

    # Every incident ends up in a count: the burst one by one, the rest folded
    # into a notification written once the storm is over (quiet 1 s, then a TICK_5).
    def counted() -> int:
        return sum(n["count"] for n in box.notifications_list() if n["type"] in DEATHS)

    try:
        box.wait_for(lambda: counted() == incidents, 30, f"counts adding up to {incidents}")
    except TimeoutError:
        raise AssertionError(
            f"{[n['count'] for n in box.notifications_list()]} != {incidents}\n{box.log('navi.log')[-1500:]}"
            f"\n{box.log('supervisord.log')[-1500:]}"
        ) from None
    files = box.check_files()
    # It is a crash loop from its fifth death until it is stopped: said once each.
    loops = [n["crash_loop"]["phase"] for n in files if n["type"] == "crash_loop"]
    assert loops == ["began", "ended"]
    found = [n for n in files if n["type"] == "crash"]
    assert len(found) <= 5 + 2  # the burst, perhaps one refill, and the end of the storm
    assert [n["count"] for n in found[:5]] == [1] * 5
    last = found[-1]
    assert last["count"] > 1 and last["coalesced"]["reason"] == "rate limit"
    assert last["coalesced"]["first"] < last["coalesced"]["last"] == last["time"]
    assert f"({last['count']} times since" in last["summary"]
    assert unexpected_exits(box.log("supervisord.log"), "storm") == incidents  # it was stopped
    box.check_healthy()


def test_a_full_directory_holds_notifications_until_it_is_read(sandbox: SandboxFactory) -> None:
    box = sandbox(
        "".join(program(name, triggered(name, "exit 3")) for name in ("a", "b", "c")),
        env={"NAVI_MAX_FILES": "2"},
    )
    box.wait_states({"a": "RUNNING", "b": "RUNNING", "c": "RUNNING"})
    for name in ("a", "b", "c"):
        box.trigger(name)
        box.wait_states({name: "EXITED"})
    box.wait_for(lambda: "holds 2 notifications" in box.log("navi.log"), 20, "Navi to hold the third back")
    first_two = box.check_files()
    assert [n["process"]["name"] for n in first_two] == ["a", "b"]
    # The platform takes one: the held one is written at the next TICK_5.
    next(p for p in box.notification_files() if not p.name.startswith(".")).unlink()
    box.wait_for(lambda: "c" in [n["process"]["name"] for n in box.notifications_list()], 20, "c's notification")
    assert [(n["process"]["name"], n["count"]) for n in box.check_files()] == [("b", 1), ("c", 1)]
    box.check_healthy(expect_errors=True)


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem, where root may mount one; unmounted after."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "navi-test", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_holds_notifications_until_space_returns(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    with tiny_tmpfs(scratch_dir / "notifications", "64k") as spool:
        filler = spool / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # fill it to the last byte
            while True:
                os.write(fd, b"x" * 512)
        os.close(fd)
        box = sandbox(
            program("a", triggered("a", "exit 3")) + program("b", triggered("b", "exit 4")),
            env={"NAVI_NOTIFICATIONS_DIR": str(spool)},
        )
        try:
            box.wait_states({"a": "RUNNING", "b": "RUNNING"})
            box.trigger("a")
            # a's own failure to be written (the state's is said at start already): then b comes after it
            written = "disk or quota full; incidents are held"
            box.wait_for(lambda: written in box.log("navi.log"), 20, "Navi to meet the full disk")
            box.trigger("b")
            box.wait_states({"a": "EXITED", "b": "EXITED"})
            assert sorted(os.listdir(spool)) == ["filler"]  # nothing partial, no temp file
            filler.unlink()
            box.wait_for(lambda: len(list(spool.glob("[!.]*.json"))) == 2, 20, "both notifications once there is room")
            found = box.check_files(spool)
            assert [(n["process"]["name"], n["exit"]["code"], n["count"]) for n in found] == [("a", 3, 1), ("b", 4, 1)]
            assert "writing notifications again" in box.log("navi.log")
            box.check_healthy(expect_errors=True)
        finally:
            box.close()  # Navi holds the directory open: close before unmounting


def test_a_hostile_neighbour_cannot_redirect_or_block_navi(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    """The application (same uid) knows the next names: it plants links to a
    file outside and a FIFO there.  Navi writes beside them and follows none."""
    from navi.listener.procs import identity
    from navi.names import notification_name as file_name

    precious = scratch_dir / "precious"
    precious.write_bytes(b"the application's own data")
    box = sandbox(program("app", triggered("app", "exit 3")))
    assert box.process is not None
    started = identity(box.process.pid).started
    assert started is not None
    for serial in range(1, 40):
        name = box.notifications / file_name(started, str(serial))
        if serial % 2:
            name.symlink_to(precious)
        else:
            os.mkfifo(name)
    box.trigger("app")
    box.wait_for(lambda: list(box.notifications.glob("*.1.json")), 20, "the crash, written beside the planted name")
    (written,) = box.notifications.glob("*.1.json")
    assert json.loads(written.read_text())["exit"]["code"] == 3
    assert precious.read_bytes() == b"the application's own data"
    assert box.status()["navi"] == "RUNNING"
    assert "Traceback" not in box.log("navi.log")


DIE_BEFORE_ACK = """
import os, sys
import navi.listener.spool
publish = navi.listener.spool.Spool.publish
def publish_then_die(self, *args, **kwargs):
    written = publish(self, *args, **kwargs)
    if written and not os.path.exists(sys.argv[1]):  # only the first Navi, only once
        open(sys.argv[1], "w").close()
        os._exit(70)  # the worst moment: written, not acknowledged
    return written
navi.listener.spool.Spool.publish = publish_then_die
from navi.cli import main
sys.exit(main(["listen"]))
"""


def test_killed_between_writing_and_acknowledging_gives_no_second_file(
    sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    wrapper = scratch_dir / "die_before_ack.py"
    wrapper.write_text(DIE_BEFORE_ACK)
    died = scratch_dir / "died"
    import sys

    box = sandbox(program("app", triggered("app", "exit 3")), navi_command=f"{sys.executable} {wrapper} {died}")
    box.trigger("app")
    # supervisord sends the unacknowledged event again, to the next Navi.
    box.wait_for(lambda: "already written (event delivered again)" in box.log("navi.log"), 30, "the redelivery")
    assert died.exists()
    (n,) = box.check_files()
    assert n["process"]["name"] == "app" and n["exit"]["code"] == 3
    assert "exited: navi (exit status 70" in box.log("supervisord.log")
