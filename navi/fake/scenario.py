"""Scenarios for a fake supervisord, without I/O.

A scenario is a few lines of words (``web crashes with code 3``, ``worker is
OOM-killed``, ``api crash-loops 500 times``), or a recording of a real
supervisord.  :class:`Supervisord` turns each line into the steps supervisord
takes: the lines it writes to its main log, the rise of the cgroup's
``oom_kill`` counter the kernel makes before an OOM kill, and the events it
sends, with the payloads and in the order of supervisor 4's process state
machine (``supervisor/process.py``):

- a program that dies after ``startsecs`` is EXITED and, with autorestart,
  respawned at once (STARTING, RUNNING) forever: a crash loop never ends in
  FATAL;
- one that dies within ``startsecs`` is BACKOFF, and is tried again
  ``startretries`` times before it is FATAL.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Optional, Union

from navi.eventlistener import parse_tokens

DEFAULT_START = 1764025200.0  # 2025-11-24 23:00:00 UTC: log time stamps and TICKs start here
# Above the kernel's PID_MAX_LIMIT (2**22), so a fake pid never names a real
# process that Navi would sample.
FIRST_PID = 4200000
MAX_TIMES = 1_000_000
TICK = 5


@dataclass(frozen=True)
class Say:
    """The scenario line the steps that follow come from."""

    text: str


@dataclass(frozen=True)
class Log:
    """One line of supervisord's main log, without its newline."""

    line: str


@dataclass(frozen=True)
class Memory:
    """The memory cgroup changes: the ``oom_kill`` counter's new value; at an
    OOM kill, peak is at the limit (and the victim's memory freed); or the
    share of the limit the container uses now."""

    oom_kill: int
    at_limit: bool
    share: Optional[float] = None


@dataclass(frozen=True)
class Send:
    """One event; a recorded ``header`` line is sent as it was."""

    eventname: str
    payload: str
    header: Optional[str] = None


Step = Union[Say, Log, Memory, Send]


class ScenarioError(ValueError):
    """One line saying what in the scenario cannot be read, and where."""


@dataclass(frozen=True)
class Program:
    """A ``[program:x]`` section, as far as events go (supervisord's defaults)."""

    name: str
    group: str
    startsecs: int = 1
    startretries: int = 3
    autorestart: str = "unexpected"  # true, false or unexpected
    exitcodes: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Death:
    code: Optional[int] = None  # exit status; None: killed by ``signal``
    signal: Optional[str] = None
    core: bool = False
    oom: bool = False

    @property
    def status(self) -> int:
        """supervisord's exit status: -1 for any signal."""
        return -1 if self.code is None else self.code

    def message(self) -> str:
        if self.code is not None:
            return f"exit status {self.code}"
        return f"terminated by {self.signal}" + (" (core dumped)" if self.core else "")


@dataclass
class _Process:
    config: Program
    state: str = "STOPPED"
    pid: int = 0
    backoff: int = 0
    spawned: bool = False


def log_time(when: float) -> str:
    """supervisord's time stamp (the fake log is in UTC)."""
    moment = datetime.fromtimestamp(when, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f",{moment.microsecond // 1000:03d}"


def payload(program: Program, from_state: str, **extra: object) -> str:
    """A PROCESS_STATE payload: the extra tokens go in supervisord's order
    (tries; or expected, pid; or pid)."""
    tokens = [f"processname:{program.name}", f"groupname:{program.group}", f"from_state:{from_state}"]
    tokens += [f"{key}:{value}" for key, value in extra.items()]
    return " ".join(tokens)


def signal_name(word: str) -> str:
    """``SIGSEGV``, ``segv`` or ``11`` as supervisord names it."""
    name = word.upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name
        except ValueError:
            return f"signal {int(name)}"
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__:
        raise ScenarioError(f"unknown signal {word!r}")
    return name


class Supervisord:
    """The part of supervisord that shows in its events and its main log.

    ``play`` takes one scenario line and returns its steps; the state of
    every program carries over from line to line."""

    def __init__(self, start: float = DEFAULT_START, first_pid: int = FIRST_PID, oom_kill: int = 0) -> None:
        self.clock = start
        self.oom_kill = oom_kill
        self._next_pid = first_pid
        self._processes: dict[str, _Process] = {}
        self._out: list[Step] = []

    # ---- the scenario language ------------------------------------------

    def play(self, line: str) -> list[Step]:
        """The steps of one scenario line (blank lines and ``#`` comments give none)."""
        text = line.strip()
        self._out = []
        if not text or text.startswith("#"):
            return []
        if text.startswith("{"):
            self._recorded(text)
            return self.take()
        self._out.append(Say(text))
        tokens = text.split()
        head = tokens[0].lower()
        if head == "tick":
            for _ in range(_times(tokens[1:], text)):
                self.tick()
        elif head == "program":
            self._configure(tokens[1:], text)
        elif head == "log":
            if len(tokens) < 3:
                raise ScenarioError(
                    f"{text!r}: say log LEVEL MESSAGE, e.g. log WARN exited: web (exit status 3; not expected)"
                )
            self._log(tokens[1].upper(), text.split(None, 2)[2])
        elif head == "event":
            parts = text.split(" ", 2)
            if len(parts) < 2 or not parts[1]:
                raise ScenarioError(f"{text!r}: say event EVENTNAME PAYLOAD")
            self._out.append(Send(parts[1], parts[2] if len(parts) > 2 else ""))
        elif head == "oom_kill":
            self._set_oom_kill(tokens[1:], text)
        elif head == "memory":
            value = tokens[1] if len(tokens) == 2 else ""
            try:
                share = float(value[:-1]) / 100 if value.endswith("%") else -1.0
            except ValueError:
                share = -1.0
            if not 0 <= share <= 1:
                raise ScenarioError(f"{text!r}: say memory N% (the share of the limit in use, 0 to 100)")
            self._out.append(Memory(self.oom_kill, False, share))
        else:
            self._sentence(tokens, text)
        return self.take()

    def take(self) -> list[Step]:
        """The steps made since the last call (for callers of the state
        machine's methods)."""
        out, self._out = self._out, []
        return out

    def _sentence(self, tokens: list[str], text: str) -> None:
        name, words = tokens[0], [t.lower() for t in tokens[1:]]
        if name.endswith("'s") and words[:3] == ["child", "is", "oom-killed"]:
            # A child of the program is killed; the program lives on.
            self.process(name[:-2])
            for _ in range(_times(words[3:], text)):
                self._oom_rise()
            return
        verb = next((v for v in VERBS if words[: len(v.split())] == v.split()), None)
        if verb is None:
            raise ScenarioError(
                f"{text!r}: no verb I know after the program name; say e.g. 'web crashes with code 3', "
                f"'worker is OOM-killed', 'api crash-loops 500 times' (verbs: {', '.join(VERBS)})"
            )
        count, death, startup = _modifiers(words[len(verb.split()) :], verb, text)
        process = self.process(name)
        failing = verb == "fails to start" or startup
        for n in range(count or 1):
            if failing and n and process.state == "FATAL":
                raise ScenarioError(
                    f"{text!r}: {name} is FATAL after {n} attempts (startretries "
                    f"{process.config.startretries}); say 'fails to start' for all of them"
                )
            if verb == "starts":
                if process.state == "RUNNING":
                    raise ScenarioError(f"{text!r}: {name} is RUNNING already")
                self.run(process)
            elif verb == "is stopped":
                self.stop(process, text)
            elif verb == "is restarted":
                self.stop(process, text)
                self.run(process)
            elif failing:
                self.fail_to_start(process, death, text)
            else:
                self.die(process, death)
        if verb == "fails to start" and count is None:
            while process.state != "FATAL":  # without a count: until supervisord gives up
                self.fail_to_start(process, death, text)

    def _configure(self, tokens: list[str], text: str) -> None:
        if not tokens or len(tokens) % 2 != 1:
            raise ScenarioError(
                f"{text!r}: say program NAME [startsecs N] [startretries N] "
                "[autorestart true|false|unexpected] [exitcodes 0,2] [group G]"
            )
        process = self.process(tokens[0])
        config = process.config
        for key, value in zip(tokens[1::2], tokens[2::2]):
            try:
                if key == "startsecs":
                    config = replace(config, startsecs=_number(value))
                elif key == "startretries":
                    config = replace(config, startretries=_number(value))
                elif key == "exitcodes":
                    config = replace(config, exitcodes=tuple(_number(v) for v in value.split(",")))
                elif key == "autorestart" and value.lower() in ("true", "false", "unexpected"):
                    config = replace(config, autorestart=value.lower())
                elif key == "group":
                    config = replace(config, group=value)
                else:
                    raise ValueError
            except ValueError:
                raise ScenarioError(f"{text!r}: cannot set {key} to {value!r}") from None
        process.config = config

    def _set_oom_kill(self, tokens: list[str], text: str) -> None:
        value = tokens[0] if len(tokens) == 1 else ""
        if value.startswith("+") and value[1:].isdigit():
            self._memory(self.oom_kill + int(value[1:]), at_limit=True)
        elif value.isdigit():
            self._memory(int(value), at_limit=int(value) > self.oom_kill)
        else:
            raise ScenarioError(f"{text!r}: say oom_kill N (the counter's value) or oom_kill +N (new kills)")

    def _recorded(self, text: str) -> None:
        """One line of a recording (see navi.fake.record)."""
        try:
            record = json.loads(text)
        except ValueError as e:
            raise ScenarioError(f"not a recorded event: {e}") from None
        if not isinstance(record, dict):
            raise ScenarioError("a recorded line is a JSON object")
        if isinstance(record.get("log"), str):
            self._out.append(Log(record["log"]))
        elif isinstance(record.get("oom_kills"), int):
            self._memory(self.oom_kill + record["oom_kills"], at_limit=True)
        elif isinstance(record.get("header"), str) and isinstance(record.get("payload"), str):
            header = record["header"]
            self._out.append(Send(parse_tokens(header).get("eventname", ""), record["payload"], header))
        else:
            raise ScenarioError("a recorded line has log, oom_kills, or header and payload")

    # ---- supervisord's state machine ------------------------------------

    def process(self, name: str) -> _Process:
        if ":" in name or not name:
            raise ScenarioError(f"{name!r} is not a program name")
        if name not in self._processes:
            self._processes[name] = _Process(Program(name, name))
        return self._processes[name]

    # Each transition writes its log line before its event is sent:
    # supervisord logs in the call that queues the event, and dispatches it
    # on a later pass of its loop.

    def _log(self, level: str, message: str) -> None:
        self._out.append(Log(f"{log_time(self.clock)} {level} {message}"))
        self.clock += 0.001

    def _send(self, process: _Process, state: str, **extra: object) -> None:
        self._out.append(Send(f"PROCESS_STATE_{state}", payload(process.config, process.state, **extra)))
        process.state = state

    def _memory(self, value: int, at_limit: bool) -> None:
        self.oom_kill = value
        self._out.append(Memory(value, at_limit))

    def _oom_rise(self) -> None:
        # The kernel raises the counter before it sends SIGKILL.
        self._memory(self.oom_kill + 1, at_limit=True)

    def spawn(self, process: _Process) -> None:
        """{STOPPED, EXITED, BACKOFF, FATAL} -> STARTING."""
        process.pid = self._next_pid
        self._next_pid += 1
        process.spawned = True
        self._log("INFO", f"spawned: '{process.config.name}' with pid {process.pid}")
        self._send(process, "STARTING", tries=process.backoff)

    def run(self, process: _Process) -> None:
        """On to RUNNING, spawning it first if it is not STARTING."""
        if process.state == "RUNNING":
            return
        if process.state == "STOPPING":
            raise ScenarioError(f"{process.config.name} is STOPPING")
        if process.state != "STARTING":
            self.spawn(process)
        self.clock += process.config.startsecs
        process.backoff = 0
        self._log(
            "INFO",
            f"success: {process.config.name} entered RUNNING state, process has stayed up for > than "
            f"{process.config.startsecs} seconds (startsecs)",
        )
        self._send(process, "RUNNING", pid=process.pid)

    def die(self, process: _Process, death: Death) -> None:
        """A death after startsecs: EXITED, and the respawn autorestart asks for."""
        self.run(process)
        self.clock += 1.0
        if death.oom:
            self._oom_rise()
        config = process.config
        expected = death.status in config.exitcodes
        self._log(
            "INFO" if expected else "WARN",
            f"exited: {config.name} ({death.message()}; {'expected' if expected else 'not expected'})",
        )
        self._send(process, "EXITED", expected=int(expected), pid=process.pid)
        if config.autorestart == "true" or (config.autorestart == "unexpected" and not expected):
            self.run(process)

    def fail_to_start(self, process: _Process, death: Death, text: str) -> None:
        """A death within startsecs: BACKOFF, then STARTING again, or FATAL
        once startretries are used up."""
        if process.state == "RUNNING":
            raise ScenarioError(
                f"{text!r}: {process.config.name} is RUNNING; it can fail to start only after it "
                "stops, crashes or is FATAL"
            )
        if process.state != "STARTING":
            self.spawn(process)
        if death.oom:
            self._oom_rise()
        config = process.config
        process.backoff += 1
        self._log("WARN", f"exited: {config.name} ({death.message()}; not expected)")
        self._send(process, "BACKOFF", tries=process.backoff)
        if process.backoff > config.startretries:
            process.backoff = 0
            self._log("INFO", f"gave up: {config.name} entered FATAL state, too many start retries too quickly")
            self._send(process, "FATAL")
        else:
            self.clock += process.backoff  # supervisord waits one second more at each retry
            self.spawn(process)

    def stop(self, process: _Process, text: str) -> None:
        """supervisorctl stop: STOPPING, STOPPED (a stop from BACKOFF is STOPPED at once)."""
        if process.state == "BACKOFF":
            process.pid = 0
            self._send(process, "STOPPED", pid=0)
            return
        if process.state == "STOPPED" and not process.spawned:
            self.run(process)  # autostart: a program is started before anything can happen to it
        if process.state not in ("RUNNING", "STARTING"):
            raise ScenarioError(f"{text!r}: {process.config.name} is {process.state}, not running")
        self._send(process, "STOPPING", pid=process.pid)
        self.clock += 0.01
        # Killed by its stop signal: exit status -1, not one of exitcodes.
        self._log("WARN", f"stopped: {process.config.name} (terminated by SIGTERM)")
        self._send(process, "STOPPED", pid=process.pid)

    def tick(self) -> None:
        """TICK_5 at the next multiple of 5 s, as supervisord times them."""
        self.clock = (int(self.clock) // TICK + 1) * TICK
        self._out.append(Send("TICK_5", f"when:{int(self.clock)}"))


VERBS = (
    "crash-loops",
    "crashes",
    "exits",
    "is oom-killed",
    "is killed",
    "segfaults",
    "fails to start",
    "starts",
    "is stopped",
    "is restarted",
)


def _number(text: str) -> int:
    if not (text.isdigit() and text.isascii()):
        raise ValueError(text)
    return int(text)


def _times(words: list[str], text: str) -> int:
    if not words:
        return 1
    if words == ["once"]:
        return 1
    if words == ["twice"]:
        return 2
    if len(words) == 2 and words[1] in ("times", "time") and words[0].isdigit() and 0 < int(words[0]) <= MAX_TIMES:
        return int(words[0])
    raise ScenarioError(
        f"{text!r}: cannot read {' '.join(words)!r} as a count (say N times, once or twice; N up to {MAX_TIMES})"
    )


def _modifiers(words: list[str], verb: str, text: str) -> tuple[Optional[int], Death, bool]:
    """(times, if said; how it dies; during startup) from what follows the verb."""
    code: Optional[int] = {"crashes": 1, "crash-loops": 1, "exits": 0, "fails to start": 1}.get(verb)
    sig: Optional[str] = {"is killed": "SIGKILL", "is oom-killed": "SIGKILL", "segfaults": "SIGSEGV"}.get(verb)
    core = startup = False
    count: list[str] = []
    rest = list(words)
    while rest:
        if rest[:2] == ["with", "code"] or rest[:3] in (["with", "exit", "status"], ["with", "exit", "code"]):
            skip = 2 if rest[1] == "code" else 3
            if len(rest) <= skip or not rest[skip].isdigit():
                raise ScenarioError(f"{text!r}: {' '.join(rest[:skip])} needs a number")
            code, sig = int(rest[skip]) & 0xFFFF, None
            rest = rest[skip + 1 :]
        elif rest[0] in ("by", "with") and len(rest) > 1 and rest[1] not in ("core", "code", "exit"):
            sig, code = signal_name(rest[1]), None
            rest = rest[2:]
        elif rest[:3] in (["with", "core", "dump"], ["and", "dumps", "core"]) or rest[:2] == ["dumping", "core"]:
            core = True
            rest = rest[3:] if rest[0] != "dumping" else rest[2:]
        elif rest[:2] == ["during", "startup"]:
            startup = True
            rest = rest[2:]
        elif rest[0] in ("once", "twice"):
            count, rest = rest[:1], rest[1:]
        elif len(rest) >= 2 and rest[1] in ("times", "time"):
            count, rest = rest[:2], rest[2:]
        else:
            raise ScenarioError(f"{text!r}: cannot read {' '.join(rest)!r}")
    if verb == "crash-loops" and not count:
        raise ScenarioError(f"{text!r}: say how many times, e.g. 'api crash-loops 500 times'")
    if verb in ("starts", "is stopped", "is restarted") and (code is not None or sig is not None or startup):
        raise ScenarioError(f"{text!r}: '{verb}' takes only a count")
    if core and sig is None:
        raise ScenarioError(f"{text!r}: only a death by a signal dumps core")
    death = Death(code=code if sig is None else None, signal=sig, core=core, oom=verb == "is oom-killed")
    return (_times(count, text) if count else None), death, startup


def parse(text: str, model: Optional[Supervisord] = None) -> list[Step]:
    """Every step of a scenario file; errors name the line."""
    model = model or Supervisord()
    steps: list[Step] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            steps += model.play(line)
        except ScenarioError as e:
            raise ScenarioError(f"line {number}: {e}") from None
    return steps


def from_words(words: list[str], model: Optional[Supervisord] = None) -> list[Step]:
    """Steps from command-line words: sentences apart by ``,``, ``;`` or ``then``."""
    model = model or Supervisord()
    text = " ".join(words).replace(";", ",")
    sentences: list[str] = []
    for part in text.split(","):
        current: list[str] = []
        for word in part.split():
            if word.lower() == "then":
                sentences.append(" ".join(current))
                current = []
            else:
                current.append(word)
        sentences.append(" ".join(current))
    steps: list[Step] = []
    for sentence in sentences:
        if sentence.strip():
            steps += model.play(sentence)
    return steps


def generate(
    events: int, crashes: int = 0, oom_kills: int = 0, programs: int = 4, model: Optional[Supervisord] = None
) -> list[Step]:
    """A stream of exactly ``events`` events, for benchmarks: ``programs``
    programs start, then ``crashes`` crashes (exit status 1) and
    ``oom_kills`` OOM kills, each followed by supervisord's respawn, are
    spread evenly through routine traffic (restarts and TICK_5), taking the
    programs in turn."""
    model = model or Supervisord()
    incidents = 3 * (crashes + oom_kills)  # EXITED, STARTING, RUNNING each
    routine = events - 2 * programs - incidents
    if programs < 1 or min(crashes, oom_kills, routine) < 0:
        raise ScenarioError(
            f"{events} events cannot hold {programs} program starts, {crashes} crashes and "
            f"{oom_kills} OOM kills (at least {2 * programs + incidents})"
        )
    processes = [model.process(f"app{i}") for i in range(programs)]
    for p in processes:
        model.run(p)
    # Routine units: a restart (4 events) and a TICK_5 (1); ticks for the rest.
    units = ["restart", "tick"] * (routine // 5) + ["tick"] * (routine % 5)
    # Each incident at its even fraction of the stream, OOM kills among the crashes.
    incident_at = sorted(
        [(i / max(crashes, 1), False) for i in range(crashes)]
        + [((j + 0.5) / max(oom_kills, 1), True) for j in range(oom_kills)]
    )
    slots = len(units) + 1
    placed = turn = 0
    for u in range(slots):
        while placed < len(incident_at) and (incident_at[placed][0] * slots <= u or u == slots - 1):
            oom = incident_at[placed][1]
            model.die(processes[turn % programs], Death(signal="SIGKILL", oom=True) if oom else Death(code=1))
            turn += 1
            placed += 1
        if u < len(units):
            if units[u] == "tick":
                model.tick()
            else:
                model.stop(processes[turn % programs], "restart")
                model.run(processes[turn % programs])
                turn += 1
    return model.take()
