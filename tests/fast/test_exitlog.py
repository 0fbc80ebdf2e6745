from __future__ import annotations

import random
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.listener.exitlog import MAX_PER_PROCESS, ExitLog, parse_exit
from tests.helpers import examples

T = "2026-11-24 23:00:00,123"


def line(level: str, message: str) -> str:
    return f"{T} {level} {message}\n"


def spawned(name: str, pid: int) -> str:
    return line("INFO", f"spawned: '{name}' with pid {pid}")


def exited(name: str, how: str, expected: bool = False) -> str:
    level, word = ("INFO", "expected") if expected else ("WARN", "not expected")
    return line(level, f"exited: {name} ({how}; {word})")


@pytest.mark.parametrize(
    ("message", "code", "signal", "core", "expected"),
    [
        ("exited: web (exit status 3; not expected)", 3, None, False, False),
        ("exited: web (exit status 0; expected)", 0, None, False, True),
        ("exited: web (exit status 137; not expected)", 137, None, False, False),
        ("exited: web (terminated by SIGKILL; not expected)", None, 9, False, False),
        ("exited: web (terminated by SIGSEGV (core dumped); not expected)", None, 11, True, False),
        ("exited: web (terminated by SIGIOT (core dumped); not expected)", None, 6, True, False),
        ("exited: web (terminated by signal 99; not expected)", None, 99, False, False),
        ("exited: web (unknown termination cause 0x137f; not expected)", None, None, False, False),
    ],
)
def test_parse_exit(message: str, code: Optional[int], signal: Optional[int], core: bool, expected: bool) -> None:
    record = parse_exit(message)
    assert record is not None
    assert (record.name, record.code, record.signal, record.core_dumped, record.expected) == (
        "web",
        code,
        signal,
        core,
        expected,
    )


def test_signal_names_are_canonical() -> None:
    aborted = parse_exit("exited: x (terminated by SIGIOT; not expected)")
    odd = parse_exit("exited: x (terminated by signal 99; not expected)")
    assert aborted is not None and aborted.signal_name == "SIGABRT"
    assert odd is not None and odd.signal_name == "signal 99"


@pytest.mark.parametrize("name", ["wëb", "my app (v2)", "a b", "x;y", "日本"])
def test_parse_exit_odd_names(name: str) -> None:
    record = parse_exit(f"exited: {name} (exit status 3; not expected)")
    assert record is not None and record.name == name and record.code == 3


@pytest.mark.parametrize(
    "message",
    [
        "stopped: web (terminated by SIGTERM)",
        "exited: web (exit status x; not expected)",
        "exited: web",
        "gave up: web",
    ],
)
def test_parse_exit_ignores_other_lines(message: str) -> None:
    assert parse_exit(message) is None


def test_pid_pairs_exactly_when_the_log_runs_ahead() -> None:
    log = ExitLog()
    # Two deaths logged before the first EXITED event is handled.
    log.feed(spawned("web", 10) + exited("web", "exit status 1") + spawned("web", 11) + exited("web", "exit status 2"))
    first = log.take("web", 10)
    second = log.take("web", 11)
    assert first is not None and first.code == 1 and first.pid == 10
    assert second is not None and second.code == 2 and second.pid == 11
    assert log.take("web", 11) is None


def test_a_lost_event_does_not_shift_the_pairing() -> None:
    log = ExitLog()
    log.feed(spawned("web", 10) + exited("web", "exit status 1") + spawned("web", 11) + exited("web", "exit status 2"))
    record = log.take("web", 11)  # the event for pid 10 was discarded
    assert record is not None and record.code == 2
    assert log.take("web", 10) is None  # older records went with it


def test_backoff_pairs_in_order() -> None:
    log = ExitLog()
    log.feed(spawned("bad", 5) + exited("bad", "exit status 1") + spawned("bad", 6) + exited("bad", "exit status 2"))
    codes = [log.take("bad", None), log.take("bad", None)]
    assert [r.code if r else None for r in codes] == [1, 2]
    assert [r.pid if r else None for r in codes] == [5, 6]


def test_expected_exits_are_not_kept_and_our_own_are_not_the_programs() -> None:
    log = ExitLog(own_name="navi", own_pid=500)
    # loglevel=warn: no spawned lines, so no pids.
    log.feed(
        exited("job", "exit status 0", expected=True)
        + exited("job", "exit status 4")
        + exited("navi", "terminated by SIGKILL")  # a previous Navi's death
    )
    assert log.waiting() == 1 and log.sigkills_waiting() == 0  # Navi's own is no program's death
    record = log.take("job", 77)
    assert record is not None and record.code == 4
    own = log.take("navi", None)  # kept for its event: was the OOM killer's victim Navi itself?
    assert own is not None and own.signal == 9


def test_without_pids_unexpected_pair_in_order() -> None:
    log = ExitLog()
    log.feed(exited("w", "exit status 1") + exited("w", "terminated by SIGKILL"))
    first, second = log.take("w", 1), log.take("w", 2)
    assert first is not None and first.code == 1
    assert second is not None and second.signal == 9


def test_record_with_another_pid_is_not_taken() -> None:
    log = ExitLog()
    log.feed(spawned("w", 10) + exited("w", "exit status 1"))
    assert log.take("w", 99) is None  # its line is not logged yet
    record = log.take("w", 10)
    assert record is not None and record.code == 1


def test_new_supervisord_lifetime_forgets_the_old_one() -> None:
    log = ExitLog()
    log.feed(spawned("w", 10) + exited("w", "exit status 1") + line("INFO", "supervisord started with pid 99"))
    assert log.take("w", None) is None
    assert log.take("w", 10) is None


def test_records_before_our_own_spawn_match_only_by_pid() -> None:
    log = ExitLog(own_name="navi", own_pid=500)
    log.feed(
        spawned("w", 10)
        + exited("w", "exit status 1")  # handled by the Navi before us
        + spawned("navi", 500)
        + spawned("w", 11)
        + exited("w", "exit status 2")
    )
    backoff = log.take("w", None)
    assert backoff is not None and backoff.code == 2 and not backoff.stale
    log.feed(spawned("w", 12) + exited("w", "exit status 5"))
    redelivered = ExitLog(own_name="navi", own_pid=500)
    redelivered.feed(spawned("w", 10) + exited("w", "exit status 1") + spawned("navi", 500))
    record = redelivered.take("w", 10)
    assert record is not None and record.code == 1 and record.stale


def test_without_our_spawn_line_what_was_there_at_start_is_stale() -> None:
    # loglevel=warn after a restart of Navi: yesterday's lines must not be
    # paired with today's pid-less events.
    log = ExitLog(own_name="navi", own_pid=500)
    log.feed(exited("w", "terminated by SIGSEGV") + exited("w", "exit status 2"))
    log.first_read_done()
    assert log.take("w", None) is None
    log.feed(exited("w", "exit status 3"))
    record = log.take("w", None)
    assert record is not None and record.code == 3


def test_with_our_spawn_line_the_rest_is_live() -> None:
    log = ExitLog(own_name="navi", own_pid=500)
    log.feed(spawned("navi", 500) + spawned("w", 11) + exited("w", "exit status 2"))
    log.first_read_done()
    record = log.take("w", None)
    assert record is not None and record.code == 2 and not record.stale


def test_partial_lines_wait_for_the_rest() -> None:
    log = ExitLog()
    text = spawned("w", 10) + exited("w", "exit status 3")
    log.feed(text[:-10])
    assert log.take("w", 10) is None
    log.feed(text[-10:])
    record = log.take("w", 10)
    assert record is not None and record.code == 3
    assert record.line == text.splitlines()[1]


def test_memory_is_bounded_per_process() -> None:
    log = ExitLog()
    log.feed("".join(spawned("w", pid) + exited("w", f"exit status {pid % 200}") for pid in range(1, 1000)))
    assert len(log._records["w"]) == MAX_PER_PROCESS
    record = log.take("w", 999)
    assert record is not None and record.code == 999 % 200


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["web", "wëb", "worker", "a b"]),
            st.one_of(
                st.integers(0, 255).map(lambda c: f"exit status {c}"),
                st.sampled_from(["terminated by SIGKILL", "terminated by SIGSEGV (core dumped)"]),
            ),
            st.booleans(),  # EXITED (with pid) or BACKOFF (without)
        ),
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_every_event_gets_its_own_line(deaths: list[tuple[str, str, bool]], rnd: random.Random) -> None:
    """However the log is chunked and however far it runs ahead of the events,
    each event is paired with the line of its own death."""
    text, wanted = "", []
    for pid, (name, how, has_pid) in enumerate(deaths, start=100):
        text += spawned(name, pid) + line("INFO", f"success: {name} entered RUNNING state") + exited(name, how)
        want = parse_exit(f"exited: {name} ({how}; not expected)")
        assert want is not None
        wanted.append((name, pid if has_pid else None, pid, want, len(text)))
    log = ExitLog()
    fed = 0
    for name, event_pid, pid, want, logged_by in wanted:
        # supervisord logs a death before queueing its event, and may log
        # any number of later deaths before the event is handled.
        upto = rnd.randint(max(fed, logged_by), len(text))
        log.feed(text[fed:upto])
        fed = upto
        got = log.take(name, event_pid)
        assert got is not None
        assert (got.pid, got.code, got.signal, got.core_dumped) == (pid, want.code, want.signal, want.core_dumped)


def test_sigkills_waiting_counts_untaken_kills() -> None:
    log = ExitLog()
    log.feed(
        spawned("a", 1)
        + exited("a", "terminated by SIGKILL")
        + spawned("b", 2)
        + exited("b", "exit status 137")
        + spawned("c", 3)
        + exited("c", "terminated by SIGSEGV")
        + spawned("d", 4)
        + exited("d", "terminated by SIGKILL", expected=True)
    )
    assert log.sigkills_waiting() == 2
    log.take("a", 1)
    assert log.sigkills_waiting() == 1


def test_the_navi_before_this_one_killed_by_sigkill_is_a_death_still_to_come() -> None:
    """Its EXITED may come after a TICK it was busy with: until then, a kill
    counted waits for it.  Not an older Navi's, nor one that was stopped."""
    lines = [
        "2026-12-01 03:00:00,000 INFO spawned: 'navi' with pid 5",
        "2026-12-01 03:00:01,000 WARN exited: navi (terminated by SIGKILL; not expected)",  # handled by pid 7
        "2026-12-01 03:00:01,100 INFO spawned: 'navi' with pid 7",
        "2026-12-01 03:00:05,100 WARN exited: navi (terminated by SIGKILL; not expected)",
        "2026-12-01 03:00:05,200 INFO spawned: 'navi' with pid 99",
    ]
    log = ExitLog("navi", own_pid=99)
    log.feed("".join(line + "\n" for line in lines))
    log.first_read_done()
    assert log.waiting() == 1
    assert log.take("navi", 7) is not None
    assert log.waiting() == 0
    stopped = ExitLog("navi", own_pid=99)
    stopped.feed(
        "".join(
            line + "\n"
            for line in [*lines[:3], "2026-12-01 03:00:05,100 WARN stopped: navi (terminated by SIGTERM)", lines[4]]
        )
    )
    stopped.first_read_done()
    assert stopped.waiting() == 0
