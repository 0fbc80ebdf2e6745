"""Following directories: files published by the real spool and by the real
listener under real supervisord, with inotify and by polling; many
directories by glob; claiming watchers side by side; the command's signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from navi.consumer.inbox import Found, Problem
from navi.consumer.watch import Notice, Watch
from navi.demo.sandbox import program
from tests.helpers import WAIT, Collector, count, inotify_works, name_of, publish, sample, triggered

if TYPE_CHECKING:
    from tests.helpers import SandboxFactory

MODES = [pytest.param(None, id="inotify"), pytest.param(False, id="polling")]


def watch(patterns: list[str], use_inotify: Any, **kwargs: Any) -> Watch:
    if use_inotify is None and not inotify_works():
        pytest.skip("no inotify here")
    return Watch(patterns, use_inotify=use_inotify, interval=0.1, rescan=0.2, **kwargs)


@pytest.mark.parametrize("use_inotify", MODES)
def test_what_the_spool_publishes_in_many_directories_is_given_once_in_order(
    tmp_path: Path, use_inotify: Any, collectors: list[Collector]
) -> None:
    first = tmp_path / "c1" / "notifications"
    first.mkdir(parents=True)
    publish(first, 2, 1)  # there before the watch starts
    c = Collector(watch([str(tmp_path / "*" / "notifications")], use_inotify))
    collectors.append(c)
    c.wait_for(count(2), "the files already there")
    assert c.notices()[0] == f"watching {first} ({'inotify' if use_inotify is None else 'polling every 0.1 s'})"
    publish(first, 3, 4, 5)
    second = tmp_path / "c2" / "notifications"  # a container started meanwhile
    second.mkdir(parents=True)
    publish(second, 7, 6)
    c.wait_for(count(7), "the new files")
    c.stop()
    by_dir = {d: [f.notification for f in c.found() if f.directory == str(d)] for d in (first, second)}
    assert by_dir[first] == [sample(s) for s in (1, 2, 3, 4, 5)]
    assert sorted(by_dir[second], key=lambda n: n.id) == [sample(6), sample(7)]
    assert len(c.found()) == 7
    assert f"watching {second} ({'inotify' if use_inotify is None else 'polling every 0.1 s'})" in c.notices()
    assert all(f.claimed is None and f.path == str(Path(f.directory) / f.name) for f in c.found())
    assert sorted(os.listdir(first)) == sorted(name_of(s) for s in (1, 2, 3, 4, 5))  # only read


@pytest.mark.parametrize("use_inotify", MODES)
def test_planted_entries_are_said_once_and_a_gone_directory_dropped(
    tmp_path: Path, use_inotify: Any, collectors: list[Collector]
) -> None:
    d = tmp_path / "c1" / "notifications"
    d.mkdir(parents=True)
    (d / "evil.json").symlink_to("/etc/passwd")
    os.mkfifo(d / "fifo.json")
    c = Collector(watch([str(tmp_path / "*" / "notifications")], use_inotify))
    collectors.append(c)
    c.wait_for(lambda items: sum(isinstance(i, Problem) for i in items) >= 2, "the planted entries")
    publish(d, 1)
    c.wait_for(count(1), "the notification")
    shutil.rmtree(tmp_path / "c1")
    c.wait_for(
        lambda items: any(isinstance(i, Notice) and i.text.startswith("stopped watching") for i in items),
        "the directory to be dropped",
    )
    c.stop()
    problems = sorted((p.name, p.reason) for p in c.items if isinstance(p, Problem))
    assert problems == [
        ("evil.json", "a symbolic link (never followed), not a regular file"),
        ("fifo.json", "a FIFO, not a regular file"),
    ]  # said once, however often it looked
    assert [f.notification for f in c.found()] == [sample(1)]


def test_a_publication_in_progress_is_given_when_it_is_whole(tmp_path: Path, collectors: list[Collector]) -> None:
    c = Collector(watch([str(tmp_path)], None))
    collectors.append(c)
    c.wait_for(lambda items: any(isinstance(i, Notice) for i in items), "the watch to start")
    temp = tmp_path / ".x.json.1.1.tmp"
    temp.write_bytes(sample(1).to_json())
    os.link(temp, tmp_path / name_of(1))  # published, its temporary name not yet removed
    temp.unlink()
    c.wait_for(count(1), "the notification")
    c.stop()
    assert [f.notification for f in c.found()] == [sample(1)]


@pytest.mark.parametrize("use_inotify", MODES)
def test_claiming_watchers_side_by_side_give_each_notification_once(
    tmp_path: Path, use_inotify: Any, collectors: list[Collector]
) -> None:
    d = tmp_path / "notifications"
    d.mkdir()
    shared = threading.Condition()
    for _ in range(2):
        collectors.append(Collector(watch([str(d)], use_inotify, claim=True), shared))
    serials = list(range(1, 121))
    writer = threading.Thread(target=publish, args=(d, *serials))
    writer.start()
    writer.join(WAIT)
    collectors[0].wait_for(lambda _: sum(len(c.found()) for c in collectors) >= len(serials), "every claim")
    for c in collectors:
        c.stop()
    given = [f.notification.id for c in collectors for f in c.found()]
    assert sorted(given) == sorted(sample(s).id for s in serials)  # each once, by one of them
    assert os.listdir(d) == [".claimed"]
    assert sorted(os.listdir(d / ".claimed")) == sorted(name_of(s) for s in serials)


@pytest.mark.parametrize("use_inotify", MODES)
def test_with_a_gate_each_directory_gives_one_at_a_time_in_order_the_rest_waiting_there(
    tmp_path: Path, use_inotify: Any
) -> None:
    """navi forward's way: a directory's next notification is claimed only
    once the caller is done with the one before (resume), and the rest stay
    where Navi counts them."""
    first, second = tmp_path / "c1", tmp_path / "c2"
    first.mkdir()
    second.mkdir()
    publish(first, 3, 1, 2)
    publish(second, 5)
    holding: set[str] = set()
    taken: list[Found] = []
    w = watch([str(tmp_path / "c*")], use_inotify, claim=True, claim_dir=".forward", gate=lambda d: d not in holding)

    def look() -> list[Notice]:
        notices = []
        for item in w.look():
            if isinstance(item, Found):
                holding.add(item.directory)
                taken.append(item)
            elif isinstance(item, Notice):
                notices.append(item)
        return notices

    with w:
        list(w.start())
        notices = look()
        assert [(n.started, n.stopped) for n in notices] == [(str(first), None), (str(second), None)]
        assert w.directories == [str(first), str(second)] and w.inbox(str(first)) is not None
        assert [f.notification for f in taken] == [sample(1), sample(5)]
        publish(second, 6)
        w.wait(time.monotonic() + 0.3)
        look()
        assert len(taken) == 2  # both gated
        assert sorted(os.listdir(first)) == [".forward", name_of(2), name_of(3)]
        holding.discard(str(first))
        w.resume(str(first))
        look()
        assert [f.notification for f in taken[2:]] == [sample(2)]
        threading.Timer(0.1, w.wake).start()
        started = time.monotonic()
        w.wait(started + 10 * WAIT)  # cut short by wake()
        assert time.monotonic() - started < WAIT
    assert os.listdir(second / ".forward") == [name_of(5)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_prints_json_lines_and_ends_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    d = tmp_path / "app1" / "notifications"
    d.mkdir(parents=True)
    publish(d, 1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "navi",
            "watch",
            "--json",
            "--ack",
            "--rescan",
            "0.2",
            str(tmp_path / "*" / "notifications"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        publish(d, 2)
        second = json.loads(proc.stdout.readline())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"navi: watching {d} (" in err
    assert "Traceback" not in err
    for line, serial in ((first, 1), (second, 2)):
        assert line == {
            "dir": str(d),
            "file": str(d / name_of(serial)),
            "claimed": str(d / ".claimed" / name_of(serial)),
            "notification": json.loads(sample(serial).to_json()),
        }


# The real listener, under real supervisord.

CRASHES = program("crashes", triggered("crashes", "exit 3")) + program("dies", triggered("dies", "kill -SEGV $$"))


@pytest.mark.parametrize("use_inotify", MODES)
def test_watch_gives_what_the_real_listener_writes(
    sandbox: SandboxFactory, use_inotify: Any, collectors: list[Collector]
) -> None:
    box = sandbox(CRASHES)
    c = Collector(watch([str(box.mnt / "notific*")], use_inotify))
    collectors.append(c)
    c.wait_for(lambda items: any(isinstance(i, Notice) for i in items), "the watch to start")
    box.wait_states({"crashes": "RUNNING", "dies": "RUNNING"})
    box.trigger("crashes")
    c.wait_for(count(1), "the first crash")
    box.trigger("dies")
    c.wait_for(count(2), "the second crash")
    c.stop()
    files = box.check_files()
    found = c.found()
    assert [f.document for f in found] == files
    assert [(f.notification.process.name, f.notification.exit.code, f.notification.exit.signal) for f in found] == [
        ("crashes", 3, None),
        ("dies", None, "SIGSEGV"),
    ]
    assert all(f.directory == str(box.notifications) for f in found)


def test_claiming_what_the_real_listener_writes(sandbox: SandboxFactory, collectors: list[Collector]) -> None:
    box = sandbox(CRASHES)
    c = Collector(watch([str(box.notifications)], None, claim=True))
    collectors.append(c)
    box.wait_states({"crashes": "RUNNING"})
    box.trigger("crashes")
    c.wait_for(count(1), "the crash")
    c.stop()
    [found] = c.found()
    assert found.notification.process.name == "crashes" and found.claimed is not None
    assert json.loads(Path(found.claimed).read_bytes()) == found.document
    assert [p.name for p in box.notifications.iterdir() if not p.name.startswith(".")] == []
    # Navi is untroubled by the claim directory beside its files.
    assert box.status().get("navi") == "RUNNING"
    errors = [
        line
        for line in box.log("navi.log").splitlines()
        if "ERROR" in line and not line.endswith("OOM kills will be reported as crashes")
    ]
    assert errors == []


def test_watch_serves_its_counts_as_prometheus_metrics(tmp_path: Path) -> None:
    first, second = tmp_path / "c1", tmp_path / "c2"
    first.mkdir()
    second.mkdir()
    publish(first, 1, 2)
    publish(second, 3)
    os.mkfifo(second / "planted.json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "navi", "watch", "--json", "--ack", "--metrics", "127.0.0.1:0", str(tmp_path / "c*")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stderr.readline().split(" at ", 1)[1].strip()
        assert sorted(json.loads(proc.stdout.readline())["notification"]["id"] for _ in range(3)) == [
            sample(s).id for s in (1, 2, 3)
        ]
        said = ""
        while "quarantined" not in said:  # the FIFO, after the notifications
            said = proc.stderr.readline()
            assert said, "stderr ended"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            text = response.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("navi_notifications_total", ("crash",))] == 3
    assert samples[("navi_notifications_total", ("oom",))] == 0
    assert samples[("navi_problems_total", ())] == 1  # the FIFO, quarantined
    assert samples[("navi_directories_watched", ())] == 2
    assert not any(name.startswith(("navi_deliveries", "navi_retries")) for name, _ in samples)


def test_a_notification_that_cannot_be_printed_is_put_back(tmp_path: Path) -> None:
    """The log shipper reading the pipe died: the claimed notification being
    printed goes back into the directory, for the next watcher."""
    publish(tmp_path, 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "navi", "watch", "--json", "--ack", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["file"] == str(tmp_path / name_of(1))
        proc.stdout.close()
        publish(tmp_path, 2)
        err = proc.stderr.read()
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert f"navi: stdout was closed; put {tmp_path / name_of(2)} back" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == [".claimed", name_of(2)]
    assert os.listdir(tmp_path / ".claimed") == [name_of(1)]
