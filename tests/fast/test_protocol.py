from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.eventlistener import OK, READY, ListenerState, ProtocolMisuse
from navi.listener.protocol import (
    CLOSED,
    MAX_HEADER_BYTES,
    NEED_DATA,
    BadInput,
    Event,
    Listener,
)
from tests.helpers import drive, envelope, examples


def test_one_event_is_parsed_and_acknowledged() -> None:
    payload = "processname:web groupname:web from_state:RUNNING expected:0 pid:4242"
    results, out = drive([envelope("PROCESS_STATE_EXITED", payload, serial=7)])
    (event,) = results
    assert isinstance(event, Event)
    assert event.name == "PROCESS_STATE_EXITED"
    assert event.header["serial"] == "7"
    assert event.header["len"] == str(len(payload))
    assert event.payload == payload
    assert event.fields == {
        "processname": "web",
        "groupname": "web",
        "from_state": "RUNNING",
        "expected": "0",
        "pid": "4242",
    }
    assert out == READY + OK + READY
    assert OK == b"RESULT 2\nOK"  # no trailing newline


def test_len_counts_characters_not_bytes() -> None:
    # supervisor issue #1243: a byte-exact reader would stall or desync here.
    first = "processname:wëb groupname:wëb from_state:RUNNING expected:0 pid:1"
    second = "processname:api groupname:api from_state:RUNNING expected:0 pid:2"
    assert len(first.encode()) != len(first)
    results, _ = drive([envelope("PROCESS_STATE_EXITED", first, 1) + envelope("PROCESS_STATE_EXITED", second, 2)])
    assert [r.fields["processname"] for r in results if isinstance(r, Event)] == ["wëb", "api"]


def test_multibyte_character_split_across_reads() -> None:
    data = envelope("PROCESS_STATE_EXITED", "processname:日本 groupname:g pid:1")
    cut = data.index("日".encode()) + 1  # inside the character
    results, _ = drive([data[:cut], data[cut:]])
    assert isinstance(results[0], Event)
    assert results[0].fields["processname"] == "日本"


def test_empty_payload_and_free_text_after_first_line() -> None:
    comm = "processname:x groupname:x pid:3\nline one\nline two"
    results, _ = drive(
        [envelope("SUPERVISOR_STATE_CHANGE_RUNNING", ""), envelope("PROCESS_COMMUNICATION_STDOUT", comm)]
    )
    assert isinstance(results[0], Event) and results[0].payload == "" and results[0].fields == {}
    assert isinstance(results[1], Event) and results[1].payload == comm and results[1].fields["pid"] == "3"


def test_invalid_utf8_counts_one_character_per_byte() -> None:
    raw = b"ver:3.0 eventname:PROCESS_STATE_EXITED len:5\nab\xff\xfecd" + envelope("TICK_5", "when:1")
    results, _ = drive([raw])
    assert isinstance(results[0], Event) and results[0].payload == "ab\ufffd\ufffdc"
    # The "d" left over runs into the next header line, which is still usable.
    assert len(results) == 2 and isinstance(results[1], Event) and results[1].name == "TICK_5"


def test_malformed_header_is_acknowledged_and_reported() -> None:
    results, out = drive([b"this is not a header\n"])
    (bad,) = results
    assert isinstance(bad, BadInput) and "malformed header" in bad.reason
    assert out == READY + OK + READY


@pytest.mark.parametrize(
    "header", [b"eventname:X len:-1\n", b"eventname:X len:1e3\n", b"len:3\n", b"eventname:X len:\xd9\xa3\n"]
)
def test_bad_len_or_missing_eventname(header: bytes) -> None:
    results, _ = drive([header])
    assert len(results) == 1 and isinstance(results[0], BadInput)


def test_overlong_header_line_is_dropped() -> None:
    results, out = drive([b"x" * (MAX_HEADER_BYTES + 10)])
    assert isinstance(results[0], BadInput) and "longer than" in results[0].reason
    assert out.count(OK) == 1


def test_huge_payload_is_skipped_without_losing_sync() -> None:
    big = "x" * 5000
    results, _ = drive([envelope("PROCESS_COMMUNICATION_STDOUT", big), envelope("TICK_5", "when:9")], max_payload=100)
    assert isinstance(results[0], BadInput) and "5000 characters" in results[0].reason
    assert isinstance(results[1], Event) and results[1].fields == {"when": "9"}


def test_eof_inside_payload_then_closed() -> None:
    data = envelope("PROCESS_STATE_EXITED", "processname:web groupname:web pid:1")
    results, out = drive([data[:-5]])
    assert len(results) == 1 and isinstance(results[0], BadInput) and "closed" in results[0].reason
    assert out == READY + OK + READY


def test_eof_inside_header() -> None:
    results, _ = drive([b"ver:3.0 eventname:TI"])
    assert len(results) == 1 and isinstance(results[0], BadInput)


def test_clean_eof_is_closed() -> None:
    assert drive([]) == ([], READY)


def test_tokens_only_in_protocol_order() -> None:
    proto = Listener()
    with pytest.raises(ProtocolMisuse):
        proto.send_ok()
    with pytest.raises(ProtocolMisuse):
        proto.next_event()
    assert proto.send_ready() == READY
    with pytest.raises(ProtocolMisuse):
        proto.send_ready()
    proto.receive_data(envelope("TICK_5", "when:1"))
    assert isinstance(proto.next_event(), Event)
    assert proto.state is ListenerState.BUSY
    assert proto.send_ok() == OK


# --- properties ---------------------------------------------------------------

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters=":"),
    min_size=1,
    max_size=12,
)
payloads = st.one_of(
    st.builds(
        lambda n, g, pid: f"processname:{n} groupname:{g} from_state:RUNNING expected:0 pid:{pid}",
        names,
        names,
        st.integers(1, 2**22),
    ),
    st.builds(lambda w: f"when:{w}", st.integers(0, 2**32)),
    st.just(""),
    st.text(max_size=200),  # anything at all, newlines and astral characters included
)
streams = st.lists(
    st.tuples(st.sampled_from(["PROCESS_STATE_EXITED", "PROCESS_STATE_BACKOFF", "TICK_5", "X"]), payloads),
    max_size=12,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for p in [*points, len(data)]:
        if p > start:
            chunks.append(data[start:p])
            start = p
    return chunks


@settings(max_examples=examples(300))
@given(streams, st.lists(st.integers(0, 10**6), max_size=30))
def test_any_valid_stream_split_anywhere_gives_the_same_events(events: list[tuple[str, str]], cuts: list[int]) -> None:
    data = b"".join(envelope(name, payload, serial) for serial, (name, payload) in enumerate(events))
    results, out = drive(split(data, cuts))
    assert [(r.name, r.payload, r.header["serial"]) for r in results if isinstance(r, Event)] == [
        (name, payload, str(serial)) for serial, (name, payload) in enumerate(events)
    ]
    assert out == READY + (OK + READY) * len(events)


@settings(max_examples=examples(300))
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_input_yields_only_protocol_tokens(chunks: list[bytes]) -> None:
    results, out = drive([c for c in chunks if c])
    # Exactly READY, then OK+READY per result: nothing else can come out.
    assert out == READY + (OK + READY) * len(results)


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_memory_stays_bounded(data: bytes, chunk: int) -> None:
    proto = Listener(max_payload_chars=32)
    proto.send_ready()
    for i in range(0, len(data), chunk):
        proto.receive_data(data[i : i + chunk])
        got: object = proto.next_event()
        while got is not NEED_DATA:
            if got is CLOSED:
                return
            proto.send_ok()
            proto.send_ready()
            got = proto.next_event()
        assert len(proto._buffer) <= MAX_HEADER_BYTES + chunk
        assert proto._kept <= 32


def test_payload_dict_keeps_value_colons() -> None:
    results, _ = drive([envelope("PROCESS_STATE_EXITED", "processname:a:b groupname:g")])
    assert isinstance(results[0], Event)
    fields: dict[str, str] = results[0].fields
    assert fields["processname"] == "a:b"


def test_a_long_random_run_mixing_events_and_garbage() -> None:
    """Thousands of reads of valid events, junk lines and lens far larger than
    what follows: only tokens come out, and the parser keeps finding valid
    events after the junk (a huge len swallows what follows it, as it would
    in supervisord's own reader)."""
    import random

    rnd = random.Random(1243)
    chunks: list[bytes] = []
    valid = 0
    for serial in range(20000):
        kind = rnd.random()
        if kind < 0.6:
            chunks.append(envelope("PROCESS_STATE_EXITED", f"processname:wëb{serial} groupname:g pid:{serial}", serial))
            valid += 1
        elif kind < 0.8:
            chunks.append(rnd.randbytes(rnd.randint(1, 200)).replace(b"\n", b"") + b"\n")
        else:
            chunks.append(b"ver:3.0 eventname:X len:" + str(rnd.randint(0, 10**6)).encode() + b"\n")
    # Split the stream at random points, as reads would.
    data = b"".join(chunks)
    cuts = sorted(rnd.sample(range(len(data)), 5000))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    results, out = drive(pieces, max_payload=1000)
    assert out == READY + (OK + READY) * len(results)
    understood = [r for r in results if isinstance(r, Event) and r.name == "PROCESS_STATE_EXITED"]
    assert 0 < len(understood) <= valid
