"""The original Navi's format, written beside the new one on request."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from navi.spool import Spool, next_seconds, original_name
from tests.test_listener import FakeSupervisord, die, exited_payload, log_line, notifications, v2_tree
from tests.test_protocol import envelope

ORIGINAL_KEYS = ["Header", "Metadata", "Payload", "ReceivedAt"]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    """A fake supervisord's world with a directory for the original format."""
    (tmp_path / "notifications").mkdir()
    (tmp_path / "original").mkdir()
    log = tmp_path / "supervisord.log"
    log.write_text(log_line("INFO", "supervisord started with pid 1"))
    env = {**v2_tree(tmp_path), "NAVI_NOTIFICATIONS_DIR": str(tmp_path / "notifications"),
           "NAVI_SUPERVISORD_LOG": str(log), "NAVI_ORIGINAL_DIR": str(tmp_path / "original")}
    return {"tmp": tmp_path, "log": log, "env": env, "original": tmp_path / "original"}


def originals(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.iterdir())}


def test_each_incident_also_in_the_original_shape(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    old = world["original"]
    sup = FakeSupervisord(tmp, world["env"])
    for pid, name in enumerate(["web", "worker", "api"], start=10):  # within one second: names must not collide
        die(log, name, pid, "exit status 3")
        sup.event("PROCESS_STATE_EXITED", exited_payload(name, pid))
    sup.event("PROCESS_STATE_STARTING", "processname:web groupname:web from_state:EXITED tries:0")  # no incident
    assert sup.close() == (0, b"")
    written = originals(old)
    assert len(written) == 3 and len(notifications(tmp)) == 3
    for name, event in written.items():
        assert list(event) == ORIGINAL_KEYS
        assert event["Header"]["eventname"] == "PROCESS_STATE_EXITED" and event["Payload"] == ""
        received = datetime.fromisoformat(event["ReceivedAt"].replace("Z", "+00:00"))
        assert 0 <= int(name[: -len(".json")]) - int(received.timestamp()) < 3  # a later second if taken
    assert sorted(e["Metadata"]["processname"] for e in written.values()) == ["api", "web", "worker"]
    assert {e["Metadata"]["pid"] for e in written.values()} == {"10", "11", "12"}


def test_a_redelivered_event_gives_no_second_original(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    old = world["original"]
    die(log, "api", 7, "exit status 2")
    for _ in range(2):
        sup = FakeSupervisord(tmp, world["env"])
        sup.send(envelope("PROCESS_STATE_EXITED", exited_payload("api", 7), serial=41))
        assert sup.close() == (0, b"")
    assert len(originals(old)) == 1 and len(notifications(tmp)) == 1


def test_a_missing_original_dir_is_one_line_and_the_new_format_still_written(world: dict[str, Any]) -> None:
    tmp, log = world["tmp"], world["log"]
    sup = FakeSupervisord(tmp, {**world["env"], "NAVI_ORIGINAL_DIR": str(tmp / "none")})
    for pid in (1, 2):
        die(log, "web", pid, "exit status 1")
        sup.event("PROCESS_STATE_EXITED", exited_payload("web", pid))
    assert sup.close() == (0, b"")
    assert len(notifications(tmp)) == 2
    assert sup.stderr().count("original-format file") == 1


def test_original_names_take_the_next_free_second(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), alternatives=next_seconds)
    try:
        name = original_name(datetime.fromtimestamp(1764031768.9).astimezone())
        assert name == "1764031768.json"
        assert [spool.publish(name, b"{}\n", None) for _ in range(3)] == [
            "1764031768.json", "1764031769.json", "1764031770.json"]
    finally:
        spool.close()
