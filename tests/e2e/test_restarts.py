"""End to end, under real supervisord: Navi SIGKILLed again and again during a
crash storm loses no incident count, and its rate limit bounds the files
across its restarts.

The scenario is also a command, to run it many times (each run in its own
sandbox; ``--busy`` adds two CPU-bound processes beside it)::

    .venv/bin/python -m tests.e2e.test_restarts --runs 10 [--busy] [--seed N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from navi.demo.sandbox import program
from navi.listener import rpc
from navi.names import STATE_FILE
from navi.notification import DEATHS
from tests.helpers import E2ESandbox, descendants, kill_leftovers

if TYPE_CHECKING:
    from tests.helpers import SandboxFactory

PROCESSES = [f"storm_{n}" for n in range(4)]
STORM = program(
    "storm",
    "sh -c 'sleep 0.3; exit 1'",
    numprocs=len(PROCESSES),
    process_name="%(program_name)s_%(process_num)s",
    startsecs=0,
    autorestart="true",
)
# Written after 1 s of quiet (at the next TICK_5) instead of 10 s, so the end
# of the storm comes sooner; the wait below is bounded either way.
NAVI_ENV = {"NAVI_QUIET": "1"}
KILLS = 22
STARTUP_WINDOW = 0.15  # a kill this soon after the spawn line lands in Navi's start-up
LATEST_KILL = 2.5
# navi.conf: startsecs=1, startretries=3 (the default).  A listener dying
# within startsecs 4 times in a row goes FATAL for good, so at most 2 kills in
# a row come within QUICK of a spawn; the next waits past it.  (Measured from
# when the test sees the spawn line, later than the spawn itself: safe.)
QUICK = 1.2
MAX_QUICK_IN_A_ROW = 2
RESPAWN_TIMEOUT = 15.0  # the longest backoff after 2 quick deaths is 2 s
COUNT_TIMEOUT = 40.0  # 10 s of quiet (if NAVI_QUIET is not honoured), then a TICK_5
STILL = 6.0  # nothing held, and no count for longer than a TICK_5: what is missing is lost
MAX_BYTES_PER_PROGRAM = 64 * 1024
NAVI_LOGS = ("navi.log", "navi.log.1", "navi.log.2")  # stderr_logfile_maxbytes=1MB, 2 backups


def unexpected_exits(log: str) -> dict[str, int]:
    return {name: log.count(f"WARN exited: {name} (") for name in PROCESSES}


@dataclass
class StormResult:
    seed: Optional[int]
    incidents: int  # unexpected exits in supervisord's log
    counted: int  # the sum of count over the notification files
    files: int
    bytes: int
    kills: int
    kills_during_startup: int  # before that Navi logged that it was listening
    expected_by_program: dict[str, int]
    counted_by_program: dict[str, int]
    files_by_program: dict[str, int]
    bytes_by_program: dict[str, int]
    delays: list[float]  # after the spawn line, of each kill made
    navi_state: str  # at the end
    seconds: float
    problems: list[str] = field(default_factory=list)  # what the run itself saw go wrong
    navi_log_tail: str = ""

    def failures(self) -> list[str]:
        """Each bound the run broke, in one line."""
        found = list(self.problems)
        if self.counted_by_program != self.expected_by_program or self.counted != self.incidents:
            found.append(f"counts {self.counted} != incidents {self.incidents}")
        if self.files * 3 > self.incidents:
            found.append(f"{self.files} files for {self.incidents} incidents: over a third")
        for name, size in sorted(self.bytes_by_program.items()):
            if size > MAX_BYTES_PER_PROGRAM:
                found.append(f"{name}: {size} bytes of files, over {MAX_BYTES_PER_PROGRAM}")
        if self.kills < 20:
            found.append(f"only {self.kills} kills")
        if self.navi_state != "RUNNING":
            found.append(f"navi is {self.navi_state} at the end")
        return found

    def line(self) -> str:
        return (
            f"seed {self.seed}: incidents {self.incidents}, counted {self.counted}, files {self.files}, "
            f"bytes {self.bytes}, kills {self.kills} ({self.kills_during_startup} during start-up), "
            f"{self.seconds:.0f} s"
        )

    def report(self) -> str:
        names = sorted(set(self.expected_by_program) | set(self.counted_by_program))
        table = [f"  {'process':<10} {'expected':>8} {'counted':>8} {'files':>6} {'bytes':>8}"] + [
            f"  {name!s:<10} {self.expected_by_program.get(name, 0):>8} {self.counted_by_program.get(name, 0):>8} "
            f"{self.files_by_program.get(name, 0):>6} {self.bytes_by_program.get(name, 0):>8}"
            for name in names
        ]
        delays = " ".join(f"{d:.2f}" for d in self.delays)
        return "\n".join(
            [
                *self.failures(),
                self.line(),
                *table,
                f"replay with NAVI_TEST_SEED={self.seed}; kill delays after each spawn (s): {delays}",
                "navi.log, its end:",
                self.navi_log_tail,
            ]
        )


def navi_pid(box: E2ESandbox) -> int:
    """Navi's pid as supervisord has it now, 0 when it is not running.  Over
    XML-RPC rather than ``box.pid`` (supervisorctl): starting supervisorctl
    takes longer than Navi's start-up, the window some kills must land in."""
    info = rpc.call(f"unix://{box.socket}", "supervisor.getProcessInfo", "navi", timeout=5)
    return int(info["pid"]) if info["statename"] in ("STARTING", "RUNNING") else 0


def next_delay(rng: random.Random, quick_in_a_row: int) -> float:
    if quick_in_a_row >= MAX_QUICK_IN_A_ROW:
        return rng.uniform(QUICK + 0.05, LATEST_KILL)
    if rng.random() < 0.35:
        return rng.uniform(0, STARTUP_WINDOW)
    return rng.uniform(STARTUP_WINDOW, LATEST_KILL)


def spawns_after(box: E2ESandbox, seen: int) -> list[int]:
    return box.spawned_pids("navi")[seen:]


def kill_navi_repeatedly(box: E2ESandbox, rng: random.Random, kills: int) -> tuple[list[float], int, list[str]]:
    """SIGKILL Navi ``kills`` times, each at a random moment after supervisord
    respawned it.  Returns the delays of the kills made, how many came before
    that Navi logged that it was listening, and what went wrong."""
    delays: list[float] = []
    during_startup = 0
    problems: list[str] = []
    seen = len(box.spawned_pids("navi"))
    pid = box.spawned_pids("navi")[-1]
    quick_in_a_row = 0
    while len(delays) < kills:
        seen_at = time.monotonic()
        log_mark = len(box.log("navi.log"))
        delay = next_delay(rng, quick_in_a_row)
        time.sleep(max(0.0, seen_at + delay - time.monotonic()))
        now = navi_pid(box)
        # Only the Navi this round is about: 0 is "not running" (os.kill(0)
        # would signal our own process group), another pid a Navi that died
        # and was respawned without us.
        if now == pid and now > 1:
            os.kill(now, signal.SIGKILL)
            delays.append(time.monotonic() - seen_at)
            quick_in_a_row = quick_in_a_row + 1 if delay < QUICK else 0
            navi_log = box.log("navi.log")
            if len(navi_log) >= log_mark and "listening" not in navi_log[log_mark:]:
                during_startup += 1
        try:
            spawned: list[int] = box.wait_for(
                functools.partial(spawns_after, box, seen), RESPAWN_TIMEOUT, "navi to be respawned"
            )
        except TimeoutError:
            problems.append(
                f"navi not respawned within {RESPAWN_TIMEOUT} s after kill {len(delays)}: {box.status().get('navi')}"
            )
            break
        seen += len(spawned)
        pid = spawned[-1]
    return delays, during_startup, problems


def stop_storm(box: E2ESandbox) -> None:
    """``stop storm:*``, retried: it fails for a process between its death
    and its respawn."""
    names = [f"storm:{name}" for name in PROCESSES]

    def stopped() -> bool:
        if all(box.status().get(name) == "STOPPED" for name in names):
            return True
        box.ctl("stop", "storm:*")
        return False

    box.wait_for(stopped, 30, "the storm to stop")


def read_files(box: E2ESandbox) -> list[tuple[dict[str, object], int]]:
    """Each published notification and its size in bytes."""
    found = []
    for path in box.notification_files():
        if path.name.endswith(".json") and not path.name.startswith("."):
            text = path.read_bytes()
            found.append((json.loads(text), len(text)))
    return found


def process_name(notification: dict[str, object]) -> str:
    process = notification.get("process")
    return str(process.get("name")) if isinstance(process, dict) else "?"


def held_in_state(box: E2ESandbox) -> int:
    """Incidents Navi's state file says are held or decided and not yet
    written (unreadable while it is being replaced: then, some)."""
    try:
        state = json.loads((box.notifications / STATE_FILE).read_text())
    except FileNotFoundError:
        return 0
    except ValueError:
        return 1
    held = sum(int(r["held"]["count"]) for r in state["rates"] if r["held"])
    return held + sum(int(o["notification"]["count"]) for o in state["outbox"])


def run_storm(box: E2ESandbox, rng: random.Random, kills: int = KILLS, seed: Optional[int] = None) -> StormResult:
    """The crash storm of ``STORM`` in a started ``box``, Navi killed
    ``kills`` times during it; then the storm stopped and its counts given
    time to add up."""
    began = time.monotonic()
    delays, during_startup, problems = kill_navi_repeatedly(box, rng, kills)
    try:
        box.wait_states({"navi": "RUNNING"}, RESPAWN_TIMEOUT)
    except TimeoutError:
        problems.append("navi is not RUNNING after the kills")
    stop_storm(box)
    expected = unexpected_exits(box.log("supervisord.log"))
    incidents = sum(expected.values())
    deadline = time.monotonic() + COUNT_TIMEOUT
    last: tuple[int, float] = (-1, time.monotonic())
    while True:
        files = read_files(box)
        counted = sum(int(n["count"]) for n, _ in files if n["type"] in DEATHS)  # type: ignore[call-overload]
        now = time.monotonic()
        if counted != last[0]:
            last = (counted, now)
        # Done when nothing is held any more (by Navi's state file) and the
        # counts add up, or have stood still past a TICK_5: lost.
        if held_in_state(box) == 0 and (counted >= incidents or now - last[1] > STILL):
            break
        if now > deadline:
            problems.append(f"the counts did not settle within {COUNT_TIMEOUT} s")
            break
        time.sleep(0.2)
    try:
        box.check_files()
    except AssertionError as e:
        # Named: a Navi killed mid-write leaves its temporary file behind.
        odd = [p.name for p in box.notification_files() if p.name.startswith(".")]
        problems.append(f"the files: {str(e).splitlines()[0]}" + (f" {odd}" if odd else ""))
    counted_by: dict[str, int] = {}
    files_by: dict[str, int] = {}
    bytes_by: dict[str, int] = {}
    for n, size in files:
        name = process_name(n)
        if n["type"] in DEATHS:
            counted_by[name] = counted_by.get(name, 0) + int(n["count"])  # type: ignore[call-overload]
        files_by[name] = files_by.get(name, 0) + 1
        bytes_by[name] = bytes_by.get(name, 0) + size
    main_log = box.log("supervisord.log")
    if "event buffer overflowed" in main_log:
        problems.append("supervisord: event buffer overflowed")
    navi_logs = "".join(box.log(name) for name in NAVI_LOGS)
    if "Traceback" in navi_logs:
        problems.append("a Traceback in navi.log")
    return StormResult(
        seed=seed,
        incidents=incidents,
        counted=counted,
        files=len(files),
        bytes=sum(s for _, s in files),
        kills=len(delays),
        kills_during_startup=during_startup,
        expected_by_program=expected,
        counted_by_program={**dict.fromkeys(expected, 0), **counted_by},
        files_by_program=files_by,
        bytes_by_program=bytes_by,
        delays=delays,
        navi_state=box.status().get("navi", "?"),
        seconds=time.monotonic() - began,
        problems=problems,
        navi_log_tail=box.log("navi.log")[-3000:],
    )


def seed_from_env() -> int:
    given = os.environ.get("NAVI_TEST_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def test_kills_during_a_crash_storm_lose_no_count_and_the_rate_limit_holds(sandbox: SandboxFactory) -> None:
    seed = seed_from_env()
    print(f"seed {seed} (replay with NAVI_TEST_SEED={seed})")
    box = sandbox(STORM, env=NAVI_ENV)
    result = run_storm(box, random.Random(seed), seed=seed)
    print(result.line())
    failures = result.failures()
    assert not failures, result.report()


def busy_processes(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.test_restarts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--kills", type=int, default=KILLS)
    parser.add_argument("--seed", type=int, help="of the first run; the next runs take the next ones")
    parser.add_argument("--busy", action="store_true", help="two CPU-bound processes beside it")
    args = parser.parse_args(argv)
    first_seed = args.seed if args.seed is not None else seed_from_env()
    hogs = busy_processes(2) if args.busy else []
    failed = 0
    try:
        for run in range(args.runs):
            seed = first_seed + run
            box = E2ESandbox(STORM, env=NAVI_ENV)
            ours: list[tuple[int, float]] = []
            try:
                box.start()
                result = run_storm(box, random.Random(seed), args.kills, seed=seed)
            finally:
                ours = descendants(box.process.pid) if box.process is not None else []
                box.close()
                # What outlived supervisord, as the fixture checks.
                leftovers = kill_leftovers(ours)
            failures = result.failures() + ([f"leftover processes killed: {leftovers}"] if leftovers else [])
            failed += bool(failures)
            print(
                f"run {run + 1}: {result.line()}" + (f"  FAIL: {'; '.join(failures)}" if failures else "  ok"),
                flush=True,
            )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"{failed} of {args.runs} runs failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
