"""Measurements under real supervisord: start-up, idle cost (in a
container high in its memory limit too), a burst of 200 deaths."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from bench import hog, procfs
from bench.latency import HERE, PY, notification_names, wait
from navi.demo.sandbox import Sandbox, memory_cgroup, program
from navi.listener import supervisor_call

HIGH_LIMIT = 256 << 20
# Above 65 % of the limit Navi samples the memory every second instead of at
# each TICK_5; at 75 % a pressure episode begins.  Between the two: the cost
# of the sampling alone.
HIGH_SHARE = 0.70


def startup_ms(runs: int) -> dict[str, list[float]]:
    """From exec to the first READY, for `navi listen` reaching a real
    supervisord (its log over readLog, its programs over XML-RPC, the
    cgroup) and for the minimal listener."""
    commands = {"navi": [str(Path(PY).parent / "navi"), "listen"], "minimal": [PY, str(HERE / "minimal_listener.py")]}
    out: dict[str, list[float]] = {name: [] for name in commands}
    with Sandbox(program("web", "sleep 600")) as box:
        env = {**box.env, "SUPERVISOR_SERVER_URL": f"unix://{box.socket}"}
        for _ in range(runs):
            for name, command in commands.items():
                start = time.perf_counter()
                listener = subprocess.Popen(
                    command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                )
                assert listener.stdout is not None and listener.stdin is not None
                ready = listener.stdout.read(6)
                out[name].append((time.perf_counter() - start) * 1000)
                assert ready == b"READY\n", ready
                listener.stdin.close()
                listener.wait(10)
    return out


def quiet(
    seconds: float, idle: dict[str, Optional[str]], high: dict[str, Optional[str]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Wake-ups and CPU time of each listener per minute (its supervisord
    command, None for Navi as shipped), while nothing happens but
    supervisord's TICK_5: ``idle`` ones as they are, ``high`` ones in a
    memory cgroup whose working set a program holds at HIGH_SHARE of its
    limit (with the share as this process saw it each second, and the
    notifications written meanwhile: none expected).  All in the same
    minute, so that the machine's other load weighs on each alike."""
    with contextlib.ExitStack() as stack:
        boxes: dict[tuple[str, str], Sandbox] = {}
        cgroups: dict[tuple[str, str], str] = {}
        for name, command in idle.items():
            boxes["idle", name] = stack.enter_context(Sandbox(program("web", "sleep 600"), navi_command=command))
        for name, command in high.items():
            cgroup = stack.enter_context(memory_cgroup(HIGH_LIMIT)).path
            hogging = f"{PY} {HERE / 'hog.py'} {cgroup} {HIGH_SHARE} {{mnt}}/tmp/high"
            # Started once the listener is up, so that what it grows by starting is counted.
            programs = program("web", "sleep 600") + program("hog", hogging, autostart="false")
            box = stack.enter_context(Sandbox(programs, cgroup_dir=cgroup, navi_command=command))
            supervisor_call(f"unix://{box.socket}", "supervisor.startProcess", "hog", False)
            boxes["high", name], cgroups["high", name] = box, cgroup
        for key in cgroups:
            wait((boxes[key].mnt / "tmp" / "high").exists, 30)
        time.sleep(6)  # settled: started, first TICK seen
        pids = {key: box.pid("navi") for key, box in boxes.items()}
        wakes = {key: procfs.wakeups(pid) for key, pid in pids.items()}
        cpu = {key: procfs.cpu_seconds(pid) for key, pid in pids.items()}
        shares: dict[tuple[str, str], list[float]] = {key: [] for key in cgroups}
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            for key, cgroup in cgroups.items():
                shares[key].append(hog.share(cgroup))
            time.sleep(1)
        elapsed = time.monotonic() - start
        out: dict[str, dict[str, dict[str, float]]] = {"idle": {}, "high": {}}
        for (what, name), pid in pids.items():
            figures = out[what][name] = {
                "wakeups_per_min": (procfs.wakeups(pid) - wakes[what, name]) * 60 / elapsed,
                "cpu_ms_per_min": (procfs.cpu_seconds(pid) - cpu[what, name]) * 1000 * 60 / elapsed,
                "idle_rss_mb": procfs.rss_mb(pid),
            }
            if what == "high":
                figures["share_min"], figures["share_max"] = min(shares[what, name]), max(shares[what, name])
                figures["notifications"] = len(notification_names(boxes[what, name]))
        return out


def burst(programs: int) -> dict[str, float]:
    """All programs die at once (they wait on one FIFO, and get its EOF
    together): every death must be reported, none discarded by supervisord."""
    victims = "".join(program(f"b{i:03d}", "sh -c 'read x < {mnt}/tmp/go; kill -9 $$'") for i in range(programs))
    box = Sandbox(victims)
    fifo = box.mnt / "tmp" / "go"
    os.mkfifo(fifo)
    with box:
        wait(lambda: sum(v == "RUNNING" for v in box.status().values()) == programs + 1, 120)
        start = time.time()
        os.close(os.open(fifo, os.O_WRONLY))  # every shell is blocked opening it for reading
        wait(lambda: len(notification_names(box)) >= programs, 120, poll=0.01)
        elapsed = time.time() - start
        log = box.log("supervisord.log")
        return {
            "programs": programs,
            "notifications": len(notification_names(box)),
            "seconds_to_last": elapsed,
            "events_discarded": log.count("event buffer overflowed"),
        }


if __name__ == "__main__":
    print(startup_ms(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
