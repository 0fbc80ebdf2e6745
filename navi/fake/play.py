"""Drive an eventlistener process as supervisord does, without supervisord.

:class:`Player` spawns the listener with pipes on its stdin and stdout,
waits for READY, sends each event and reads the answer through
:class:`navi.fake.wire.Supervisor`, which is as strict as supervisord.  The first
violation that would put the listener in UNKNOWN ends the play, as it would
end the listener's supply of events under supervisord.  :func:`play` runs a
whole scenario (see :mod:`navi.fake.scenario`), applying its log lines and cgroup
changes to a :class:`navi.fake.world.FakeWorld` before the events they go with.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from navi import names
from navi.eventlistener import ListenerState
from navi.fake.scenario import Log, Memory, Say, ScenarioError, Send, Step, Supervisord, from_words, log_time, parse
from navi.fake.wire import Ready, Result, Supervisor, Violation
from navi.fake.world import FakeWorld
from navi.fdio import write_all

TIMEOUT = 10.0  # for READY and RESULT; supervisord itself would wait forever
MAX_REJECTIONS = 3  # supervisord resends a rejected event at once, forever
STOPWAITSECS = 10  # supervisord's default, between SIGTERM and SIGKILL


class ListenerBroke(Exception):
    """What the listener did wrong, in one line: supervisord would send it
    no more events (or wait for it forever)."""


@dataclass(frozen=True)
class Played:
    """One event and how the listener took it."""

    serial: int
    eventname: str
    payload: str
    result: bytes
    ns: int  # from sending the event to its READY after the RESULT
    rejected: int = 0  # times it answered other than OK before OK


@dataclass(frozen=True)
class Ended:
    exit_code: Optional[int]  # negative: killed by that signal
    after_eof: bytes  # what it wrote once stdin was closed
    stopped: bool  # it did not exit at end of input: stopped as supervisord stops a listener


Trace = Callable[[Union[Step, Played]], None]


def _inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NAVI_", "SUPERVISOR_"))}


class Player:
    def __init__(
        self,
        command: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        stderr: Optional[Path] = None,
        world: Optional[FakeWorld] = None,
        pool: str = "navi",
        first_serial: int = 0,
        timeout: float = TIMEOUT,
    ) -> None:
        self.supervisor = Supervisor(pool=pool, first_serial=first_serial)
        self.timeout = timeout
        self.warnings: list[str] = []  # violations supervisor 4 lets pass
        self.violation: Optional[str] = None
        self.raw = False  # bytes were written outside the protocol: close() checks nothing
        self._last_result: Optional[Result] = None
        full_env = {
            **_inherited_env(),
            "SUPERVISOR_ENABLED": "1",
            "SUPERVISOR_PROCESS_NAME": pool,
            "SUPERVISOR_GROUP_NAME": pool,
            **(env or {}),
        }
        err = open(stderr, "ab") if stderr is not None else None  # noqa: SIM115 (the child keeps it)
        try:
            self.process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=full_env,
                bufsize=0,
            )
        finally:
            if err is not None:
                err.close()
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin.fileno()
        self._stdout = self.process.stdout.fileno()
        self._poll = select.poll()
        self._poll.register(self._stdout, select.POLLIN)
        if world is not None:  # supervisord logs each spawn, its listeners' too
            world.append_log(f"{log_time(time.time())} INFO spawned: '{pool}' with pid {self.process.pid}")
        started = time.perf_counter_ns()
        try:
            self._until_ready("at start")
        except BaseException:
            self.kill()
            raise
        self.ready_ns = time.perf_counter_ns() - started

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> Player:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for f in (self.process.stdin, self.process.stdout):
            if f is not None and not f.closed:
                f.close()

    # ---- events -----------------------------------------------------------

    def event(self, eventname: str, payload: str, header: Optional[str] = None) -> Played:
        """Send one event; return when the listener is READY again.  Raises
        ListenerBroke where supervisord would stop sending it events."""
        self._usable()
        data = self.supervisor.envelope(eventname, payload, header)
        return self._exchange(data, eventname, payload)

    def send(self, data: bytes) -> Played:
        """Any bytes as one event, e.g. garbage to test bad input."""
        self._usable()
        return self._exchange(self.supervisor.send(data), "", data.decode("utf-8", "replace"))

    def write_raw(self, data: bytes) -> None:
        """Bytes on stdin outside the protocol (a test of what the listener
        does with them); close() then returns its answers unchecked."""
        self.raw = True
        self._write(data)

    def _exchange(self, data: bytes, eventname: str, payload: str) -> Played:
        serial = self.supervisor.serial
        started = time.perf_counter_ns()
        rejected = 0
        self._write(data)
        while True:
            result = self._until_ready(f"event serial {serial} ({eventname or 'raw bytes'})")
            if result is None or result.accepted:
                break
            rejected += 1
            if rejected >= MAX_REJECTIONS:
                self._break(
                    f"event serial {serial} ({eventname}): answered {result.body!r} {rejected} times; "
                    "supervisord sends a rejected event again at once, forever"
                )
            self._write(self.supervisor.resend())
        return Played(
            serial, eventname, payload, result.body if result else b"", time.perf_counter_ns() - started, rejected
        )

    def _write(self, data: bytes) -> None:
        try:
            write_all(self._stdin, data)
        except BrokenPipeError:
            self._break(f"event serial {self.supervisor.serial}: {self._exited('closed its stdin')}")

    def _until_ready(self, context: str) -> Optional[Result]:
        """Read answers until READY; the RESULT before it, if any."""
        result: Optional[Result] = None
        deadline = time.monotonic() + self.timeout
        ready = False
        while not ready:
            # The whole read counts: bytes that came with the READY break it.
            for answer in self._read(deadline, context):
                if isinstance(answer, Violation):
                    if answer.fatal:
                        self._break(f"{context}: {answer.reason}")
                    self.warnings.append(f"{context}: {answer.reason}")
                elif isinstance(answer, Result):
                    result = self._last_result = answer
                elif isinstance(answer, Ready):
                    ready = True
        return result

    def _read(self, deadline: float, context: str) -> list[Union[Ready, Result, Violation]]:
        left = deadline - time.monotonic()
        if left <= 0 or not self._poll.poll(left * 1000):
            wanted = "READY" if self.supervisor.state is ListenerState.ACKNOWLEDGED else "its RESULT"
            held = self.supervisor.held
            after = f" (it wrote {held!r}, not a whole token)" if held else ""
            if held and self._last_result is not None and not self._last_result.accepted:
                after += f" after a RESULT of {self._last_result.body!r}: does its length count its body?"
            self._break(
                f"{context}: no {wanted} within {self.timeout:g} s{after}; supervisord would wait, "
                "queueing events and dropping the oldest when its buffer is full"
            )
        data = os.read(self._stdout, 65536)
        if not data:
            holding = self.supervisor.state is ListenerState.BUSY
            self._break(
                f"{context}: {self._exited('closed its stdout')}"
                + (
                    " while holding the event; supervisord sends it again to the next listener process"
                    if holding
                    else ""
                )
            )
        return self.supervisor.receive_data(data)

    def _exited(self, what: str) -> str:
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return what
        return f"exited with code {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"

    def _break(self, reason: str) -> None:
        self.violation = reason
        raise ListenerBroke(reason)

    def _usable(self) -> None:
        if self.violation is not None:
            raise ListenerBroke(f"no more events after: {self.violation}")

    # ---- the end ------------------------------------------------------------

    def close(self, grace: float = 5.0) -> Ended:
        """End of input: stdin closed, then, as supervisord stops a listener,
        SIGTERM and, STOPWAITSECS later, SIGKILL if it does not exit.  Bytes
        it writes meanwhile are checked (a listener must say nothing after
        READY) unless bytes were written raw."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        rest = bytearray()
        deadline = time.monotonic() + grace
        stopped = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(left * 1000):
                if stopped:
                    self.process.kill()
                    break
                stopped = True
                self.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + STOPWAITSECS
                continue
            data = os.read(self._stdout, 65536)
            if not data:
                break
            rest += data
        self.process.stdout.close()
        code = self.process.wait()
        if rest and not self.raw and self.violation is None:
            for answer in self.supervisor.receive_data(bytes(rest)):
                if isinstance(answer, Violation) and self.violation is None:
                    self.violation = f"at end of input: {answer.reason}"
        return Ended(code, bytes(rest), stopped)


@dataclass(frozen=True)
class Outcome:
    events: int  # acknowledged
    seconds: float  # from the first event sent to the READY after the last
    timings_ns: tuple[int, ...]
    violations: tuple[str, ...]  # fatal, as supervisord sees them: the first ends the play
    warnings: tuple[str, ...]  # what supervisor 4 lets pass
    pid: int
    ready_ns: int  # from spawn to its first READY
    closed: Optional[Ended]


def play(
    steps: Iterable[Step],
    command: Sequence[str],
    world: Optional[FakeWorld] = None,
    env: Optional[Mapping[str, str]] = None,
    stderr: Optional[Path] = None,
    trace: Optional[Trace] = None,
    timeout: float = TIMEOUT,
    pool: str = "navi",
    on_ready: Optional[Callable[[Player], None]] = None,
) -> Outcome:
    """Play ``steps`` to a listener started from ``command``, as fast as it
    acknowledges.  ``on_ready(player)`` runs once it said READY (to sample
    its memory, say); ``trace`` sees every step and every event played."""
    environment = {**(world.env() if world is not None else {}), **(env or {})}
    timings: list[int] = []
    try:
        player = Player(command, environment, stderr, world, pool=pool, timeout=timeout)
    except ListenerBroke as e:
        return Outcome(0, 0.0, (), (str(e),), (), -1, 0, None)
    with player:
        if on_ready is not None:
            on_ready(player)
        started = time.perf_counter()
        try:
            for step in steps:
                if isinstance(step, Send):
                    played = player.event(step.eventname, step.payload, step.header)
                    timings.append(played.ns)
                    if trace is not None:
                        trace(played)
                    continue
                if world is not None:
                    world.apply(step)
                if trace is not None:
                    trace(step)
        except ListenerBroke:
            pass
        seconds = time.perf_counter() - started
        closed = player.close() if player.violation is None else None
        violations = (player.violation,) if player.violation is not None else ()
        return Outcome(
            len(timings),
            seconds,
            tuple(timings),
            violations,
            tuple(player.warnings),
            player.pid,
            player.ready_ns,
            closed,
        )


# ---- navi fake play ----------------------------------------------------------


def describe(item: Union[Step, Played], world: Optional[FakeWorld] = None) -> Optional[str]:
    """One line of the trace."""
    if isinstance(item, Played):
        fields = item.payload.split(" ")
        name = next((f[len("processname:") :] for f in fields if f.startswith("processname:")), "")
        shown = " ".join(f for f in fields if not f.startswith(("processname:", f"groupname:{name}")) or not name)
        answer = item.result.decode("utf-8", "replace")
        answer += f" after {item.rejected} rejections" if item.rejected else ""
        return f"{item.serial:6}  {item.eventname:<24} {name:<10} {shown:<42} {answer}  {item.ns / 1e6:.1f} ms"
    if isinstance(item, Say):
        return f"# {item.text}"
    if isinstance(item, Log):
        return f"{'':6}  log  {item.line.split(' ', 2)[-1]}"
    if isinstance(item, Memory) and world is not None:
        return (
            f"{'':6}  cgroup v{world.version}  oom_kill {world.oom_kill}, usage {world.usage / 2**20:.1f} MiB "
            f"of {world.limit / 2**20:.1f} MiB, peak {world.peak / 2**20:.1f} MiB"
        )
    return None


def _notifications(world: FakeWorld) -> list[str]:
    rows = []
    for path in sorted(world.notifications.iterdir()):
        if names.skipped(path.name):
            continue
        try:
            n = json.loads(path.read_text())
            process = (n.get("process") or {}).get("name") or "-"
            count = n.get("count", 1)
            rows.append(
                f"  {n.get('type', '?'):<6} {process:<10} {n.get('summary', '')}"
                + (f" [{count} incidents]" if count != 1 else "")
                + f"  {path.name}"
            )
        except (OSError, ValueError, AttributeError) as e:
            rows.append(f"  {path.name}: not a notification ({e})")
    return rows


def _held(world: FakeWorld) -> list[str]:
    """What navi listen holds back to write later (in its state file)."""
    try:
        rates = json.loads((world.notifications / names.STATE_FILE).read_text())["rates"]
        held = [r["held"] for r in rates if r["held"]]
        return [
            f"held, to be written later: {h['count']} incidents ({h['reason']}) of "
            f"{(h['latest']['notification'].get('process') or {}).get('name') or 'the container'}"
            for h in held
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def command(
    scenario: Optional[str],
    words: list[str],
    directory: Optional[str],
    cgroup_version: int,
    listener: list[str],
    quiet: bool,
) -> int:
    """``navi fake play``: 0 when the listener kept to the protocol, 1 when it
    did not, 2 when the scenario or the command line is wrong."""
    model = Supervisord(start=time.time())
    try:
        steps: list[Step] = []
        if scenario is not None:
            with open(scenario, encoding="utf-8") as f:
                steps += parse(f.read(), model)
        steps += from_words(words, model)
    except ScenarioError as e:
        print(f"navi fake: {scenario + ': ' if scenario and not words else ''}{e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"navi fake: cannot read {scenario}: {e.strerror}", file=sys.stderr)
        return 2
    if not any(isinstance(s, Send) for s in steps):
        print(
            "navi fake: nothing to play: give words (e.g. web crashes with code 3) or --scenario FILE", file=sys.stderr
        )
        return 2
    if directory is not None:
        root = Path(directory)
        if root.exists() and any(root.iterdir()):
            print(f"navi fake: {root} is not empty: give a new directory", file=sys.stderr)
            return 2
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="navi-fake-"))
    try:
        return _command(steps, root, cgroup_version, listener, quiet, keep=directory is not None)
    finally:
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)


def _command(steps: list[Step], root: Path, cgroup_version: int, listener: list[str], quiet: bool, keep: bool) -> int:
    argv = listener or [sys.executable, "-m", "navi", "listen"]
    shown = " ".join(listener) if listener else "navi listen"
    stderr = root / "listener.stderr"
    with FakeWorld(root, cgroup_version, start=time.time()) as world:
        print(
            f"navi fake: cgroup v{cgroup_version} tree, supervisord log and notifications in {root}"
            + ("" if keep else " (removed at the end; --dir DIR keeps them)")
        )

        def ready(player: Player) -> None:
            print(f"navi fake: {shown} (pid {player.pid}) READY after {player.ready_ns / 1e6:.0f} ms")

        def trace(item: Union[Step, Played]) -> None:
            line = describe(item, world)
            if line is not None:
                print(line)

        try:
            outcome = play(steps, argv, world, stderr=stderr, trace=None if quiet else trace, on_ready=ready)
        except OSError as e:
            print(f"navi fake: cannot start {shown}: {e.strerror}", file=sys.stderr)
            return 2
        rate = f" ({outcome.events / outcome.seconds:,.0f} events/s)" if outcome.events else ""
        print(f"navi fake: {outcome.events} events acknowledged in {outcome.seconds:.2f} s{rate}")
        for warning in outcome.warnings:
            print(f"navi fake: warning: {warning}")
        for violation in outcome.violations:
            print(f"navi fake: PROTOCOL VIOLATION: {violation}")
        if outcome.closed is not None:
            ending = (
                "did not exit at end of input: stopped with SIGTERM"
                if outcome.closed.stopped
                else "exited at end of input"
            )
            print(f"navi fake: the listener {ending}, code {outcome.closed.exit_code}")
        rows = _notifications(world)
        print(f"notifications written: {len(rows)}" + (f", in {world.notifications}" if keep and rows else ""))
        for row in rows:
            print(row)
        for line in _held(world):
            print(line)
        said = _read_text(stderr).splitlines()
        if said and (outcome.violations or any("ERROR" in line or "Traceback" in line for line in said)):
            print(f"the listener's stderr{' (' + str(stderr) + ')' if keep else ''}:")
            for line in said[-20:]:
                print(f"  {line}")
    return 1 if outcome.violations else 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
