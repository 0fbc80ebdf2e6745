"""Navi's own XML-RPC client, against the standard library's encoder (what
supervisord answers with).  tests/e2e/test_rpc.py asks a real supervisord."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from navi.listener import rpc

ints = st.integers(-(2**31), 2**31 - 1)
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t"))
values = st.recursive(
    st.none() | st.booleans() | ints | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_responses_decode_as_the_standard_library_encodes(value: Any) -> None:
    body = xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()
    assert rpc.parse_response(body) == value


@given(ints, texts)
def test_faults_are_raised_with_code_and_text(code: int, text: str) -> None:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(code, text)).encode()
    with pytest.raises(rpc.Fault) as fault:
        rpc.parse_response(body)
    assert (fault.value.code, fault.value.text) == (code, text)


@given(st.lists(st.booleans() | ints | texts, max_size=4))
def test_requests_are_what_the_standard_library_reads(params: list[rpc.Param]) -> None:
    assert xmlrpc.client.loads(rpc.request_body("supervisor.readLog", tuple(params))) == (
        tuple(params),
        "supervisor.readLog",
    )


@pytest.mark.parametrize("body", [b"", b"<methodResponse>", b"<x/>", b"\xff\xfe"])
def test_garbage_is_one_error(body: bytes) -> None:
    with pytest.raises(rpc.RpcError, match="not an XML-RPC response"):
        rpc.parse_response(body)


def test_http_status() -> None:
    assert rpc.split_http(b"HTTP/1.0 500 Internal Server Error\r\nA: b\r\n\r\nbody") == (
        500,
        "Internal Server Error",
        b"body",
    )
    with pytest.raises(rpc.RpcError, match="not an HTTP response"):
        rpc.split_http(b"SSH-2.0-OpenSSH\r\n")


def test_unreachable_and_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(rpc.Unreachable, match="cannot reach supervisord"):
        rpc.call(f"unix://{tmp_path}/none.sock", "supervisor.getState")
    with pytest.raises(rpc.RpcError, match="neither unix:// nor http://"):
        rpc.call("ftp://x", "supervisor.getState")
    with pytest.raises(rpc.RpcError, match="no port"):
        rpc.call("http://localhost", "supervisor.getState")
