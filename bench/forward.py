"""``navi forward``'s figures, each beside ``navi watch --ack --json`` doing
the same over the same directories (claiming each file and printing it,
where the forwarder claims it, POSTs it and moves it on):

- throughput: notifications per second from a backlog, delivered to a
  local receiver (tests/receiver.py, a separate process that reads each
  request with the CloudEvents SDK), from the first delivered to the last;
- idle: RSS, CPU time and wake-ups of the forwarder following 500 empty
  directories (inotify).

    python -m bench.forward [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable

from bench import procfs
from bench.latency import PY
from tests.helpers import publish
from tests.receiver import Running

NAVI = [PY, "-m", "navi"]


def _wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def _directories(root: Path, n: int, per: int) -> list[Path]:
    dirs = [root / f"c{i:03d}" / "notifications" for i in range(n)]
    for i, d in enumerate(dirs):
        d.mkdir(parents=True)
        if per:
            publish(d, *range(1 + per * i, 1 + per * (i + 1)))
    return dirs


def _end(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def throughput(dirs: int, per: int) -> dict[str, float]:
    """Notifications per second, first to last, and CPU ms per notification."""
    total = dirs * per
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="navi-bench-") as tmp:
        root = Path(tmp)
        _directories(root / "f", dirs, per)
        with Running(root / "received.jsonl") as receiver:
            forward = subprocess.Popen(
                [*NAVI, "forward", "--to", receiver.url, str(root / "f" / "*" / "notifications")],
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait(lambda: len(receiver.records()) >= total, 600, "every notification delivered")
                cpu = procfs.cpu_seconds(forward.pid)
            finally:
                _end(forward)
            times = [r["t"] for r in receiver.records() if r["status"] == 200]
        assert len(times) == total, f"{len(times)} delivered of {total}"
        out["forward_per_s"] = (total - 1) / (times[-1] - times[0])
        out["forward_cpu_ms_each"] = cpu * 1000 / total

        _directories(root / "w", dirs, per)
        stamps: list[float] = []
        watch = subprocess.Popen(
            [*NAVI, "watch", "--ack", "--json", str(root / "w" / "*" / "notifications")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert watch.stdout is not None
        reader = threading.Thread(target=_stamp_lines, args=(watch.stdout, stamps, total))
        reader.start()
        try:
            reader.join(600)
            cpu = procfs.cpu_seconds(watch.pid)
        finally:
            _end(watch)
        assert len(stamps) == total, f"{len(stamps)} printed of {total}"
        out["watch_per_s"] = (total - 1) / (stamps[-1] - stamps[0])
        out["watch_cpu_ms_each"] = cpu * 1000 / total
    return out


def _stamp_lines(stream: IO[bytes], stamps: list[float], total: int) -> None:
    while len(stamps) < total and stream.readline():
        stamps.append(time.time())


def idle(dirs: int, seconds: float) -> dict[str, dict[str, float]]:
    """RSS, CPU and wake-ups per minute, following ``dirs`` empty directories."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="navi-bench-") as tmp, Running(Path(tmp) / "received.jsonl") as receiver:
        root = Path(tmp)
        _directories(root, dirs, 0)
        glob = str(root / "*" / "notifications")
        commands = {
            "forward": [*NAVI, "forward", "--to", receiver.url, glob],
            "watch --ack": [*NAVI, "watch", "--ack", "--json", glob],
        }
        for name, command in commands.items():
            log = root / f"{name}.stderr"
            with open(log, "w") as err:
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
            try:
                _wait(lambda: log.read_text().count("navi: watching ") >= dirs, 120, f"{name} watching all")  # noqa: B023
                time.sleep(3)  # settled
                wakes, cpu = procfs.wakeups(process.pid), procfs.cpu_seconds(process.pid)
                time.sleep(seconds)
                out[name] = {
                    "rss_mb": procfs.rss_mb(process.pid),
                    "cpu_ms_per_min": (procfs.cpu_seconds(process.pid) - cpu) * 1000 * 60 / seconds,
                    "wakeups_per_min": (procfs.wakeups(process.pid) - wakes) * 60 / seconds,
                    "threads": float(len(os.listdir(f"/proc/{process.pid}/task"))),
                }
            finally:
                _end(process)
    return out


def measure(quick: bool) -> tuple[dict[str, Any], list[str]]:
    """The figures, and the lines that show them."""
    dirs, per = (20, 25) if quick else (20, 100)
    runs = 1 if quick else 3
    results: dict[str, Any] = {"throughput": [], "idle": {}}
    for _ in range(runs):
        print(f"forward: throughput, {dirs} x {per} notifications ...", flush=True)
        results["throughput"].append(throughput(dirs, per))
    seconds = 10 if quick else 30
    print(f"forward: idle, 500 directories, {seconds} s each ...", flush=True)
    results["idle"] = idle(500, seconds)

    def median(key: str) -> float:
        values: list[float] = sorted(r[key] for r in results["throughput"])
        return values[len(values) // 2]

    rate, watch_rate = median("forward_per_s"), median("watch_per_s")
    results["ratio forward/watch throughput (median)"] = rate / watch_rate
    runs_shown = ", ".join(f"{r['forward_per_s']:.0f}" for r in results["throughput"])
    lines = [
        f"forward: {dirs * per} notifications delivered at {rate:.0f}/s (median of {runs_shown}), "
        f"CPU {median('forward_cpu_ms_each'):.2f} ms each",
        f"  watch --ack --json took the same at {watch_rate:.0f}/s: forward runs at {rate / watch_rate:.2f} x watch",
    ]
    for name, figures in results["idle"].items():
        lines.append(
            f"idle, 500 directories: {name}: RSS {figures['rss_mb']:.1f} MB, "
            f"{figures['cpu_ms_per_min']:.1f} ms CPU/min, {figures['wakeups_per_min']:.0f} wake-ups/min, "
            f"{figures['threads']:.0f} threads"
        )
    f, w = results["idle"]["forward"], results["idle"]["watch --ack"]
    results["ratio forward/watch idle RSS"] = f["rss_mb"] / w["rss_mb"]
    lines.append(f"  forward's idle RSS is {f['rss_mb'] / w['rss_mb']:.2f} x watch's")
    return results, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller runs (a smoke run)")
    _, lines = measure(parser.parse_args().quick)
    print("\n".join(lines))
    sys.exit(0)


if __name__ == "__main__":
    main()
