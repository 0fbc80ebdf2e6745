"""The fake supervisord's pure core: its envelopes and payloads are
supervisor's own, its reading of a listener's stdout is supervisor's
PEventListenerDispatcher's, and its scenarios follow supervisord's process
state machine."""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from navi.eventlistener import OK, READY, ListenerState, ProtocolMisuse
from navi.fake.record import current_lifetime, header_line
from navi.fake.scenario import (
    Log,
    Memory,
    Program,
    Say,
    ScenarioError,
    Send,
    Step,
    Supervisord,
    from_words,
    generate,
    parse,
    payload,
)
from navi.fake.wire import Ready, Result, Supervisor, Violation, envelope_text
from navi.listener.protocol import Event
from tests.helpers import drive, examples

# supervisor itself, to hold the fake to.  (Imported by name: it has no type
# hints, and this repository's supervisor/ directory, the shipped
# configuration, looks like a namespace package to the linters.)
sup_events = importlib.import_module("supervisor.events")
sup_dispatchers = importlib.import_module("supervisor.dispatchers")
sup_process = importlib.import_module("supervisor.process")
sup_states = importlib.import_module("supervisor.states")
EventListenerStates = sup_states.EventListenerStates
ProcessStates = sup_states.ProcessStates

names = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters=":"), min_size=1, max_size=12
)

# ---- envelopes and payloads are supervisor's own ------------------------------------------


@given(
    st.sampled_from(
        [
            "PROCESS_STATE_EXITED",
            "PROCESS_STATE_BACKOFF",
            "TICK_5",
            "PROCESS_COMMUNICATION_STDOUT",
            "SUPERVISOR_STATE_CHANGE_RUNNING",
        ]
    ),
    st.text(max_size=80),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    names,
)
def test_envelope_is_what_supervisor_writes(eventname: str, text: str, serial: int, poolserial: int, pool: str) -> None:
    stub = SimpleNamespace(config=SimpleNamespace(options=SimpleNamespace(identifier="supervisor"), name=pool))
    event_type = getattr(sup_events.EventTypes, eventname)
    theirs = sup_process.EventListenerPool._eventEnvelope(stub, event_type, serial, poolserial, text)
    assert envelope_text(eventname, text, serial, poolserial, pool) == theirs


STATE_EVENTS = {
    "STARTING": sup_events.ProcessStateStartingEvent,
    "BACKOFF": sup_events.ProcessStateBackoffEvent,
    "RUNNING": sup_events.ProcessStateRunningEvent,
    "EXITED": sup_events.ProcessStateExitedEvent,
    "STOPPING": sup_events.ProcessStateStoppingEvent,
    "STOPPED": sup_events.ProcessStateStoppedEvent,
    "FATAL": sup_events.ProcessStateFatalEvent,
}


@given(
    names,
    names,
    st.sampled_from(sorted(STATE_EVENTS)),
    st.sampled_from(["STOPPED", "STARTING", "RUNNING", "BACKOFF", "EXITED"]),
    st.integers(1, 4194304),
    st.integers(0, 9),
    st.booleans(),
)
def test_payloads_are_what_supervisor_writes(
    name: str, group: str, state: str, from_state: str, pid: int, tries: int, expected: bool
) -> None:
    process = SimpleNamespace(
        config=SimpleNamespace(name=name),
        group=SimpleNamespace(config=SimpleNamespace(name=group)),
        pid=pid,
        backoff=tries,
    )
    theirs = STATE_EVENTS[state](process, getattr(ProcessStates, from_state), expected).payload()
    extra: dict[str, Any] = {
        "STARTING": {"tries": tries},
        "BACKOFF": {"tries": tries},
        "EXITED": {"expected": int(expected), "pid": pid},
        "FATAL": {},
    }.get(state, {"pid": pid})
    assert payload(Program(name, group), from_state, **extra) == theirs


def acknowledged(sup: Supervisor) -> None:
    """The listener's side of one exchange, as the checker sees it."""
    assert sup.receive_data(b"RESULT 2\nOK") == [Result(b"OK")]


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.tuples(st.sampled_from(["PROCESS_STATE_EXITED", "TICK_5", "X"]), st.text(max_size=40), names), max_size=10
    )
)
def test_envelopes_parse_back_with_navis_reader(events: list[tuple[str, str, str]]) -> None:
    """len counts characters: a non-ASCII name never desyncs the reader."""
    sup = Supervisor(pool="navi")
    data = b""
    for eventname, text, name in events:
        assert sup.receive_data(READY) == [Ready()]
        data += sup.envelope(eventname, f"processname:{name} {text}")
        acknowledged(sup)
    results, _ = drive([data])
    assert [
        (r.name, r.payload, r.header["serial"], r.header["poolserial"]) for r in results if isinstance(r, Event)
    ] == [(eventname, f"processname:{name} {text}", str(i), str(i)) for i, (eventname, text, name) in enumerate(events)]


def test_a_recorded_header_is_sent_as_it_was_and_serials_follow_on() -> None:
    sup = Supervisor(pool="navi")
    sup.receive_data(READY)
    header = "ver:3.0 server:supervisor serial:41 pool:rec poolserial:7 eventname:TICK_5 len:6"
    assert sup.envelope("TICK_5", "when:5", header) == (header + "\nwhen:5").encode()
    acknowledged(sup)
    sup.receive_data(READY)
    assert sup.envelope("TICK_5", "when:10").startswith(b"ver:3.0 server:supervisor serial:42 pool:navi poolserial:8 ")


def test_the_first_serial_is_zero_as_in_supervisord() -> None:
    sup = Supervisor()
    sup.receive_data(READY)
    assert b" serial:0 " in sup.envelope("TICK_5", "when:5")


# ---- reading the listener's stdout as supervisord does --------------------------------------


def test_a_clean_exchange() -> None:
    sup = Supervisor()
    assert sup.receive_data(b"REA") == []  # waits for six bytes, as supervisord does
    assert sup.receive_data(b"DY\n") == [Ready()]
    with pytest.raises(ProtocolMisuse):
        sup.resend()
    sup.envelope("TICK_5", "when:5")
    assert sup.receive_data(b"RESULT 2\n") == []
    assert sup.receive_data(b"OKREADY\n") == [Result(b"OK"), Ready()]
    assert sup.state is ListenerState.READY


@pytest.mark.parametrize("before", [b"", b"RESU"])
def test_the_usual_answer_in_one_read_is_read_as_byte_by_byte(before: bytes) -> None:
    seen = []
    for whole in (True, False):
        sup = Supervisor()
        sup.receive_data(READY)
        sup.envelope("TICK_5", "when:5")
        got = sup.receive_data(before)
        rest = b"RESULT 2\nOK"[len(before) :] + READY
        reads = [rest] if whole else [rest[i : i + 1] for i in range(len(rest))]
        for data in reads:
            got += sup.receive_data(data)
        seen.append((got, sup.state, sup.at_rest, sup.in_flight))
    assert seen[0] == seen[1] == ([Result(b"OK"), Ready()], ListenerState.READY, True, None)


def test_a_rejected_event_is_sent_again() -> None:
    sup = Supervisor()
    sup.receive_data(READY)
    first = sup.envelope("TICK_5", "when:5")
    (result, ready) = sup.receive_data(b"RESULT 4\nFAILREADY\n")
    assert isinstance(result, Result) and not result.accepted and ready == Ready()
    assert sup.resend() == first


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (b"Starting...\nREADY\n", r"wrote b'Starti' where only READY\\n may come"),
        (READY + b"RESULT 2\nOK\nREADY\n", r"after its RESULT: the result must not end with a newline"),
        (READY + b"hello\n", r"wrote b'hello' where its RESULT <length> line should be \(a stray print"),
        (READY + b"RESULT two\nOK", r"wrote b'RESULT two' where its RESULT <length> line should be; "),
        (READY + b"RESULT -1\nOK", r"where its RESULT <length> line should be"),
    ],
)
def test_each_violation_is_one_clear_line(output: bytes, reason: str) -> None:
    sup = Supervisor()
    answers = []
    for i in range(len(output)):  # byte by byte: an event goes out the moment READY comes
        answers += sup.receive_data(output[i : i + 1])
        if sup.state is ListenerState.READY:
            sup.envelope("TICK_5", "when:5")
    violations = [a for a in answers if isinstance(a, Violation)]
    assert len(violations) == 1 and violations[0].fatal
    assert re.search(reason, violations[0].reason), violations[0].reason
    assert violations[0].reason.endswith("sends it no more events") or "another one" in violations[0].reason
    assert sup.state is ListenerState.UNKNOWN
    assert sup.receive_data(READY) == []  # no way back


def test_bytes_in_the_same_read_as_ready_are_bytes_while_ready() -> None:
    sup = Supervisor()
    (ready, violation) = sup.receive_data(READY + b"debug: started\n")
    assert ready == Ready() and isinstance(violation, Violation)
    assert "after READY, while it should wait for an event" in violation.reason


@pytest.mark.parametrize(
    ("line", "warning"), [(b"XXXXXXX2", "does not start with 'RESULT '"), (b"RESULT  2", "not plain digits")]
)
def test_what_supervisor_lets_pass_is_a_warning(line: bytes, warning: str) -> None:
    sup = Supervisor()
    sup.receive_data(READY)
    sup.envelope("TICK_5", "when:5")
    (violation, result) = sup.receive_data(line + b"\nOK")
    assert isinstance(violation, Violation) and not violation.fatal and warning in violation.reason
    assert result == Result(b"OK")


class _Logger:
    def __getattr__(self, level: str) -> Any:
        return lambda message: None


def _supervisors_reader() -> tuple[Any, SimpleNamespace, list[bytes]]:
    results: list[bytes] = []

    def handler(event: object, response: bytes) -> None:
        results.append(response)
        sup_dispatchers.default_handler(event, response)

    options = SimpleNamespace(logger=_Logger(), strip_ansi=False)
    process = SimpleNamespace(
        config=SimpleNamespace(name="navi", options=options, stdout_logfile=None),
        group=SimpleNamespace(config=SimpleNamespace(result_handler=handler)),
        event=None,
        listener_state=None,
    )
    return sup_dispatchers.PEventListenerDispatcher(process, "stdout", 0), process, results


PIECES = [
    READY,
    b"RESULT 2\nOK",
    b"RESULT 4\nFAIL",
    b"RESULT ",
    b"2",
    b"\n",
    b"OK",
    b"READY",
    b"X",
    b"hello\n",
    b"RESULT 0\n",
    b" ",
    b"RESULT 12\n",
]
chunky = st.lists(
    st.one_of(st.sampled_from(PIECES), st.binary(max_size=4).filter(lambda b: b"-" not in b)), max_size=14
).map(b"".join)


@settings(max_examples=examples(500))
@given(chunky, st.lists(st.integers(0, 200), max_size=8))
def test_verdicts_are_supervisors_own(output: bytes, cuts: list[int]) -> None:
    """Fed the same reads, supervisor's real dispatcher and the checker agree
    on the listener's state after each read, and on every result."""
    theirs, process, their_results = _supervisors_reader()
    process.listener_state = EventListenerStates.ACKNOWLEDGED
    ours = Supervisor()
    our_results = []
    points = sorted({c % (len(output) + 1) for c in cuts} | {len(output)})
    start = 0
    for point in points:
        chunk = output[start:point]
        start = point
        if not chunk:
            continue
        our_results += [a.body for a in ours.receive_data(chunk) if isinstance(a, Result)]
        theirs.state_buffer += chunk
        theirs.handle_listener_state_change()
        assert ours.state.value == sup_states.getEventListenerStateDescription(process.listener_state)
        if ours.state is ListenerState.READY:  # dispatch an event to both
            ours.envelope("TICK_5", "when:5")
            process.listener_state, process.event = EventListenerStates.BUSY, object()
    assert our_results == their_results


def clean_output(bodies: list[bytes]) -> bytes:
    return READY + b"".join(b"RESULT %d\n%s" % (len(b), b) + READY for b in bodies)


def accepts(output: bytes) -> bool:
    """A reference reading of the protocol: READY, then RESULT <digits>,
    that many bytes and READY again, any number of times."""
    m = re.match(rb"READY\n", output)
    while m is not None:
        rest = output[m.end() :]
        if not rest:
            return True
        head = re.match(rb"RESULT ([0-9]+)\n", rest)
        if head is None:
            return False
        body_end = head.end() + int(head.group(1))
        if len(rest) < body_end or rest[body_end : body_end + len(READY)] != READY:
            return False
        output = rest[body_end:]
        m = re.match(rb"READY\n", output)
    return False


def check_byte_by_byte(output: bytes) -> tuple[bool, list[bytes]]:
    """(no violation and nothing left half-said, the results), sending an
    event the moment the listener is READY."""
    sup = Supervisor()
    results, violations = [], []
    for i in range(len(output)):
        for answer in sup.receive_data(output[i : i + 1]):
            if isinstance(answer, Violation):
                violations.append(answer)
            elif isinstance(answer, Result):
                results.append(answer.body)
        if sup.state is ListenerState.READY:
            sup.envelope("TICK_5", "when:5")
    return (not violations and sup.state is ListenerState.BUSY and sup.at_rest), results


@given(st.lists(st.binary(max_size=20), max_size=6))
def test_valid_output_is_accepted_with_its_results(bodies: list[bytes]) -> None:
    clean, results = check_byte_by_byte(clean_output(bodies))
    assert clean and results == bodies


@settings(max_examples=examples(500))
@given(st.lists(st.sampled_from([b"OK", b"FAIL", b"", b"\n"]), max_size=4), st.data())
def test_exactly_valid_output_is_accepted(bodies: list[bytes], data: st.DataObject) -> None:
    """Mutated output (a byte inserted, dropped or changed anywhere) is
    accepted exactly when the reference reading accepts it."""
    output = bytearray(clean_output(bodies))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(output)))
        kind = data.draw(st.sampled_from(["insert", "drop", "change"]))
        byte = data.draw(st.sampled_from([*b"\nRESULT 0129OKREADY", 0, 255]))
        if kind == "insert":
            output[at:at] = bytes([byte])
        elif at < len(output):
            output[at : at + 1] = b"" if kind == "drop" else bytes([byte])
    assume(b"-" not in output)
    clean, _ = check_byte_by_byte(bytes(output))
    assert clean == accepts(bytes(output))


# ---- scenarios --------------------------------------------------------------------------------


def said(text: str) -> list[Step]:
    """The steps of command-line words."""
    return from_words(text.split())


def events_of(steps: list[Step]) -> list[tuple[str, str]]:
    return [(s.eventname, s.payload) for s in steps if isinstance(s, Send)]


def log_messages(steps: list[Step]) -> list[str]:
    return [s.line.split(" ", 3)[3] for s in steps if isinstance(s, Log)]


def test_a_crash_with_code_3() -> None:
    steps = from_words(["web", "crashes", "with", "code", "3"])
    assert steps[0] == Say("web crashes with code 3")
    assert events_of(steps) == [
        ("PROCESS_STATE_STARTING", "processname:web groupname:web from_state:STOPPED tries:0"),
        ("PROCESS_STATE_RUNNING", "processname:web groupname:web from_state:STARTING pid:4200000"),
        ("PROCESS_STATE_EXITED", "processname:web groupname:web from_state:RUNNING expected:0 pid:4200000"),
        ("PROCESS_STATE_STARTING", "processname:web groupname:web from_state:EXITED tries:0"),
        ("PROCESS_STATE_RUNNING", "processname:web groupname:web from_state:STARTING pid:4200001"),
    ]
    assert log_messages(steps) == [
        "spawned: 'web' with pid 4200000",
        "success: web entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)",
        "exited: web (exit status 3; not expected)",
        "spawned: 'web' with pid 4200001",
        "success: web entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)",
    ]
    # Each line is in the log before its event arrives.
    assert [type(s).__name__ for s in steps[1:]] == ["Log", "Send"] * 5


def test_an_oom_kill_raises_the_counter_before_the_death_is_logged() -> None:
    steps = said("worker is OOM-killed twice")
    memory = [i for i, s in enumerate(steps) if isinstance(s, Memory)]
    exited = [i for i, s in enumerate(steps) if isinstance(s, Log) and "exited:" in s.line]
    assert [steps[i] for i in memory] == [Memory(1, True), Memory(2, True)]
    assert [m < e for m, e in zip(memory, exited)] == [True, True] and memory[1] > exited[0]
    assert log_messages(steps).count("exited: worker (terminated by SIGKILL; not expected)") == 2


def test_a_crash_loop_is_exited_and_respawned_forever_never_fatal() -> None:
    steps = said("api crash-loops 500 times")
    names = Counter(e for e, _ in events_of(steps))
    assert names == {"PROCESS_STATE_STARTING": 501, "PROCESS_STATE_RUNNING": 501, "PROCESS_STATE_EXITED": 500}
    assert sum(m == "exited: api (exit status 1; not expected)" for m in log_messages(steps)) == 500


def test_failing_at_start_backs_off_then_is_fatal() -> None:
    model = Supervisord()
    steps = parse("program db startretries 1\ndb fails to start with code 2\n", model)
    assert events_of(steps) == [
        ("PROCESS_STATE_STARTING", "processname:db groupname:db from_state:STOPPED tries:0"),
        ("PROCESS_STATE_BACKOFF", "processname:db groupname:db from_state:STARTING tries:1"),
        ("PROCESS_STATE_STARTING", "processname:db groupname:db from_state:BACKOFF tries:1"),
        ("PROCESS_STATE_BACKOFF", "processname:db groupname:db from_state:STARTING tries:2"),
        ("PROCESS_STATE_FATAL", "processname:db groupname:db from_state:BACKOFF"),
    ]
    assert log_messages(steps)[-2:] == [
        "exited: db (exit status 2; not expected)",
        "gave up: db entered FATAL state, too many start retries too quickly",
    ]
    with pytest.raises(ScenarioError, match="FATAL after 2 attempts"):
        model.play("db fails to start 3 times")


def test_an_expected_exit_and_autorestart() -> None:
    model = Supervisord()
    steps = parse("program a exitcodes 0,2\na exits with code 2\nprogram b autorestart true\nb exits\n", model)
    exits = [p for e, p in events_of(steps) if e == "PROCESS_STATE_EXITED"]
    assert [("expected:1" in p) for p in exits] == [True, True]
    assert "exited: a (exit status 2; expected)" in log_messages(steps)
    assert events_of(steps)[-1][0] == "PROCESS_STATE_RUNNING"  # b is restarted unconditionally
    assert [e for e, p in events_of(steps) if "processname:a " in p][-1] == "PROCESS_STATE_EXITED"  # a is not


def test_signals_stops_ticks_and_raw_lines() -> None:
    steps = parse(
        "web is killed by SEGV with core dump\nweb is stopped\ntick 2 times\n"
        "log WARN exited: x (exit status 9; not expected)\nevent PROCESS_STATE_FATAL processname:x groupname:x "
        "from_state:BACKOFF\noom_kill +2\nweb's child is OOM-killed\nmemory 80%\n"
    )
    messages = log_messages(steps)
    assert "exited: web (terminated by SIGSEGV (core dumped); not expected)" in messages
    assert "stopped: web (terminated by SIGTERM)" in messages
    assert "exited: x (exit status 9; not expected)" in messages
    evs = events_of(steps)
    assert [e for e, _ in evs[-5:]] == [
        "PROCESS_STATE_STOPPING",
        "PROCESS_STATE_STOPPED",
        "TICK_5",
        "TICK_5",
        "PROCESS_STATE_FATAL",
    ]
    ticks = [int(p.split(":")[1]) for e, p in evs if e == "TICK_5"]
    assert all(t % 5 == 0 for t in ticks) and ticks[1] - ticks[0] == 5
    assert [s for s in steps if isinstance(s, Memory)] == [Memory(2, True), Memory(3, True), Memory(3, False, 0.8)]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("web explodes", "line 2: 'web explodes': no verb I know"),
        ("web crashes 3 tims", "cannot read '3 tims'"),
        ("web is killed by SIGNOPE", "unknown signal 'signope'"),
        ("api crash-loops", "say how many times"),
        ("web starts with code 3", "takes only a count"),
        ("web crashes with core dump", "only a death by a signal dumps core"),
        ("program web startsecs soon", "cannot set startsecs to 'soon'"),
        ('{"nothing": 1}', "a recorded line has log"),
        ("memory 120%", "say memory N% (the share of the limit in use, 0 to 100)"),
        ("memory lots", "say memory N%"),
    ],
)
def test_scenario_errors_say_what_and_where(text: str, error: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse(f"# a comment\n{text}\n")
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_words_are_split_into_sentences() -> None:
    steps = said("web crashes, worker is OOM-killed then api crash-loops 2 times; tick")
    assert [s.text for s in steps if isinstance(s, Say)] == [
        "web crashes",
        "worker is OOM-killed",
        "api crash-loops 2 times",
        "tick",
    ]


def test_a_recording_is_a_scenario() -> None:
    header = "ver:3.0 server:supervisor serial:7 pool:rec poolserial:3 eventname:PROCESS_STATE_EXITED len:5"
    text = "\n".join(
        json.dumps(r)
        for r in [
            {"time": "t", "log": "2026-11-24 23:00:05,456 WARN exited: web (exit status 3; not expected)"},
            {"time": "t", "oom_kills": 1},
            {"time": "t", "header": header, "payload": "a:b c"},
        ]
    )
    assert parse(text) == [
        Log("2026-11-24 23:00:05,456 WARN exited: web (exit status 3; not expected)"),
        Memory(1, True),
        Send("PROCESS_STATE_EXITED", "a:b c", header),
    ]


ALLOWED = {
    "STOPPED": {"STARTING"},
    "STARTING": {"RUNNING", "BACKOFF", "STOPPING"},
    "RUNNING": {"EXITED", "STOPPING"},
    "BACKOFF": {"STARTING", "FATAL", "STOPPED"},
    "EXITED": {"STARTING"},
    "FATAL": {"STARTING"},
    "STOPPING": {"STOPPED"},
}
sentences = st.tuples(
    st.sampled_from(["web", "wörker", "api"]),
    st.sampled_from(
        [
            "crashes",
            "exits",
            "is OOM-killed",
            "is killed by SIGSEGV",
            "segfaults",
            "fails to start",
            "crashes during startup",
            "starts",
            "is stopped",
            "is restarted",
            "crash-loops 3 times",
        ]
    ),
    st.sampled_from(["", " twice"]),
).map(lambda t: f"{t[0]} {t[1]}{t[2] if 'crash-loops' not in t[1] else ''}")


@settings(max_examples=examples(300))
@given(st.lists(sentences, max_size=12))
def test_every_scenario_is_a_walk_supervisord_can_take(lines: list[str]) -> None:
    """Per program, each event starts from the state the last one left, by
    a transition supervisord makes; EXITED and STOPPED carry the pid of the
    last spawn, and each death is logged before its event."""
    model = Supervisord()
    steps: list[Step] = []
    for line in lines:
        try:
            steps += model.play(line)
        except ScenarioError as e:  # e.g. a stop of a program that is not running: the scenario ends
            assert "\n" not in str(e)
            break
    state: dict[str, str] = {}
    spawned: dict[str, int] = {}
    last_log: Optional[str] = None
    for step in steps:
        if isinstance(step, Log):
            last_log = step.line
            m = re.search(r"spawned: '(.+)' with pid (\d+)", step.line)
            if m:
                spawned[m.group(1)] = int(m.group(2))
        elif isinstance(step, Send) and step.eventname.startswith("PROCESS_STATE_"):
            fields = dict(t.split(":", 1) for t in step.payload.split())
            name, new = fields["processname"], step.eventname[len("PROCESS_STATE_") :]
            before = state.get(name, "STOPPED")
            assert fields["from_state"] == before and new in ALLOWED[before], (name, before, new)
            if new in ("EXITED", "RUNNING", "STOPPING"):
                assert int(fields["pid"]) == spawned[name]
            if new in ("EXITED", "BACKOFF"):
                assert last_log is not None and f"exited: {name} (" in last_log
            state[name] = new


@pytest.mark.parametrize(("events", "crashes", "ooms"), [(10000, 1000, 100), (1000, 0, 0), (8 + 3 * 7, 7, 0)])
def test_generate_makes_exactly_the_stream_asked_for(events: int, crashes: int, ooms: int) -> None:
    steps = generate(events, crashes, ooms)
    sent = [s for s in steps if isinstance(s, Send)]
    assert len(sent) == events
    exits = [s for s in steps if isinstance(s, Log) and "exited:" in s.line]
    assert sum("exit status 1" in s.line for s in exits) == crashes
    assert sum("SIGKILL" in s.line for s in exits) == ooms
    assert [s.oom_kill for s in steps if isinstance(s, Memory)] == list(range(1, ooms + 1))
    assert sum(s.eventname == "PROCESS_STATE_EXITED" for s in sent) == crashes + ooms
    with pytest.raises(ScenarioError, match="cannot hold"):
        generate(10, 5, 0)


# ---- the recorder's pure parts --------------------------------------------------------------


def test_the_recording_starts_at_the_current_supervisord() -> None:
    old = "2026-11-24 22:00:00,000 INFO supervisord started with pid 1\n2026-11-24 22:00:01,000 WARN exited: a\n"
    new = "2026-11-24 23:00:00,000 INFO supervisord started with pid 9\n2026-11-24 23:00:01,000 INFO spawned\n"
    assert current_lifetime(old + new) == new
    assert current_lifetime("no start line\n") == "no start line\n"


def test_the_recorded_header_is_the_line_that_came() -> None:
    line = "ver:3.0 server:supervisor serial:7 pool:navi poolserial:3 eventname:TICK_5 len:6"
    results, out = drive([(line + "\nwhen:5").encode()])
    assert isinstance(results[0], Event) and header_line(results[0]) == line
    assert out == READY + OK + READY
