"""Footprint and throughput, on streams from ``navi fake`` (navi.fake.play):
the same events to Navi and to its peers, as fast as each acknowledges."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from bench import procfs
from bench.latency import HERE, PY
from navi.demo.sandbox import Sandbox, program
from navi.fake.play import Played, Player, play
from navi.fake.scenario import Step, generate
from navi.fake.world import FakeWorld

BIN = Path(PY).parent


@dataclass(frozen=True)
class Listener:
    name: str
    command: list[str]
    needs_supervisord: bool = False  # it calls supervisord's XML-RPC on events


def listeners() -> list[Listener]:
    found = [
        Listener("navi", [str(BIN / "navi"), "listen"]),
        Listener("minimal", [PY, str(HERE / "minimal_listener.py")]),
    ]
    if (BIN / "crashmail").exists():
        # crashmail refuses to start without SUPERVISOR_SERVER_URL.
        found.append(
            Listener(
                "crashmail",
                [str(BIN / "crashmail"), "-a", "-m", "ops@example.invalid", "-s", "cat > /dev/null"],
                needs_supervisord=True,
            )
        )
        # memmon asks supervisord for every program's memory on each TICK.
        found.append(Listener("memmon", [str(BIN / "memmon"), "-a", "1GB"], needs_supervisord=True))
    return found


@dataclass
class Memory:
    idle_mb: float = 0.0  # just after its first READY
    first_thousand_mb: float = 0.0  # after event 1,000
    last_mb: float = 0.0  # after the last event
    peak_mb: float = 0.0  # the kernel's high-water mark over the run


@contextmanager
def _world() -> Iterator[FakeWorld]:
    with tempfile.TemporaryDirectory(prefix="navi-bench-") as root, FakeWorld(Path(root) / "world") as world:
        yield world


@contextmanager
def _supervisord(needed: bool) -> Iterator[dict[str, str]]:
    """SUPERVISOR_SERVER_URL of a real, idle supervisord, for a peer that calls it."""
    if not needed:
        yield {}
        return
    with Sandbox(program("web", "sleep 600")) as box:
        yield {"SUPERVISOR_SERVER_URL": f"unix://{box.socket}"}


def footprint(listener: Listener, events: int, crashes: int, oom_kills: int) -> tuple[Memory, tuple[str, ...]]:
    """RSS over a stream of ``events`` with that many crashes and OOM kills."""
    memory = Memory()
    pid = 0
    count = 0

    def ready(player: Player) -> None:
        nonlocal pid
        pid = player.pid
        memory.idle_mb = procfs.rss_mb(pid)

    def trace(item: Union[Step, Played]) -> None:
        nonlocal count
        if isinstance(item, Played):
            count += 1
            if count == 1000:
                memory.first_thousand_mb = procfs.rss_mb(pid)
            if count == events:
                memory.last_mb = procfs.rss_mb(pid)
                memory.peak_mb = procfs.peak_rss_mb(pid)

    with _world() as world, _supervisord(listener.needs_supervisord) as env:
        outcome = play(
            generate(events, crashes, oom_kills),
            listener.command,
            world,
            env=env,
            on_ready=ready,
            trace=trace,
            stderr=world.root / "stderr",
        )  # memmon prints on every TICK
    return memory, outcome.violations


def throughput(listener: Listener, steps: list[Step]) -> tuple[float, tuple[str, ...]]:
    """Events per second through the listener."""
    with _world() as world:
        outcome = play(steps, listener.command, world, stderr=world.root / "stderr")
    return outcome.events / outcome.seconds, outcome.violations


def routine(events: int) -> list[Step]:
    return generate(events)


def crashes(count: int) -> list[Step]:
    """Each of ``count`` programs crashes once: every one a notification
    file written and fsynced (no rate limit holds it back)."""
    return generate(5 * count, crashes=count, programs=count)  # 2 events to start, 3 to crash and restart
