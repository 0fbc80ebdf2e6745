"""The file format: what the listener writes (stdlib), what consumers
validate (pydantic), and the published schema all agree."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navi.consumer import schema
from navi.notification import SCHEMA_VERSION, FormatError, Notification, decode
from tests.helpers import examples

st.register_type_strategy(datetime, st.datetimes(timezones=st.just(timezone.utc), min_value=datetime(2000, 1, 1)))
notifications = st.builds(Notification, schema_version=st.just(SCHEMA_VERSION))


@settings(max_examples=examples(200))
@given(notifications)
def test_what_is_written_reads_back_the_same(n: Notification) -> None:
    assert decode(Notification, n.to_json()) == n


@settings(max_examples=examples(200))
@given(notifications)
def test_consumers_accept_what_the_listener_writes(n: Notification) -> None:
    assert schema.parse(n.to_json()) == n


@given(notifications)
def test_keys_are_the_published_ones_in_reading_order(n: Notification) -> None:
    data = json.loads(n.to_json())
    assert list(data)[:7] == ["schema", "id", "type", "time", "count", "coalesced", "summary"]
    assert set(data) == set(schema.json_schema()["properties"])
    assert data["time"].endswith("Z")


@given(notifications, st.sampled_from(["type", "time", "count", "process", "Header"]))
def test_a_wrong_value_is_refused_by_both_readers(n: Notification, key: str) -> None:
    data = json.loads(n.to_json())
    data[key] = ["not", "this"]
    bad = json.dumps(data).encode()
    with pytest.raises(FormatError):
        decode(Notification, bad)
    with pytest.raises(schema.InvalidNotification, match=key):
        schema.parse(bad)


@given(notifications)
def test_a_missing_key_is_named(n: Notification) -> None:
    data = json.loads(n.to_json())
    del data["summary"]
    with pytest.raises(FormatError, match="summary: missing"):
        decode(Notification, json.dumps(data).encode())
    with pytest.raises(schema.InvalidNotification, match="summary"):
        schema.parse(json.dumps(data).encode())


@given(notifications)
def test_unknown_keys_are_ignored_and_other_schemas_refused(n: Notification) -> None:
    data = json.loads(n.to_json())
    data["added_later"] = {"x": 1}
    assert schema.parse(json.dumps(data).encode()) == n
    with pytest.raises(schema.InvalidNotification, match="schema 2"):
        schema.parse(replace(n, schema_version=2).to_json())


def test_the_schema_file_is_the_models() -> None:
    """The file in the repository is what `navi schema` prints: change both
    together (and the version, if a consumer could break)."""
    shipped = resources.files("navi").joinpath("notification.schema.json").read_text()
    assert shipped == schema.schema_text(), "regenerate: navi schema > navi/notification.schema.json"


def test_every_key_is_documented_with_an_example() -> None:
    """Each key has a description in the schema, and each that is not an
    object of its own (documented key by key) an example."""
    published = schema.json_schema()
    objects = [("Notification", published), *published["$defs"].items()]
    for where, definition in objects:
        for key, prop in definition["properties"].items():
            assert prop.get("description"), f"{where}.{key} has no description"
            if "$ref" not in json.dumps(prop):
                assert prop.get("examples"), f"{where}.{key} has no example"
