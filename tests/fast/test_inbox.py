"""The consumer's pure core: what a directory entry is, the order of names,
the names to claim under; and inotify's records as Watch reads them
(inotify_simple's parser)."""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Union

import inotify_simple  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.consumer.entries import (
    LINK_GRACE,
    Accept,
    Entry,
    FileKind,
    Ignore,
    Open,
    Reject,
    Wait,
    examine,
    judge,
    kind_of,
    shown,
)
from navi.names import MAX_SIZE, claim_names, in_order, order_key, parse, reason_name
from navi.names import notification_name as file_name
from navi.notification import SCHEMA_VERSION, Notification
from tests.helpers import examples, sample

NOW = 1_800_000_000.0

stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc))
names = st.one_of(
    st.text(min_size=1, max_size=30),
    st.builds(lambda n, s: n + s, st.text(max_size=20), st.sampled_from([".json", ".1.json", ".tmp", ""])),
    st.builds(
        lambda t, s, a: file_name(t, str(s))[:-5] + (f".{a}" if a else "") + ".json",
        stamps,
        st.integers(0, 10**12 - 1),
        st.integers(0, 9),
    ),
)
entries = st.builds(
    Entry,
    name=names,
    kind=st.sampled_from(FileKind),
    size=st.integers(0, 2 * MAX_SIZE),
    links=st.integers(0, 4),
    changed=st.floats(NOW - 100, NOW + 100),
)


def entry(name: str = "a.json", **changes: object) -> Entry:
    return replace(Entry(name, FileKind.FILE, 1000, 1, NOW - 60), **changes)  # type: ignore[arg-type]


@given(entries)
def test_every_entry_has_exactly_one_outcome(e: Entry) -> None:
    outcome = examine(e, NOW)
    assert [isinstance(outcome, c) for c in (Ignore, Wait, Reject, Open)].count(True) == 1
    # What it depends on, and only that:
    if e.name.startswith(".") or not e.name.endswith(".json"):
        assert isinstance(outcome, Ignore)
    elif isinstance(outcome, Open):
        assert e.kind is FileKind.FILE and e.size <= MAX_SIZE and e.links <= 1 and e.name.isprintable()
    elif isinstance(outcome, Wait):
        assert e.kind is FileKind.FILE and e.links > 1 and NOW - e.changed < LINK_GRACE
    else:
        assert isinstance(outcome, Reject) and outcome.reason


@pytest.mark.parametrize("kind", [k for k in FileKind if k is not FileKind.FILE])
def test_anything_but_a_regular_file_is_rejected_by_its_kind(kind: FileKind) -> None:
    outcome = examine(entry(kind=kind), NOW)
    assert isinstance(outcome, Reject)
    assert kind.value in outcome.reason


def test_kinds_from_st_mode() -> None:
    modes = {
        stat.S_IFREG: FileKind.FILE,
        stat.S_IFLNK: FileKind.SYMLINK,
        stat.S_IFDIR: FileKind.DIRECTORY,
        stat.S_IFIFO: FileKind.FIFO,
        stat.S_IFSOCK: FileKind.SOCKET,
        stat.S_IFCHR: FileKind.DEVICE,
        stat.S_IFBLK: FileKind.DEVICE,
    }
    for mode, kind in modes.items():
        assert kind_of(mode | 0o644) is kind


def test_a_second_link_is_a_publication_in_progress_then_a_planted_link() -> None:
    assert isinstance(examine(entry(links=2, changed=NOW - 1), NOW), Wait)
    late = examine(entry(links=2, changed=NOW - LINK_GRACE - 1), NOW)
    assert isinstance(late, Reject) and "2 hard links" in late.reason


def test_oversized_files_are_rejected_before_reading() -> None:
    outcome = examine(entry(size=50 << 20), NOW)
    assert isinstance(outcome, Reject) and str(50 << 20) in outcome.reason


def test_dot_names_and_other_names_are_left_alone() -> None:
    for name in (".navi-state.json", ".x.json.12.3.tmp", ".claimed", "README", "x.json.tmp"):
        assert isinstance(examine(entry(name), NOW), Ignore)


def test_unprintable_names_are_rejected() -> None:
    for name in ("a\nb.json", "\x1b[2Jx.json", "bad\udcff.json", "rtl\u202eoj.json"):
        assert isinstance(examine(entry(name), NOW), Reject)


def data_of(n: Notification) -> bytes:
    return n.to_json()


def test_a_notification_is_accepted_with_its_document() -> None:
    n = sample(7)
    data = data_of(n)
    opened = entry(size=len(data))
    verdict = judge(opened, data, opened)
    assert isinstance(verdict, Accept)
    assert verdict.notification == n
    assert verdict.document == json.loads(data)


def test_unknown_keys_are_kept_in_the_document() -> None:
    doc = json.loads(data_of(sample(1)))
    doc["added_by_a_later_navi"] = {"x": [1]}
    data = json.dumps(doc).encode()
    verdict = judge(entry(size=len(data)), data, entry(size=len(data)))
    assert isinstance(verdict, Accept) and verdict.document["added_by_a_later_navi"] == {"x": [1]}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{bad", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "a list, not an object"),
        (b'{"schema": 1}', "not a Navi notification: id"),
        (b"[" * 100000 + b"]" * 100000, "not JSON"),
        # Python 3.11+ refuses 4,300 digits and more; 3.9 parses them, and
        # then the schema's own parser refuses the number.
        (b'{"a": 1' + b"0" * 5000 + b"}", ("not JSON", "not a Navi notification")),
    ],
)
def test_bad_content_is_rejected_with_the_reason(data: bytes, reason: Union[str, tuple[str, ...]]) -> None:
    verdict = judge(entry(size=len(data)), data, entry(size=len(data)))
    assert isinstance(verdict, Reject)
    reasons = (reason,) if isinstance(reason, str) else reason
    assert any(r in verdict.reason for r in reasons), verdict.reason


def test_another_schema_version_is_rejected() -> None:
    data = data_of(replace(sample(1), schema_version=SCHEMA_VERSION + 1))
    verdict = judge(entry(size=len(data)), data, entry(size=len(data)))
    assert isinstance(verdict, Reject) and f"schema {SCHEMA_VERSION + 1}" in verdict.reason


def test_a_file_that_changed_while_read_is_rejected() -> None:
    data = data_of(sample(1))
    before = entry(size=len(data))
    for after, got in (
        (replace(before, changed=NOW), data),
        (replace(before, size=len(data) + 5), data),
        (before, data[:-3]),
    ):
        verdict = judge(before, got, after)
        assert isinstance(verdict, Reject) and "changed while being read" in verdict.reason
    grown = judge(before, b" " * (MAX_SIZE + 1), before)
    assert isinstance(grown, Reject) and "grew" in grown.reason


@given(st.lists(names, unique=True, max_size=20), st.randoms())
def test_the_order_is_total_and_does_not_depend_on_the_listing(listing: list[str], rnd: object) -> None:
    shuffled = list(listing)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert in_order(shuffled) == in_order(listing)
    keys = [order_key(n) for n in listing]
    assert len(set(keys)) == len(keys)  # no two names tie


@settings(max_examples=examples(200))
@given(stamps, st.lists(st.integers(0, 10**12 - 1), unique=True, min_size=2, max_size=10))
def test_navi_names_come_in_incident_order(started: datetime, serials: list[int]) -> None:
    written = [file_name(started, str(s)) for s in serials]
    beside = [n[:-5] + ".1.json" for n in written]  # written beside a planted name
    later = [file_name(started + timedelta(seconds=1), str(s)) for s in serials]  # a new supervisord
    ordered = in_order(written + beside + later + ["zz.json", "1700000000.json"])
    assert ordered[: len(serials) * 2] == [
        n for s in sorted(serials) for n in (file_name(started, str(s)), file_name(started, str(s))[:-5] + ".1.json")
    ]
    assert ordered[len(serials) * 2 : len(serials) * 3] == [
        file_name(started + timedelta(seconds=1), str(s)) for s in sorted(serials)
    ]
    assert ordered[-2:] == ["1700000000.json", "zz.json"]


@settings(max_examples=examples(200))
@given(stamps, st.lists(st.integers(0, 10**12 - 1), unique=True, min_size=2, max_size=10), st.integers(1, 9))
def test_an_events_further_notifications_follow_it_in_order_and_in_a_plain_sort(
    started: datetime, serials: list[int], more: int
) -> None:
    """A crash loop that begins with a crash, an episode seen between two
    events: ``<start>-<serial>_<n>.json`` come after the event's own and
    before the next event's, in Navi's order and in ``ls``'s."""
    expected = [file_name(started, str(s), n) for s in sorted(serials) for n in range(more + 1)]
    assert in_order(list(reversed(expected))) == expected == sorted(expected)
    assert all(parse(name) is not None for name in expected)


@given(names)
def test_claim_names_are_distinct_json_names_never_navis_alternates(name: str) -> None:
    candidates = claim_names(name)
    assert candidates[0] == name and len(set(candidates)) == len(candidates)
    assert all(c.endswith(".json") for c in candidates[1:])
    assert all(order_key(c)[0] == 1 for c in candidates[1:])  # never a name Navi could write
    assert reason_name(name) not in candidates


@given(st.text())
def test_shown_text_is_printable_and_keeps_printable_text(text: str) -> None:
    out = shown(text)
    assert out.isprintable()
    if text.isprintable():
        assert out == text


records = st.lists(
    st.tuples(
        st.integers(-1, 2**31 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=40).map(lambda raw: raw.replace(b"\0", b"")),
    ),
    max_size=8,
)


@given(records, st.integers(0, 16))
def test_inotify_records_parse_back(records: list[tuple[int, int, int, bytes]], padding: int) -> None:
    """The kernel pads a name with NULs (none for the directory itself); a
    name that is not UTF-8 comes back as os.fsdecode gives it."""
    data = b""
    for wd, mask, cookie, raw in records:
        padded = raw + b"\0" * (padding if raw or padding else 0)
        data += struct.pack("iIII", wd, mask, cookie, len(padded)) + padded
    expected = [inotify_simple.Event(wd, mask, cookie, os.fsdecode(raw)) for wd, mask, cookie, raw in records]
    assert inotify_simple.parse_events(data) == expected
