"""End to end: a program's last words (the end of its stderr and stdout) in
its notifications, under real supervisord from the shipped configuration:
read at its death, before supervisord starts it again; hostile output kept
out of the summary; planted FIFOs and links never followed; every log that
cannot be had said so, and nothing else lost."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from navi.demo.sandbox import program
from tests.helpers import triggered

if TYPE_CHECKING:
    from navi.listener.cgroup import MemoryCgroup
    from tests.helpers import E2ESandbox, SandboxFactory

DASH = " \u2014 "  # between a summary and the last words
LATE = "its output was read at its event, not at its death"

# The last program to die in each sandbox: its notification, last, proves
# that every death before it was handled (supervisord's events come in order).
MARKER = program("marker", triggered("marker", "echo marker dies >&2; exit 99"))


def script(directory: Path, name: str, body: str) -> str:
    """A [program:x] command running a Python program: ``body``, with
    ``import os, sys, time`` and the sandbox's /mnt in ``mnt``; it starts
    once the test triggers ``name`` (at once when it is started again)."""
    path = directory / f"{name}.py"
    path.write_text(f"import os, sys, time\nmnt = sys.argv[1]\n{body}\n")
    return triggered(name, f"exec {sys.executable} {path} {{mnt}}")


def drained(box: E2ESandbox) -> list[dict[str, Any]]:
    """Crash the marker, wait for its notification (the last), and return
    the valid notifications before it: Navi handled every death then."""
    box.trigger("marker")
    box.wait_for(lambda: any(n["process"]["name"] == "marker" for n in box.notifications_list()), 30, "marker")
    found = box.check_files()
    assert found[-1]["process"]["name"] == "marker", found
    assert found[-1]["summary"] == f"marker crashed: exit status 99{DASH}marker dies"
    return found[:-1]


def one_line_each(box: E2ESandbox) -> None:
    """Navi's log: its start, and one line for each notification written,
    and nothing else (no warning, no traceback, no escape from the output)."""
    # (Where there is no memory cgroup, one more line says so at start: check_healthy allows it.)
    lines = [line for line in box.log("navi.log").splitlines() if not line.endswith("reported as crashes")]
    assert lines[0].startswith("navi: INFO: navi ") and " listening: " in lines[0], lines
    written = [line for line in lines[1:] if re.fullmatch(r"navi: INFO: \w+: .* -> \S+\.json", line)]
    assert written == lines[1:] and len(written) == len(box.notification_files()), lines
    assert all(line.isprintable() for line in lines), lines


def by_name(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named = {n["process"]["name"]: n for n in found}
    assert len(named) == len(found), [n["summary"] for n in found]
    return named


def at_death(n: dict[str, Any]) -> None:
    """Its words were read at its death, and say where they come from."""
    assert n["output"]["at_death"] is True, n
    assert not [note for note in n["notes"] if note.startswith(LATE)], n["notes"]


def test_a_crash_and_a_kill_end_their_summaries_with_their_last_words(
    sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    web = script(
        scratch_dir,
        "web",
        "print('listening on 3000', flush=True)\n"
        "print('node:internal/modules/cjs/loader:1080', file=sys.stderr, flush=True)\n"
        "print(\"Error: Cannot find module 'express'\", file=sys.stderr, flush=True)\n"
        "sys.exit(1)",
    )
    stuck = script(
        scratch_dir,
        "stuck",
        "print('watchdog: no progress in 30 s, killing myself', file=sys.stderr, flush=True)\nos.kill(os.getpid(), 9)",
    )
    box = sandbox(program("web", web) + program("stuck", stuck) + MARKER)
    box.wait_states({"web": "RUNNING", "stuck": "RUNNING", "marker": "RUNNING"})
    web_pid, stuck_pid = box.pid("web"), box.pid("stuck")
    box.trigger("web")
    box.wait_states({"web": "EXITED"})
    box.trigger("stuck")
    box.wait_states({"stuck": "EXITED"})
    [crash, kill] = drained(box)

    assert crash["type"] == "crash" and crash["process"]["pid"] == web_pid
    assert crash["summary"] == f"web crashed: exit status 1{DASH}Error: Cannot find module 'express'"
    at_death(crash)
    stderr, stdout = crash["output"]["stderr"], crash["output"]["stdout"]
    assert stderr["lines"] == ["node:internal/modules/cjs/loader:1080", "Error: Cannot find module 'express'"]
    assert stdout["lines"] == ["listening on 3000"]
    # supervisord's AUTO logs, under its childlogdir
    assert re.fullmatch(rf"{box.mnt}/log/web-stderr---supervisor-\w+\.log", stderr["file"]), stderr["file"]
    assert re.fullmatch(rf"{box.mnt}/log/web-stdout---supervisor-\w+\.log", stdout["file"]), stdout["file"]
    assert stderr["cut"] is False and stderr["unavailable"] is None
    assert stdout["cut"] is False and stdout["unavailable"] is None

    assert kill["type"] == "crash" and kill["process"]["pid"] == stuck_pid
    assert kill["exit"]["signal"] == "SIGKILL"
    assert kill["summary"] == f"stuck crashed: killed by SIGKILL{DASH}watchdog: no progress in 30 s, killing myself"
    at_death(kill)
    assert kill["output"]["stdout"]["lines"] == []
    box.check_healthy()


def test_an_oom_kill_carries_its_last_words(
    memory_cgroup: MemoryCgroup, sandbox: SandboxFactory, scratch_dir: Path
) -> None:
    # exec'd by the trigger: supervisord sees the SIGKILL itself.
    hog = script(
        scratch_dir,
        "hog",
        "print('loading the model: 300 MiB', file=sys.stderr, flush=True)\nb = bytearray(300 * 2**20)",
    )
    box = sandbox(program("hog", hog) + MARKER, cgroup_dir=memory_cgroup.path)
    box.wait_states({"hog": "RUNNING", "marker": "RUNNING"})
    box.trigger("hog")
    box.wait_states({"hog": "EXITED"})
    [oom] = drained(box)
    assert oom["type"] == "oom"
    assert oom["summary"].startswith("hog was killed by the kernel's OOM killer (memory limit 128.0 MiB")
    assert oom["summary"].endswith(f"{DASH}loading the model: 300 MiB")
    assert oom["output"]["stderr"]["lines"] == ["loading the model: 300 MiB"]
    at_death(oom)
    box.check_healthy()


def test_fatal_carries_the_last_backoffs_words(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    tries = scratch_dir / "tries"
    boot = script(
        scratch_dir,
        "boot",
        f"with open({str(tries)!r}, 'a') as f:\n"
        "    f.write('x')\n"
        f"n = os.path.getsize({str(tries)!r})\n"
        "print(f'booting, try {n}', flush=True)\n"
        "time.sleep(0.3)\n"  # dies within startsecs: BACKOFF, then FATAL
        "print(f'boot failed: try {n}', file=sys.stderr, flush=True)\n"
        "sys.exit(2)",
    )
    # Its first try starts once Navi is up (so that each is watched), its
    # retries at once.
    box = sandbox(program("boot", boot, startretries=2, startsecs=3) + MARKER)
    box.trigger("boot")
    box.wait_states({"boot": "FATAL", "marker": "RUNNING"}, timeout=30)
    found = drained(box)
    n = tries.stat().st_size
    assert n == 3  # the first start and 2 retries
    assert [f["type"] for f in found] == ["crash"] * n + ["fatal"]
    for i, crash in enumerate(found[:n], 1):
        assert crash["exit"]["during_startup"] is True and crash["exit"]["code"] == 2
        assert crash["summary"].endswith(f"{DASH}boot failed: try {i}"), crash["summary"]
        assert crash["output"]["stderr"]["lines"][-1] == f"boot failed: try {i}"
        assert crash["output"]["stdout"]["lines"][-1] == f"booting, try {i}"
        at_death(crash)
    fatal = found[-1]
    assert fatal["summary"].endswith(f"{DASH}boot failed: try {n}"), fatal["summary"]
    assert fatal["output"] == found[n - 1]["output"]
    assert fatal["output"]["stderr"]["lines"] == [f"boot failed: try {i}" for i in range(1, n + 1)]
    box.check_healthy()


# The race that reading at the death is there to win: a program that
# supervisord restarts at once, whose new process speaks at once.
FLAPPY = "echo hello from $$ >&2; echo up $$; sleep 0.15; echo up $$: still; echo goodbye from $$ >&2; exit 3"
DEATHS = 30


def test_a_restarted_program_s_first_words_are_not_the_dead_one_s_last(sandbox: SandboxFactory) -> None:
    box = sandbox(
        # Started once Navi is up (the first process is watched); every restart at once.
        program("flappy", triggered("flappy", FLAPPY), autorestart="true", startsecs=0) + MARKER,
        env={"NAVI_BURST": "1000", "NAVI_LOOP_DEATHS": "1000"},  # every death written, no crash loop
    )
    box.wait_states({"flappy": "RUNNING", "marker": "RUNNING"})
    box.trigger("flappy")
    box.wait_for(lambda: len(box.notifications_list()) >= DEATHS, 60, f"{DEATHS} deaths of flappy")
    box.stop_program("flappy")
    found = drained(box)
    assert len(found) >= DEATHS and {n["type"] for n in found} == {"crash"}
    spawned = box.spawned_pids("flappy")
    assert [n["process"]["pid"] for n in found] == spawned[: len(found)]
    # The race was there to lose: each next process spoke right after.
    log = Path(found[0]["output"]["stderr"]["file"]).read_text()
    for before, after in zip(spawned, spawned[1 : len(found)]):
        assert f"goodbye from {before}\nhello from {after}\n" in log

    wrong = []
    for n in found:
        pid, out = n["process"]["pid"], n["output"]
        assert n["exit"]["code"] == 3
        if not out["at_death"]:  # allowed, where it says so
            assert [note for note in n["notes"] if note.startswith(LATE)], n["notes"]
        elif (out["stderr"]["lines"][-2:], out["stdout"]["lines"][-2:]) != (
            [f"hello from {pid}", f"goodbye from {pid}"],
            [f"up {pid}", f"up {pid}: still"],
        ):
            wrong.append((pid, out["stderr"]["lines"][-2:], out["stdout"]["lines"][-2:]))
        else:
            assert n["summary"] == f"flappy crashed: exit status 3{DASH}goodbye from {pid}"
    assert wrong == [], f"{len(wrong)} of {len(found)} read at death include the next process's words"
    assert sum(n["output"]["at_death"] for n in found) >= len(found) / 2  # read at death, mostly
    box.check_healthy()


HOSTILE = r"""
err = sys.stderr.buffer
err.write(b"caf\xe9 \xff\xfe broken utf-8\n")
err.write(b"nul\x00in\x00the\x00middle\n")
err.write(b"\x1b]0;pwned title\x07\x1b[2J\x1b[1;31mFATAL:\x1b[0m disk\tfull\x08\x07 \x1b(B\r\n")
err.flush()
sys.stdout.buffer.write(b"\x1b[32mok\x1b[0m\n")
sys.stdout.flush()
sys.exit(4)
"""

HUGE = r"""
sys.stderr.buffer.write(b"x" * (10 << 20) + b" and then it died")
sys.stderr.flush()
sys.exit(6)
"""


def test_hostile_output_is_kept_out_of_the_summary(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    hostile = script(scratch_dir, "hostile", HOSTILE)
    huge = script(scratch_dir, "huge", HUGE)
    box = sandbox(program("hostile", hostile) + program("huge", huge) + MARKER)
    box.wait_states({"hostile": "RUNNING", "huge": "RUNNING", "marker": "RUNNING"})
    box.trigger("hostile")
    box.wait_states({"hostile": "EXITED"})
    box.trigger("huge")
    box.wait_states({"huge": "EXITED"}, timeout=60)
    found = by_name(drained(box))

    n = found["hostile"]
    assert n["summary"] == f"hostile crashed: exit status 4{DASH}FATAL: disk full"
    assert n["output"]["stderr"]["lines"] == [
        "caf\ufffd \ufffd\ufffd broken utf-8",
        "nul\ufffdin\ufffdthe\ufffdmiddle",  # no NUL in a notification
        "\x1b]0;pwned title\x07\x1b[2J\x1b[1;31mFATAL:\x1b[0m disk\tfull\x08\x07 \x1b(B",  # as written
    ]
    assert n["output"]["stdout"]["lines"] == ["\x1b[32mok\x1b[0m"]
    at_death(n)

    n = found["huge"]
    [line] = n["output"]["stderr"]["lines"]
    assert line.endswith("x and then it died") and len(line.encode()) <= 4096
    assert n["output"]["stderr"]["cut"] is True
    assert n["summary"] == f"huge crashed: exit status 6{DASH}" + "x" * 199 + "\u2026"
    at_death(n)

    # The files themselves: JSON escapes what is left of the control characters.
    for path in box.notification_files():
        raw = path.read_bytes()
        assert b"\x1b" not in raw and b"\x00" not in raw and b"\x07" not in raw
        assert len(raw) < 32 << 10
    one_line_each(box)
    box.check_healthy()


PLANT = r"""
err_log, out_log = f"{mnt}/log/evil-stderr.log", f"{mnt}/log/evil-stdout.log"
print("innocent stderr", file=sys.stderr, flush=True)
print("innocent stdout", flush=True)
time.sleep(0.2)
os.unlink(err_log)
os.mkfifo(err_log)
os.unlink(out_log)
os.symlink(secret, out_log)
print("said after the plant", file=sys.stderr, flush=True)
print("said after the plant", flush=True)
sys.exit(5)
"""


def test_a_fifo_and_a_link_planted_as_logs_are_never_followed(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    secret = scratch_dir / "secret"
    secret.write_text("TOPSECRET-a1b2c3\n")
    evil = script(scratch_dir, "evil", f"secret = {str(secret)!r}" + PLANT)
    box = sandbox(
        program(
            "evil",
            evil,
            stderr_logfile="{mnt}/log/evil-stderr.log",
            stdout_logfile="{mnt}/log/evil-stdout.log",
        )
        + MARKER
    )
    box.wait_states({"evil": "RUNNING", "marker": "RUNNING"})
    box.trigger("evil")
    box.wait_states({"evil": "EXITED"})
    assert (box.mnt / "log" / "evil-stdout.log").is_symlink()
    [n] = drained(box)  # and a later incident is still reported

    log = box.mnt / "log"
    assert n["summary"] == "evil crashed: exit status 5"
    assert n["output"]["stderr"] == {
        "lines": [],
        "file": f"{log}/evil-stderr.log",
        "cut": False,
        "unavailable": f"{log}/evil-stderr.log is not a regular file: not read",
    }
    assert n["output"]["stdout"] == {
        "lines": [],
        "file": f"{log}/evil-stdout.log",
        "cut": False,
        "unavailable": f"{log}/evil-stdout.log is a symbolic link: not followed",
    }
    at_death(n)
    for path in box.notification_files():
        assert "TOPSECRET" not in path.read_text()
    assert "TOPSECRET" not in box.log("navi.log")
    assert box.status() == {"navi": "RUNNING", "evil": "EXITED", "marker": "EXITED"}
    one_line_each(box)
    box.check_healthy()


def test_logs_that_cannot_be_had_say_so_and_lose_nothing_else(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    both = "print('{out}', flush=True)\nprint('{err}', file=sys.stderr, flush=True)\nsys.exit({code})"
    moved = (
        "os.rename(f'{mnt}/log/moved-stderr.log', f'{mnt}/log/moved-stderr.log.old')\n"  # logrotate, no copytruncate
        + both
    )
    rotated = (
        "for i in range(30):\n"
        "    print(f'line {i:02d} ' + '.' * 70, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.02)\n"  # one read, one write and one rotation check each in supervisord
        "sys.exit(15)"
    )
    programs: list[tuple[str, str, dict[str, object]]] = [
        (
            "nostdout",
            both.format(out="to nowhere", err="Error: stdout is not kept", code=11),
            {"stdout_logfile": "NONE"},
        ),
        ("merged", both.format(out="out first", err="Error: in the merged log", code=12), {"redirect_stderr": "true"}),
        (
            "syslogged",
            both.format(out="to syslog", err="Error: stdout went to syslog", code=13),
            {"stdout_logfile": "NONE", "stdout_syslog": "true"},
        ),
        (
            "moved",
            moved.format(mnt="{mnt}", out="stdout still here", err="said after the move", code=14),
            {"stderr_logfile": "{mnt}/log/moved-stderr.log"},
        ),
        ("rotated", rotated, {"stderr_logfile_maxbytes": "1KB", "stderr_logfile_backups": 5}),
    ]
    conf = "".join(program(name, script(scratch_dir, name, body), **options) for name, body, options in programs)
    box = sandbox(conf + MARKER)
    box.wait_states({name: "RUNNING" for name, _, _ in programs})
    for name, _, _ in programs:
        box.trigger(name)
        box.wait_states({name: "EXITED"})
    found = by_name(drained(box))
    assert sorted(found) == sorted(name for name, _, _ in programs)  # nothing lost
    for n in found.values():
        at_death(n)
    log = box.mnt / "log"

    out = found["nostdout"]["output"]
    assert out["stdout"] == {
        "lines": [],
        "file": None,
        "cut": False,
        "unavailable": "stdout_logfile=NONE: supervisord keeps no log of it",
    }
    assert out["stderr"]["lines"] == ["Error: stdout is not kept"]
    assert found["nostdout"]["summary"] == f"nostdout crashed: exit status 11{DASH}Error: stdout is not kept"

    out = found["merged"]["output"]
    assert out["stderr"]["unavailable"] == "stderr goes to stdout (redirect_stderr=true)"
    assert out["stderr"]["lines"] == [] and out["stderr"]["file"] is None
    assert out["stdout"]["lines"] == ["out first", "Error: in the merged log"]
    assert found["merged"]["summary"] == f"merged crashed: exit status 12{DASH}Error: in the merged log"

    out = found["syslogged"]["output"]
    assert out["stdout"]["unavailable"] == "stdout goes to syslog only (stdout_syslog=true, stdout_logfile=NONE)"
    assert out["stdout"]["lines"] == [] and out["stdout"]["file"] is None
    assert out["stderr"]["lines"] == ["Error: stdout went to syslog"]
    assert found["syslogged"]["summary"] == f"syslogged crashed: exit status 13{DASH}Error: stdout went to syslog"

    out = found["moved"]["output"]
    assert out["stderr"]["unavailable"] == (f"{log}/moved-stderr.log does not exist (rotated away, or never written)")
    assert out["stdout"]["lines"] == ["stdout still here"] and out["stdout"]["unavailable"] is None
    # stdout is not stderr: its last line is no error message.
    assert found["moved"]["summary"] == "moved crashed: exit status 14"

    out = found["rotated"]["output"]
    stderr_log = Path(out["stderr"]["file"])
    assert Path(f"{stderr_log}.1").exists() and stderr_log.stat().st_size < 1024  # it did rotate
    assert out["stderr"]["lines"] == [f"line {i:02d} " + "." * 70 for i in range(30)]
    assert out["stderr"]["cut"] is False
    one_line_each(box)
    box.check_healthy()


def test_no_output_tail(sandbox: SandboxFactory, scratch_dir: Path) -> None:
    quiet = script(scratch_dir, "quiet", "print('Error: not to be read', file=sys.stderr, flush=True)\nsys.exit(1)")
    box = sandbox(program("quiet", quiet) + MARKER, env={"NAVI_NO_OUTPUT_TAIL": "1"})
    box.wait_states({"quiet": "RUNNING", "marker": "RUNNING"})
    box.trigger("quiet")
    box.wait_states({"quiet": "EXITED"})
    box.trigger("marker")
    box.wait_notifications(2)
    [quiet_n, marker_n] = box.check_files()
    assert quiet_n["output"] is None and marker_n["output"] is None
    assert quiet_n["summary"] == "quiet crashed: exit status 1"
    assert marker_n["summary"] == "marker crashed: exit status 99"
    assert not [note for note in quiet_n["notes"] if note.startswith(LATE)]
    box.check_healthy()
