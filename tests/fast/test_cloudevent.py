"""A notification as a CloudEvent (navi/consumer/cloudevent.py), read back
with the CloudEvents SDK in both content modes; the source template; and
the forwarder's other pure parts: the receiver's URL, the headers file and
what is kept out of the log (receiver.py), the metrics' address."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("cloudevents.core", reason="the cloudevents SDK 2 needs Python 3.10 or newer")

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from navi.consumer import cloudevent
from navi.consumer.cloudevent import DATASCHEMA, EventError, SourceTemplate, attributes, request
from navi.consumer.metrics import MetricsError, address
from navi.consumer.receiver import ReceiverError, Target, headers_from, redact
from navi.notification import Notification, ProcessInfo
from tests.helpers import examples, sample

DIRECTORY = "/var/lib/containers/storage/volumes/app42/_data/notifications"


def document(n: Notification) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(n.to_json())
    return result


def read_back(headers: dict[str, str], body: bytes) -> Any:
    return from_http(HTTPMessage(headers, body), JSONFormat())


def test_the_attributes_of_a_notification() -> None:
    n = sample(24)
    assert attributes(n, DIRECTORY) == {
        "specversion": "1.0",
        "id": "host:boot:1:614770:24",
        "source": DIRECTORY,
        "type": "com.modulus.navi.crash",
        "time": n.time,
        "subject": "web",
        "dataschema": DATASCHEMA,
        "datacontenttype": "application/json",
    }
    container_oom = dataclasses.replace(n, type="oom", process=ProcessInfo(None, None, None))
    attrs = attributes(container_oom, DIRECTORY, "https://example.invalid/navi/schema-1.json")
    assert "subject" not in attrs and attrs["type"] == "com.modulus.navi.oom"
    assert attrs["dataschema"] == "https://example.invalid/navi/schema-1.json"


@pytest.mark.parametrize("binary", [False, True], ids=["structured", "binary"])
def test_both_modes_carry_the_event_as_the_sdk_reads_it(binary: bool) -> None:
    n = sample(7)
    headers, body = request(attributes(n, DIRECTORY), document(n), binary)
    if binary:
        assert headers["content-type"] == "application/json" and headers["ce-id"] == n.id
        assert json.loads(body) == document(n)
    else:
        assert headers == {"content-type": "application/cloudevents+json"}
        assert json.loads(body)["data"] == document(n)
    event = read_back(headers, body)
    assert event.get_attributes() == attributes(n, DIRECTORY)
    assert event.get_data() == document(n)


@given(
    program=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    serial=st.integers(min_value=1, max_value=10**6),
    binary=st.booleans(),
    # as the OS gives a path: its bytes, decoded with surrogate escapes
    directory=st.binary(min_size=1, max_size=40).map(lambda b: "/" + os.fsdecode(b.replace(b"\0", b"_"))),
)
@settings(max_examples=examples(200))
def test_whatever_the_file_says_the_request_is_well_formed_and_reads_back_the_same(
    program: Optional[str], serial: int, binary: bool, directory: str
) -> None:
    """A hostile application can write any program name into a file that
    validates: no header may carry a line break or a non-ASCII byte, and
    the receiver must read back what was sent."""
    n = dataclasses.replace(sample(serial), process=ProcessInfo(program, program, 1))
    source = SourceTemplate("{dir}").source(directory)
    headers, body = request(attributes(n, source), document(n), binary)
    for name, value in headers.items():
        assert value.isascii() and value.isprintable(), (name, value)
    event = read_back(headers, body)
    expected = attributes(n, source)
    if not program:
        expected.pop("subject", None)
    assert event.get_attributes() == expected
    assert event.get_data() == document(n)


def test_an_empty_id_makes_no_event() -> None:
    n = dataclasses.replace(sample(1), id="")
    with pytest.raises(EventError, match="not a valid CloudEvent"):
        request(attributes(n, DIRECTORY), document(n))


def test_the_source_template_takes_the_directory_or_its_parts() -> None:
    assert SourceTemplate("{dir}").source(DIRECTORY) == DIRECTORY
    assert SourceTemplate("urn:example:container:{parts[5]}").source(DIRECTORY) == "urn:example:container:app42"
    assert SourceTemplate("{dir}").source("/tmp/a b/ü") == "/tmp/a%20b/%C3%BC"
    assert SourceTemplate("/c/{parts[1]}").source("/a/b%2F") == "/c/b%252F"
    assert SourceTemplate("{dir}").source("/x/\udcff") == "/x/%FF"  # a name that is no UTF-8
    assert cloudevent.DEFAULT_SOURCE == "{dir}"
    for bad in ("", "{host}", "{parts[-1]}", "{0}", "{dir.__class__}"):
        with pytest.raises(EventError) as info:
            SourceTemplate(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(EventError, match="has only 2 components"):
        SourceTemplate("{parts[5]}").source("/a/b")


def test_the_receivers_url() -> None:
    assert Target.of("http://127.0.0.1:8080/events?x=1") == Target(False, "127.0.0.1", 8080, "/events?x=1")
    assert Target.of("https://broker.example") == Target(True, "broker.example", 443, "/")
    assert Target.of("http://[::1]:9/e").shown() == "http://[::1]:9/e"
    assert Target.of("http://h/e?key=secret").shown() == "http://h:80/e"  # no query in the log
    for bad, why in (
        ("ftp://h/", "give an http:// or https:// URL"),
        ("http:///x", "give an http:// or https:// URL"),
        ("http://h:99999/", "Port out of range"),
        ("http://user:secret@h/", "would show in `ps`"),
    ):
        with pytest.raises(ReceiverError, match=why) as info:
            Target.of(bad)
        assert "secret" not in str(info.value)


def test_the_headers_file() -> None:
    text = "# the broker's token\n\nAuthorization: Bearer s3cr3t-t0ken\n  X-Tenant :  blue \n"
    assert headers_from(text, "h.txt") == {"Authorization": "Bearer s3cr3t-t0ken", "X-Tenant": "blue"}
    for bad, why in (
        ("Authorization Bearer s3cr3t-t0ken", "line 1: not a 'Name: value' header"),
        ("X: 1\nBad Name: s3cr3t-t0ken", "line 2: not a 'Name: value' header"),
        ("Content-Type: s3cr3t-t0ken", "Content-Type is the CloudEvent's own"),
        ("ce-id: s3cr3t-t0ken", "ce-id is the CloudEvent's own"),
        ("X-Token: s3cr3t-t0ken\u00e9", "X-Token's value is empty or not printable ASCII"),
        ("X-Token:", "X-Token's value is empty"),
    ):
        with pytest.raises(ReceiverError, match=why) as info:
            headers_from(bad, "h.txt")
        assert "s3cr3t" not in str(info.value) and str(info.value).startswith("h.txt, line")


def test_a_token_echoed_by_the_receiver_is_blotted_out() -> None:
    secrets = ["Bearer s3cr3t-t0ken", "blue"]
    said = "Unauthorized; bad header Authorization: Bearer s3cr3t-t0ken (tenant blue)"
    assert redact(said, secrets) == "Unauthorized; bad header Authorization: *** (tenant ***)"
    assert redact("a b", ["a"]) == "a b"  # too short to be a secret: left, not to garble every line


def test_the_metrics_address() -> None:
    assert address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert address(":9464") == ("0.0.0.0", 9464)
    assert address("[::1]:0") == ("::1", 0)
    for bad in ("9464", "host:", "host:port", "h:70000"):
        with pytest.raises(MetricsError, match="give HOST:PORT"):
            address(bad)
