"""Reading and claiming real directories that a hostile application has
been at: links, FIFOs, sockets, huge files, garbage, files swapped while
being read; two consumers racing for the same files; the commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from navi import cli
from navi.consumer.inbox import ConsumerError, Found, Inbox, Pending, Problem
from tests.helpers import name_of, publish, sample

PASSWD = Path("/etc/passwd")


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Path]:
    """A notifications directory with two real notifications and everything
    the application could plant beside them."""
    d = tmp_path / "notifications"
    d.mkdir()
    publish(d, 3, 1)
    (d / "passwd.json").symlink_to(PASSWD)
    os.mkfifo(d / "fifo.json")
    (d / "dir.json").mkdir()
    (d / "dir.json" / "inside.json").write_bytes(sample(9).to_json())
    with open(d / "huge.json", "wb") as f:
        f.truncate(50 << 20)  # 50 MB (sparse)
    (d / "garbage.json").write_bytes(b"{not json")
    (d / "forged.json").write_bytes(json.dumps({"schema": 1, "type": "crash"}).encode())
    (d / ".x.json.12.1.tmp").write_bytes(sample(5).to_json()[:40])  # a publication in progress
    (d / "README").write_text("not a notification name")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "socket.json"))
    try:
        yield d
    finally:
        sock.close()


def within(seconds: float, work: Any) -> Any:
    """Run ``work`` in a thread; fail (rather than hang) if it blocks."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return out[0]


def listing(d: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_ino, p.lstat().st_mode) for p in d.iterdir()}


EXPECTED_PROBLEMS = {
    "dir.json": "a directory, not a regular file",
    "fifo.json": "a FIFO, not a regular file",
    "forged.json": "not a Navi notification: id: Field required",
    "garbage.json": "not JSON",
    "huge.json": f"{50 << 20} bytes, more than any notification",
    "passwd.json": "a symbolic link (never followed), not a regular file",
    "socket.json": "a socket, not a regular file",
}


def test_reading_gives_the_notifications_in_order_and_names_every_planted_entry(hostile: Path) -> None:
    before = listing(hostile)
    with Inbox(str(hostile)) as inbox:
        items = within(30, lambda: list(inbox.scan()))
    found = [i for i in items if isinstance(i, Found)]
    assert [f.name for f in found] == [name_of(1), name_of(3)]
    assert [f.notification for f in found] == [sample(1), sample(3)]
    problems = {i.name: i.reason for i in items if isinstance(i, Problem)}
    assert set(problems) == set(EXPECTED_PROBLEMS)
    for name, reason in EXPECTED_PROBLEMS.items():
        assert problems[name].startswith(reason), problems[name]
    assert all(i.quarantined is None for i in items if isinstance(i, Problem))
    assert listing(hostile) == before  # reading changed nothing
    assert PASSWD.read_bytes().decode() not in json.dumps([f.document for f in found])


def test_claiming_takes_the_notifications_and_quarantines_the_rest(hostile: Path) -> None:
    passwd = PASSWD.read_bytes()
    with Inbox(str(hostile)) as inbox:
        items = within(30, lambda: list(inbox.claim_all()))
    claimed = hostile / ".claimed"
    quarantine = claimed / "quarantine"
    found = [i for i in items if isinstance(i, Found)]
    assert [f.notification for f in found] == [sample(1), sample(3)]
    assert [f.claimed for f in found] == [str(claimed / name_of(1)), str(claimed / name_of(3))]
    problems = {i.name: i for i in items if isinstance(i, Problem)}
    assert set(problems) == set(EXPECTED_PROBLEMS)
    for name, problem in problems.items():
        assert problem.quarantined == str(quarantine / name)
        assert (quarantine / f"{name}.reason").read_text().startswith(EXPECTED_PROBLEMS[name])
    # Left: what is not a notification's name.  Moved: everything else, as it was.
    assert sorted(p.name for p in hostile.iterdir()) == [".claimed", ".x.json.12.1.tmp", "README"]
    assert os.readlink(quarantine / "passwd.json") == str(PASSWD) and PASSWD.read_bytes() == passwd
    assert (quarantine / "dir.json" / "inside.json").is_file()
    assert (quarantine / "fifo.json").is_fifo() and (quarantine / "socket.json").is_socket()
    assert json.loads((claimed / name_of(1)).read_bytes()) == found[0].document
    mode = claimed.stat().st_mode & 0o777
    assert mode == 0o700 and (quarantine.stat().st_mode & 0o777) == 0o700


def test_a_publication_in_progress_is_left_for_later(tmp_path: Path) -> None:
    temp = tmp_path / ".a.json.1.1.tmp"
    temp.write_bytes(sample(1).to_json())
    os.link(temp, tmp_path / name_of(1))  # the moment between link() and unlink() of the temp
    with Inbox(str(tmp_path)) as inbox:
        assert isinstance(inbox.look(name_of(1)), Pending)
        assert isinstance(inbox.claim(name_of(1)), Pending)
        assert list(inbox.scan()) == []
        temp.unlink()
        result = inbox.claim(name_of(1))
        assert isinstance(result, Found) and result.notification == sample(1)


def test_a_file_swapped_while_being_read_is_never_mixed_up(tmp_path: Path) -> None:
    """The application replaces the name again and again (rename over it,
    and writes in place) while the consumer reads: every result is one whole
    version, or a rejection; never a mixture."""
    versions = [sample(1).to_json(), sample(2, program="x" * 3000).to_json(), b'{"broken": ']
    target = tmp_path / "a.json"
    target.write_bytes(versions[0])
    stop = threading.Event()

    def swap() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            data = versions[n % 3]
            if n % 2:
                (tmp_path / ".next").write_bytes(data)
                os.replace(tmp_path / ".next", target)
            else:
                with open(target, "r+b") as f:  # in place, as a careless writer would
                    f.truncate(0)
                    f.write(data)

    swapper = threading.Thread(target=swap)
    swapper.start()
    results: list[Optional[object]] = []
    try:
        with Inbox(str(tmp_path)) as inbox:
            for _ in range(400):
                results.append(inbox.look("a.json"))
    finally:
        stop.set()
        swapper.join()
    valid = [json.loads(v) for v in versions[:2]]
    for r in results:
        assert r is None or isinstance(r, (Found, Problem)), r
        if isinstance(r, Found):
            assert r.document in valid
    assert any(isinstance(r, Found) for r in results)


def test_two_consumers_claiming_the_same_files_each_file_goes_to_exactly_one(tmp_path: Path) -> None:
    d = tmp_path / "notifications"
    d.mkdir()
    serials = list(range(1, 201))
    publish(d, *serials)
    navi = [sys.executable, "-m", "navi"]
    racers = [
        subprocess.Popen(
            [*navi, "ack", "--all", "--json", str(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=120) for r in racers]
    won = [[json.loads(line) for line in out.splitlines()] for out, _ in outputs]
    files = [{w["file"] for w in lines} for lines in won]
    assert files[0].isdisjoint(files[1])
    assert files[0] | files[1] == {str(d / name_of(s)) for s in serials}
    assert sorted(p.name for p in (d / ".claimed").iterdir()) == sorted(name_of(s) for s in serials)
    assert list(d.iterdir()) == [d / ".claimed"]
    # With --all, a file another consumer took first is no error: it was not there to take.
    assert [(racer.returncode, err) for racer, (_, err) in zip(racers, outputs)] == [(0, ""), (0, "")]


def test_the_same_file_acked_twice_wins_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish(tmp_path, 1)
    path = str(tmp_path / name_of(1))
    assert cli.main(["ack", path]) == 0
    assert cli.main(["ack", path]) == 1
    out, err = capsys.readouterr()
    assert out == f"claimed {path} -> {tmp_path / '.claimed' / name_of(1)}\n"
    assert "not there (claimed by another consumer?)" in err


def test_a_redelivered_notification_is_claimed_beside_the_first_copy(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    with Inbox(str(tmp_path)) as inbox:
        first = inbox.claim(name_of(1))
        publish(tmp_path, 1)  # Navi restarted before acknowledging: the same name again
        second = inbox.claim(name_of(1))
    assert isinstance(first, Found) and isinstance(second, Found)
    assert second.notification.id == first.notification.id
    assert second.claimed == str(tmp_path / ".claimed" / (name_of(1)[:-5] + "~1.json"))
    assert Path(first.claimed or "").is_file()


def test_release_puts_a_claimed_notification_back(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    with Inbox(str(tmp_path)) as inbox:
        found = inbox.claim(name_of(1))
        assert isinstance(found, Found)
        assert inbox.release(found)
        assert [f.name for f in inbox.scan() if isinstance(f, Found)] == [name_of(1)]


def test_what_was_claimed_and_not_moved_on_is_held_in_order_and_moved_on_with_its_reason(tmp_path: Path) -> None:
    publish(tmp_path, 3, 1, 2)
    with Inbox(str(tmp_path), ".forward") as inbox:
        assert list(inbox.held()) == []  # no claim directory yet
        claimed = [inbox.claim(name_of(s)) for s in (1, 2, 3)]
        assert all(isinstance(f, Found) for f in claimed)
        (tmp_path / ".forward" / "planted.json").symlink_to(PASSWD)  # as if killed between claim and quarantine
        held = list(inbox.held())
        assert [f.notification for f in held if isinstance(f, Found)] == [sample(1), sample(2), sample(3)]
        assert [(p.name, p.quarantined) for p in held if isinstance(p, Problem)] == [
            ("planted.json", str(tmp_path / ".forward" / "quarantine" / "planted.json"))
        ]
        first, second = held[0], held[1]
        assert isinstance(first, Found) and isinstance(second, Found)
        assert inbox.move_on(first, "delivered") == str(tmp_path / ".forward" / "delivered" / name_of(1))
        assert inbox.move_on(second, "rejected", "the receiver answered 400") == str(
            tmp_path / ".forward" / "rejected" / name_of(2)
        )
        assert [f.name for f in inbox.held()] == [name_of(3)]
        # delivered, rejected and quarantined (with their reasons) go; what is held stays
        assert inbox.prune(0, held=False) == 5
    assert (tmp_path / ".forward" / name_of(3)).is_file()
    assert sorted(os.listdir(tmp_path / ".forward")) == sorted([name_of(3), "delivered", "rejected", "quarantine"])
    assert [os.listdir(tmp_path / ".forward" / p) for p in ("delivered", "rejected", "quarantine")] == [[], [], []]


@pytest.mark.parametrize("plant", ["symlink", "group-writable", "another user's"])
def test_a_claim_directory_the_application_planted_is_refused(tmp_path: Path, plant: str) -> None:
    d, elsewhere = tmp_path / "notifications", tmp_path / "elsewhere"
    d.mkdir()
    elsewhere.mkdir()
    publish(d, 1)
    if plant == "symlink":
        (d / ".claimed").symlink_to(elsewhere)
    else:
        (d / ".claimed").mkdir()
        if plant == "group-writable":
            (d / ".claimed").chmod(0o770)
        elif os.geteuid() == 0:
            os.chown(d / ".claimed", 441, 444)  # the image's mop
        else:
            print("SKIP: only root can give a directory to another user")
            pytest.skip("only root can give a directory to another user")
    with Inbox(str(d)) as inbox, pytest.raises(ConsumerError) as info:
        inbox.claim(name_of(1))
    assert "claim directory" in str(info.value) and "\n" not in str(info.value)
    assert (d / name_of(1)).is_file() and list(elsewhere.iterdir()) == []


def test_a_claim_directory_moved_away_is_made_again(tmp_path: Path) -> None:
    """The application can rename the claim directory (it may write in the
    directory above it): claims go on into a new one, at the path."""
    publish(tmp_path, 1, 2)
    with Inbox(str(tmp_path)) as inbox:
        first = inbox.claim(name_of(1))
        (tmp_path / ".claimed").rename(tmp_path / ".elsewhere")
        second = inbox.claim(name_of(2))
    assert isinstance(first, Found) and isinstance(second, Found)
    assert second.claimed == str(tmp_path / ".claimed" / name_of(2))
    assert os.listdir(tmp_path / ".claimed") == [name_of(2)]
    assert os.listdir(tmp_path / ".elsewhere") == [name_of(1)]


def test_a_claim_directory_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        print("SKIP: no second filesystem at /dev/shm")
        pytest.skip("no second filesystem at /dev/shm")
    publish(tmp_path, 1)
    claim_dir = shm / f"navi-test-{os.getpid()}"
    try:
        with Inbox(str(tmp_path), str(claim_dir)) as inbox, pytest.raises(ConsumerError, match="another filesystem"):
            inbox.claim(name_of(1))
    finally:
        claim_dir.rmdir()
    assert (tmp_path / name_of(1)).is_file()


def test_a_directory_that_is_a_symlink_is_refused_and_a_replaced_one_noticed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ConsumerError, match="not a directory"):
        Inbox(str(tmp_path / "link"))
    with Inbox(str(real)) as inbox:
        assert inbox.still_there()
        real.rename(tmp_path / "moved")
        real.mkdir()
        assert not inbox.still_there()


def test_prune_removes_old_claims_and_quarantine_without_following_links(hostile: Path) -> None:
    with Inbox(str(hostile)) as inbox:
        list(inbox.claim_all())
        assert inbox.prune(keep=3600) == 0
        (hostile / ".claimed" / "quarantine" / "dir.json" / "link").symlink_to(PASSWD)
        removed = inbox.prune(keep=-1)  # everything counts as old
    assert removed == 2 + 2 * len(EXPECTED_PROBLEMS)  # notifications, entries and their reasons
    assert list((hostile / ".claimed").iterdir()) == [hostile / ".claimed" / "quarantine"]
    assert list((hostile / ".claimed" / "quarantine").iterdir()) == []
    assert PASSWD.is_file()


def test_ls_lists_in_order_and_reports_the_rest_on_stderr(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls", str(hostile)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["time", "(UTC)", "type", "program", "exit", "count", "file", "summary"]
    for line, serial in zip(lines[1:], (1, 3)):
        n = sample(serial)
        assert line.split()[:8] == [
            f"{n.time:%Y-%m-%d}",
            f"{n.time:%H:%M:%S.%f}"[:-3],
            "crash",
            "web",
            "code",
            "3",
            "1",
            name_of(serial),
        ]
        assert line.endswith(n.summary)
    assert len(lines) == 3
    assert sorted(line.split(".json: ")[0] + ".json" for line in err.splitlines()) == sorted(
        f"navi: skipped {hostile / name}" for name in EXPECTED_PROBLEMS
    )


def test_ls_json_and_show(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls", "--json", str(hostile)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["dir"], r["file"], r["claimed"]) for r in lines] == [
        (str(hostile), str(hostile / name_of(s)), None) for s in (1, 3)
    ]
    assert [r["notification"] for r in lines] == [json.loads(sample(s).to_json()) for s in (1, 3)]

    assert cli.main(["show", str(hostile / name_of(3))]) == 0
    shown = capsys.readouterr().out
    n = sample(3)
    assert shown.splitlines()[0].split(None, 1) == ["crash", n.summary]
    for text in (n.id, str(hostile / name_of(3)), n.exit.log_line or "", "web (group web, pid 1003)"):
        assert text in shown
    # By id, also once claimed; by the start of one, if only one id starts so.
    assert cli.main(["ack", "--all", str(hostile)]) == 1  # the planted entries were quarantined
    capsys.readouterr()
    assert cli.main(["show", "--dir", str(hostile), "--json", n.id]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(n.to_json())
    assert cli.main(["show", "--dir", str(hostile), n.id[:-1]]) == 1
    assert capsys.readouterr().err == f"navi: {n.id[:-1]!r} is the start of several ids: {sample(1).id}, {n.id}\n"
    assert cli.main(["show", "--dir", str(hostile), "nope-nope"]) == 1
    assert cli.main(["show", str(hostile / ".claimed" / "quarantine" / "fifo.json")]) == 1
    assert "a FIFO" in capsys.readouterr().err
