"""Measurements under real supervisord: start-up, idle cost, a burst of
200 deaths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench import procfs
from bench.latency import HERE, PY, notification_names, wait
from navi.demo.sandbox import Sandbox, program


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


def idle(seconds: float) -> dict[str, dict[str, float]]:
    """Wake-ups and CPU time of each listener while nothing happens but
    supervisord's TICK_5, per minute."""
    out = {}
    for name, command in (("navi", None), ("minimal", f"{PY} {HERE / 'minimal_listener.py'}")):
        with Sandbox(program("web", "sleep 600"), navi_command=command) as box:
            time.sleep(6)  # settled: started, first TICK seen
            pid = box.pid("navi")
            wakes, cpu = procfs.wakeups(pid), procfs.cpu_seconds(pid)
            time.sleep(seconds)
            out[name] = {
                "wakeups_per_min": (procfs.wakeups(pid) - wakes) * 60 / seconds,
                "cpu_ms_per_min": (procfs.cpu_seconds(pid) - cpu) * 1000 * 60 / seconds,
                "idle_rss_mb": procfs.rss_mb(pid),
            }
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
