"""``navi forward`` against a real receiver process (tests/receiver.py) that
parses every request with the CloudEvents SDK and checks the event: real
notification files, real HTTP, real signals.

- 50 directories, files arriving while the receiver answers 500 for 10 s,
  then 429 with Retry-After, then 200: every notification arrives once, in
  order per directory; the metrics, scraped and parsed with
  prometheus_client's own parser, agree with what the receiver got;
- a receiver that hangs: the timeouts work, and nothing piles up (RSS);
- a forwarder SIGKILLed 5 times while delivering: nothing lost, the
  duplicates carry the same id;
- files a hostile application planted are never sent;
- both content modes, and a token from a headers file that shows neither
  in ps nor in the log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.importorskip("cloudevents.core", reason="the cloudevents SDK 2 needs Python 3.10 or newer")

from navi import names
from navi.listener.spool import Spool
from tests.helpers import WAIT, name_of, publish, sample
from tests.receiver import Running


def until(ready: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``ready()`` until it is true; fail, saying ``what``, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = ready()
        if result:
            return result
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)


class Forwarding:
    """``navi forward`` as a process, with its metrics on a free port."""

    def __init__(self, where: Path, url: str, globs: list[str], *options: str) -> None:
        self.stderr = where / f"forward-{time.monotonic_ns()}.stderr"
        with open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "navi", "forward", "--to", url, "--metrics", "127.0.0.1:0", *options, *globs],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self._metrics: Optional[str] = None

    def said(self) -> str:
        return self.stderr.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample served, parsed by prometheus_client."""
        if self._metrics is None:
            line = until(lambda: [x for x in self.said().splitlines() if x.startswith("navi: metrics at ")], "metrics")
            self._metrics = line[0].split(" at ", 1)[1]
        with urllib.request.urlopen(self._metrics, timeout=10) as response:
            text = response.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(WAIT)


@pytest.fixture
def forwarders() -> Iterator[list[Forwarding]]:
    """Forwarders to append to; any still running is killed at teardown."""
    made: list[Forwarding] = []
    yield made
    for f in made:
        if f.process.poll() is None:
            f.kill()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Running]:
    with Running(tmp_path / "received.jsonl") as r:
        yield r


def containers(root: Path, n: int) -> list[Path]:
    dirs = [root / f"c{i:02d}" / "notifications" for i in range(n)]
    for d in dirs:
        d.mkdir(parents=True)
    return dirs


def accepted(receiver: Running) -> list[dict[str, Any]]:
    return [r for r in receiver.records() if r["status"] is not None and 200 <= r["status"] < 300]


def serial(record: dict[str, Any]) -> int:
    return int(record["id"].rsplit(":", 1)[1])


def delivered_files(d: Path) -> list[str]:
    return sorted(os.listdir(d / names.FORWARD_DIR / names.DELIVERED))


def in_flight(d: Path) -> list[str]:
    forward = d / names.FORWARD_DIR
    return [n for n in os.listdir(forward) if n.endswith(".json")] if forward.exists() else []


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_fifty_directories_through_an_outage_of_500s_then_429s_every_notification_once_in_order(
    tmp_path: Path, receiver: Running, forwarders: list[Forwarding]
) -> None:
    dirs = containers(tmp_path, 50)
    serials = {d: list(range(1 + 10 * i, 11 + 10 * i)) for i, d in enumerate(dirs)}  # 10 per directory
    for d in dirs:
        publish(d, *serials[d][:2])  # there before the forwarder
    receiver.answer(status=500)
    outage = time.monotonic()
    f = Forwarding(
        tmp_path, receiver.url, [str(tmp_path / "c*" / "notifications")], "--max-backoff", "1", "--rescan", "0.5"
    )
    forwarders.append(f)

    def arriving(start: int, stop: int) -> None:  # more files, while the receiver is down
        for k in range(start, stop):
            for d in dirs:
                publish(d, serials[d][k])
            time.sleep(0.5)

    writer = threading.Thread(target=arriving, args=(2, 8))
    writer.start()
    until(lambda: time.monotonic() - outage >= 10, "10 s of 500s", 20)
    writer.join(WAIT)
    assert all(r["status"] == 500 for r in receiver.records())
    receiver.answer(status=429, retry_after=1)
    first_429 = until(lambda: [r for r in receiver.records() if r["status"] == 429], "a 429")[0]["t"]
    time.sleep(3)
    receiver.answer(status=200, retry_after=None)
    arriving(8, 10)
    expected = {sample(s).id for ss in serials.values() for s in ss}
    until(lambda: len(accepted(receiver)) >= len(expected), "every notification accepted")
    until(lambda: metric(f.metrics(), "navi_deliveries_total", outcome="delivered") >= len(expected), "the count")
    samples = f.metrics()
    assert f.stop() == 0

    records = receiver.records()
    ok = accepted(receiver)
    assert sorted(r["id"] for r in ok) == sorted(expected)  # each once
    assert all(r["valid"] for r in records) and {r["mode"] for r in records} == {"structured"}
    assert {r["status"] for r in records} == {500, 429, 200}
    for d in dirs:
        mine = [serial(r) for r in ok if r["source"] == str(d)]
        assert mine == serials[d], f"order in {d}"
        assert delivered_files(d) == sorted(name_of(s) for s in serials[d])
        assert in_flight(d) == [] and [n for n in os.listdir(d) if n.endswith(".json")] == []
    # Retry-After: 1 was honoured: after the first 429, no more than the
    # requests already in flight (8 at most) came within the second.
    assert len([r for r in records if first_429 < r["t"] < first_429 + 0.9]) <= 8
    failed = [r for r in records if r["status"] != 200]
    assert metric(samples, "navi_deliveries_total", outcome="delivered") == len(ok)
    assert metric(samples, "navi_deliveries_total", outcome="rejected") == 0
    assert metric(samples, "navi_retries_total", kind="5xx") == sum(r["status"] == 500 for r in failed)
    assert metric(samples, "navi_retries_total", kind="429") == sum(r["status"] == 429 for r in failed)
    assert sum(v for (name, _), v in samples.items() if name == "navi_retries_total") == len(failed)
    assert metric(samples, "navi_notifications_total", type="crash") == len(expected)
    assert metric(samples, "navi_directories_watched") == 50
    assert metric(samples, "navi_oldest_undelivered_seconds") == 0
    said = f.said()
    assert "Traceback" not in said and said.count("retrying") >= 1 and "delivering again" in said


def test_a_receiver_that_hangs_times_out_and_nothing_piles_up(
    tmp_path: Path, receiver: Running, forwarders: list[Forwarding]
) -> None:
    dirs = containers(tmp_path, 30)
    for i, d in enumerate(dirs):
        publish(d, *range(1 + 20 * i, 21 + 20 * i))  # 600 waiting
    receiver.answer(hang=True)
    f = Forwarding(
        tmp_path, receiver.url, [str(d) for d in dirs], "--timeout", "0.3", "--max-backoff", "0.5", "--concurrency", "8"
    )
    forwarders.append(f)
    process = psutil.Process(f.process.pid)
    until(lambda: len(receiver.records()) >= 40, "the first timeouts")
    before = process.memory_info().rss
    seen = len(receiver.records())
    until(lambda: len(receiver.records()) >= seen + 150, "150 more timed-out requests")
    after = process.memory_info().rss
    held = [in_flight(d) for d in dirs]
    waiting = sum(len([n for n in os.listdir(d) if n.endswith(".json")]) for d in dirs)
    samples = f.metrics()
    assert after - before < 4 << 20, f"RSS grew by {(after - before) / 2**20:.1f} MiB over 150 timeouts"
    assert all(len(h) <= 1 for h in held) and waiting >= 600 - 30  # one taken per directory, the rest wait there
    assert metric(samples, "navi_retries_total", kind="timeout") >= 150
    assert metric(samples, "navi_oldest_undelivered_seconds") > 0
    receiver.answer(hang=False)
    until(lambda: len({r["id"] for r in accepted(receiver)}) == 600, "everything, once the receiver answers")
    assert f.stop() == 0
    assert "no answer in 0.3 s" in f.said()


def test_a_forwarder_killed_five_times_while_delivering_loses_nothing(
    tmp_path: Path, receiver: Running, forwarders: list[Forwarding]
) -> None:
    dirs = containers(tmp_path, 20)
    for i, d in enumerate(dirs):
        publish(d, *range(1 + 10 * i, 11 + 10 * i))  # 200
    receiver.answer(delay=0.05)  # so that requests are in flight when it dies
    expected = {sample(s).id for s in range(1, 201)}
    globs = [str(tmp_path / "c*" / "notifications"), "--binary", "--concurrency", "4"]
    left_in_flight = 0
    for kill in range(5):
        f = Forwarding(tmp_path, receiver.url, globs[:1], *globs[1:])
        forwarders.append(f)
        until(lambda: len({r["id"] for r in accepted(receiver)}) >= 30 * (kill + 1), "30 more delivered")  # noqa: B023
        f.kill()
        left_in_flight += sum(len(in_flight(d)) for d in dirs)
    last = Forwarding(tmp_path, receiver.url, globs[:1], *globs[1:])
    forwarders.append(last)
    until(lambda: {r["id"] for r in accepted(receiver)} == expected, "every notification")
    until(lambda: all(len(delivered_files(d)) == 10 and not in_flight(d) for d in dirs), "every file moved on")
    assert last.stop() == 0
    ok = accepted(receiver)
    assert left_in_flight > 0  # some kill did land mid-request, with a file taken and not delivered
    assert all(r["valid"] and r["mode"] == "binary" for r in receiver.records())
    duplicates = len(ok) - len(expected)
    assert duplicates <= 5 * 4  # at most what was in flight at each kill
    for d in dirs:
        mine = [serial(r) for r in ok if r["source"] == str(d)]
        firsts = sorted(set(mine), key=mine.index)
        assert firsts == sorted(firsts), f"order in {d}: {mine}"
        # A duplicate is a notification sent again after a kill: the same id
        # (the receiver checked it is the file's), never one skipped ahead.
        assert all(s in mine[:i] or s == max(mine[: i + 1]) for i, s in enumerate(mine))


def test_files_a_hostile_application_planted_are_never_sent(
    tmp_path: Path, receiver: Running, forwarders: list[Forwarding]
) -> None:
    d = containers(tmp_path, 1)[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    publish(outside, 901, 902)  # valid notifications, not in the directory
    (d / "linked.json").symlink_to(outside / name_of(901))
    os.link(outside / name_of(902), d / "hard.json")
    os.mkfifo(d / "fifo.json")
    (d / "forged.json").write_text('{"schema": 1, "id": "forged", "type": "crash"}')
    (d / "dir.json").mkdir()
    publish(d, 1, 2)
    f = Forwarding(tmp_path, receiver.url, [str(d)])
    forwarders.append(f)
    quarantine = d / names.FORWARD_DIR / names.QUARANTINE
    until(lambda: len(accepted(receiver)) == 2, "the two notifications")
    # A second link is a publication in progress for 10 s, then refused.
    until(
        lambda: quarantine.exists() and len([n for n in os.listdir(quarantine) if n.endswith(".json")]) == 5,
        "the planted entries quarantined",
    )
    assert f.stop() == 0
    assert [r["id"] for r in receiver.records()] == [sample(1).id, sample(2).id]
    assert sorted(n for n in os.listdir(quarantine) if n.endswith(".json")) == sorted(
        ["linked.json", "hard.json", "fifo.json", "forged.json", "dir.json"]
    )
    said = f.said()
    assert "quarantined" in said and "symbolic link" in said and "hard links" in said and "Traceback" not in said


@pytest.mark.parametrize("binary", [False, True], ids=["structured", "binary"])
def test_both_modes_with_a_token_from_a_file_that_shows_in_neither_ps_nor_the_log(
    tmp_path: Path, binary: bool, forwarders: list[Forwarding]
) -> None:
    token = "Bearer t0ken-a8f3e2d1"
    d = containers(tmp_path, 1)[0]
    spool = Spool(str(d))
    try:
        spool.publish(name_of(1), sample(1, "wéb worker\u2028").to_json(), sample(1).id)  # percent-encoded in binary
    finally:
        spool.close()
    publish(d, 2)
    good = tmp_path / "headers"
    good.write_text(f"# for the broker\nAuthorization: {token}\nX-Tenant: blue\n")
    wrong = tmp_path / "wrong-headers"
    wrong.write_text("Authorization: Bearer w1d3ly-wr0ng\n")
    mode = ["--binary"] if binary else []
    with Running(tmp_path / "received.jsonl", "--expect-header", f"Authorization: {token}") as r:
        f = Forwarding(tmp_path, r.url, [str(d)], "--headers", str(good), "--metrics-by-program", *mode)
        forwarders.append(f)
        until(lambda: len(accepted(r)) == 2, "both notifications")
        cmdline = " ".join(psutil.Process(f.process.pid).cmdline())
        by_program = f.metrics()
        assert f.stop() == 0
        publish(d, 3)
        # A wrong token is no fault of the notification's: it waits, retried.
        liar = Forwarding(tmp_path, r.url, [str(d)], "--headers", str(wrong), *mode)
        forwarders.append(liar)
        until(lambda: "refuses the credentials" in liar.said(), "the refused credentials said")
        refused = liar.metrics()
        assert liar.stop() == 0
        again = Forwarding(tmp_path, r.url, [str(d)], "--headers", str(good), *mode)
        forwarders.append(again)
        until(lambda: len(accepted(r)) == 3, "the third, once the token is right")
        assert again.stop() == 0
        records = r.records()
    ok = [x for x in records if x["status"] == 200]
    assert [x["subject"] for x in ok] == ["wéb worker\u2028", "web", "web"]
    assert {x["mode"] for x in ok} == {"binary" if binary else "structured"} and all(x["valid"] for x in records)
    assert {x["status"] for x in records[2:-1]} == {401} and records[-1]["status"] == 200
    assert metric(by_program, "navi_notifications_total", type="crash", program="wéb worker\u2028") == 1
    assert metric(by_program, "navi_notifications_total", type="crash", program="web") == 1
    assert metric(refused, "navi_retries_total", kind="refused") >= 1
    assert not (d / names.FORWARD_DIR / names.REJECTED).exists() or not any(
        (d / names.FORWARD_DIR / names.REJECTED).iterdir()
    )
    for text in (cmdline, f.said(), liar.said(), again.said()):
        assert "t0ken" not in text and "w1d3ly" not in text
    assert "Authorization '***'" in liar.said()


def test_options_a_person_gets_wrong_get_one_line(tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    headers.write_text("Authorization Bearer s3cr3t\n")
    for options, said in (
        (["--to", "ftp://h/"], "navi: --to 'ftp://h/': give an http:// or https:// URL\n"),
        (["--to", "http://u:s3cr3t@h/"], "would show in `ps`"),
        (["--to", "http://h/", "--headers", str(headers)], f"navi: {headers}, line 1: not a 'Name: value' header\n"),
        (["--to", "http://h/", "--headers", str(tmp_path / "none")], "No such file or directory"),
        (["--to", "http://h/", "--source", "{host}"], "is neither {dir} nor {parts[N]}"),
        (["--to", "http://h/", "--metrics", "nowhere"], "give HOST:PORT"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "navi", "forward", *options, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 2 and said in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert "s3cr3t" not in done.stderr and done.stdout == ""
