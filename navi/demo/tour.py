"""``navi demo``: Navi doing its job under real supervisord, in about 20 s.

supervisord starts from the shipped configuration under a temporary /mnt,
with programs that die in the usual ways, leaving their last words, and one
that crash-loops and then recovers; where this machine allows (root, a
writable memory cgroup), one climbs to its container's limit, so that
pressure is told before the kernel OOM-kills it for real.
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
from navi.listener import MemoryCgroup

OOM_LIMIT = 192 << 20


PROGRAMS = (
    program(
        "web",
        """sh -c "echo listening on :8080; sleep 1.5; echo \\"Error: Cannot find module 'express'\\" >&2; exit 3\"""",
    )
    + program("segfaults", "sh -c 'sleep 1.5; kill -SEGV $$'")
    + program("killed", "sleep 3600")
    # Crashes three times, then stays up: a crash loop that begins and ends.
    + program(
        "flaky",
        "sh -c 'n=$(cat {mnt}/tmp/flaky 2>/dev/null || echo 0); echo $((n+1)) > {mnt}/tmp/flaky; sleep 1.2; "
        'if [ $n -lt 3 ]; then echo "worker $n: connection refused" >&2; exit 1; fi; exec sleep 3600\'',
        autorestart="true",
    )
    + program("fails-at-start", 'sh -c "echo no config >&2; exit 1"', startretries=1)
    + program("finishes", 'sh -c "sleep 1.5; exit 0"', exitcodes=0)
)
# Short settings, for a demo: a loop is 3 deaths and over after 3 s without
# one; pressure is over after 2 s below its end.
SETTINGS = {"NAVI_LOOP_DEATHS": "3", "NAVI_LOOP_CALM": "3", "NAVI_PRESSURE_CALM": "2"}


def hog(cgroup: MemoryCgroup) -> str:
    """From half the limit to past it in 10 s (exec: supervisord itself sees
    the SIGKILL; a shell in between would report "exit status 137")."""
    usage = "memory.usage_in_bytes" if cgroup.version == 1 else "memory.current"
    ramp = f"{sys.executable} -m navi.demo.ramp {cgroup.path}/{usage} {OOM_LIMIT} 10"
    return program("hog", f"sh -c 'sleep 2; echo allocating >&2; exec {ramp}'")


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


def _deaths(n: dict[str, Any]) -> str:
    deaths = n.get("deaths")
    return "" if not deaths else f"{deaths['total']}" + (" loop" if deaths["crash_loop"] else "")


def table(notifications: list[dict[str, Any]]) -> str:
    rows = [("time (UTC)", "type", "program", "exit", "deaths", "summary (ending with its last words)")]
    for n in notifications:
        exit_info = "" if n["type"] == "pressure" else _exit(n)
        program = n["process"]["name"] or "(container)"
        rows.append((n["time"][11:23], n["type"], program, exit_info, _deaths(n), n["summary"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows)


def _run(box: Sandbox, progress: Progress, oom: bool) -> None:
    # web segfaults killed flaky (3 crashes, its loop begun and ended) fails-at-start (2 and FATAL),
    # and hog (pressure begun, the OOM kill, pressure over)
    expected = 1 + 1 + 1 + 5 + 3 + (3 if oom else 0)
    if oom:
        progress.say(f"hog climbs from half its {OOM_LIMIT >> 20} MiB cgroup to past the limit in 10 s...")
        box.wait_for(lambda: any(n["type"] == "pressure" for n in box.notifications_list()), 30, "the pressure")
        progress.say("Navi said the container is near its limit")
        box.wait_for(lambda: any(n["type"] == "oom" for n in box.notifications_list()), 30, "the OOM kill")
        progress.say("hog was OOM-killed by the kernel")
    # A kill -9 at the same moment as an OOM kill could not be told from it
    # (the counter does not say which pid it killed): keep them apart.
    box.wait_for(lambda: box.status().get("killed") == "RUNNING", 20, "the program 'killed' to run")
    pid = box.pid("killed")
    os.kill(pid, signal.SIGKILL)
    progress.say(f"sent SIGKILL to 'killed' (pid {pid}) from outside, as `kill -9` would")
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
        cgroup: Optional[MemoryCgroup] = None
        try:
            cgroup = stack.enter_context(memory_cgroup(OOM_LIMIT))
            progress.say(f"made a memory cgroup limited to {OOM_LIMIT >> 20} MiB: {cgroup.path}")
        except Unavailable as e:
            progress.say(f"no real OOM kill in this demo: {e}")
        programs = PROGRAMS + (hog(cgroup) if cgroup else "")
        progress.say(f"starting supervisord from the shipped configuration under {root / 'mnt'}")
        cgroup_dir = cgroup.path if cgroup else None
        box = stack.enter_context(Sandbox(programs, root=root, cgroup_dir=cgroup_dir, env=SETTINGS))
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
