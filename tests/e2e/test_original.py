"""The original Navi's format, written beside the new one on request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pytest

from navi.fake.world import FakeWorld
from navi.listener.spool import Spool
from navi.names import next_seconds, original_name
from tests.helpers import die, ended, exited_payload, notifications, start, stderr

ORIGINAL_KEYS = ["Header", "Metadata", "Payload", "ReceivedAt"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path / "world") as w:
        (w.root / "original").mkdir()
        yield w


def with_original(world: FakeWorld, directory: Optional[Path] = None) -> dict[str, str]:
    return dict(world.env(), NAVI_ORIGINAL_DIR=str(directory or world.root / "original"))


def originals(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.iterdir())}


def test_each_incident_also_in_the_original_shape(world: FakeWorld) -> None:
    sup = start(world, with_original(world))
    for pid, name in enumerate(["web", "worker", "api"], start=10):  # within one second: names must not collide
        die(world, name, pid, "exit status 3")
        sup.event("PROCESS_STATE_EXITED", exited_payload(name, pid))
    sup.event("PROCESS_STATE_STARTING", "processname:web groupname:web from_state:EXITED tries:0")  # no incident
    assert ended(sup) == (0, b"")
    written = originals(world.root / "original")
    assert len(written) == 3 and len(notifications(world)) == 3
    for name, event in written.items():
        assert list(event) == ORIGINAL_KEYS
        assert event["Header"]["eventname"] == "PROCESS_STATE_EXITED" and event["Payload"] == ""
        received = datetime.fromisoformat(event["ReceivedAt"].replace("Z", "+00:00"))
        assert 0 <= int(name[: -len(".json")]) - int(received.timestamp()) < 3  # a later second if taken
    assert sorted(e["Metadata"]["processname"] for e in written.values()) == ["api", "web", "worker"]
    assert {e["Metadata"]["pid"] for e in written.values()} == {"10", "11", "12"}


def test_a_redelivered_event_gives_no_second_original(world: FakeWorld) -> None:
    die(world, "api", 7, "exit status 2")
    for _ in range(2):  # a new Navi gets the same event again
        sup = start(world, with_original(world), first_serial=41)
        sup.event("PROCESS_STATE_EXITED", exited_payload("api", 7))
        assert ended(sup) == (0, b"")
    assert len(originals(world.root / "original")) == 1 and len(notifications(world)) == 1


def test_a_missing_original_dir_is_one_line_and_the_new_format_still_written(world: FakeWorld) -> None:
    sup = start(world, with_original(world, world.root / "none"))
    for pid in (1, 2):
        die(world, "web", pid, "exit status 1")
        sup.event("PROCESS_STATE_EXITED", exited_payload("web", pid))
    assert ended(sup) == (0, b"")
    assert len(notifications(world)) == 2
    assert stderr(world).count("original-format file") == 1


def test_original_names_take_the_next_free_second(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), alternatives=next_seconds)
    try:
        name = original_name(datetime.fromtimestamp(1764031768.9).astimezone())
        assert name == "1764031768.json"
        assert [spool.publish(name, b"{}\n", None) for _ in range(3)] == [
            "1764031768.json",
            "1764031769.json",
            "1764031770.json",
        ]
    finally:
        spool.close()
