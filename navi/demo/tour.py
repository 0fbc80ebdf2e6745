"""``navi demo``: Navi doing its job under real supervisord, in about 10 s.

supervisord starts from the shipped configuration under a temporary /mnt,
with programs that die in the usual ways; where this machine allows (root,
a writable memory cgroup), one of them is OOM-killed by the kernel for real.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from navi.demo.sandbox import Sandbox, Unavailable, memory_cgroup, program

OOM_LIMIT = 192 << 20


PROGRAMS = (
    program("exits-3", 'sh -c "sleep 1.5; exit 3"')
    + program("segfaults", "sh -c 'sleep 1.5; kill -SEGV $$'")
    + program("killed", "sleep 3600")
    + program("crash-loop", 'sh -c "sleep 1.2; exit 1"', autorestart="true")
    + program("fails-at-start", 'sh -c "echo no config >&2; exit 1"', startretries=2)
    + program("finishes", 'sh -c "sleep 1.5; exit 0"', exitcodes=0)
)
# exec: the hog is the process supervisord watches, so it sees the SIGKILL
# itself (a shell in between would report "exit status 137").
HOG = program("hog", f"sh -c 'sleep 2; exec {sys.executable} -c \"b = bytearray(1 << 30)\"'")


class Progress:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}", flush=True)


def _exit(n: dict[str, Any]) -> str:
    exit_info = n["exit"]
    if exit_info["signal"]:
        return str(exit_info["signal"]) + (" (core)" if exit_info["core_dumped"] else "")
    return "?" if exit_info["code"] is None else f"code {exit_info['code']}"


def table(notifications: list[dict[str, Any]]) -> str:
    rows = [("time (UTC)", "type", "program", "exit", "startup", "summary")]
    for n in notifications:
        startup = "yes" if n["exit"]["during_startup"] else ""
        rows.append((n["time"][11:23], n["type"], n["process"]["name"], _exit(n), startup, n["summary"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows)


def _run(box: Sandbox, progress: Progress, oom: bool) -> None:
    expected = 1 + 1 + 1 + 3 + 4 + (1 if oom else 0)  # exits-3 segfaults killed crash-loop fails-at-start hog
    if oom:
        progress.say("hog allocates 1 GiB in a 192 MiB cgroup...")
        box.wait_for(lambda: any(n["type"] == "oom" for n in box.notifications_list()), 30, "the OOM kill")
        progress.say("hog was OOM-killed by the kernel")
    # A kill -9 at the same moment as an OOM kill could not be told from it
    # (the counter does not say which pid it killed): keep them apart.
    box.wait_for(lambda: box.status().get("killed") == "RUNNING", 20, "the program 'killed' to run")
    pid = box.pid("killed")
    os.kill(pid, signal.SIGKILL)
    progress.say(f"sent SIGKILL to 'killed' (pid {pid}) from outside, as `kill -9` would")
    box.wait_for(
        lambda: sum(n["process"]["name"] == "crash-loop" for n in box.notifications_list()) >= 3,
        30,
        "three crashes of crash-loop",
    )
    box.stop_program("crash-loop")
    progress.say("crash-loop crashed three times; stopped it with supervisorctl (a stop is not a crash)")
    seen = 0
    deadline = time.monotonic() + 30
    while seen < expected and time.monotonic() < deadline:
        now = len(box.notifications_list())
        if now != seen:
            seen = now
            progress.say(f"{seen} notification(s) so far")
        time.sleep(0.1)


def run(directory: Optional[str] = None) -> int:
    progress = Progress()
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="navi-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        cgroup_dir = None
        try:
            cgroup_dir = stack.enter_context(memory_cgroup(OOM_LIMIT)).path
            progress.say(f"made a memory cgroup limited to {OOM_LIMIT >> 20} MiB: {cgroup_dir}")
        except Unavailable as e:
            progress.say(f"no real OOM kill in this demo: {e}")
        programs = PROGRAMS + (HOG if cgroup_dir else "")
        progress.say(f"starting supervisord from the shipped configuration under {root / 'mnt'}")
        box = stack.enter_context(Sandbox(programs, root=root, cgroup_dir=cgroup_dir))
        progress.say("supervisord is up and navi is RUNNING as its event listener")
        _run(box, progress, oom=cgroup_dir is not None)
        found = box.notifications_list()
    progress.say("supervisord stopped")
    print()
    print(table(found))
    print()
    print(f"{len(found)} notification files in {root / 'mnt' / 'notifications'}")
    print(f"supervisord's log: {root / 'mnt' / 'log' / 'supervisord.log'}; Navi's: {root / 'mnt' / 'log' / 'navi.log'}")
    print(f"(remove with: rm -r {root})")
    return 0


def main(argv: list[str], protocol_fd: Optional[int] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="navi demo",
        description="Start real supervisord from the shipped configuration under a temporary /mnt, let programs "
        "crash in several ways (and be OOM-killed, where a memory cgroup can be made), and print the "
        "notifications Navi wrote.",
    )
    parser.add_argument("--dir", metavar="DIR", help="lay out the temporary /mnt here (default: a new temp dir)")
    return run(parser.parse_args(argv[1:]).dir)
