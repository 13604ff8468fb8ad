"""Hostile but cheap requests against a real server (uvicorn on loopback, SQLite, no model loaded):
huge bodies and query strings, bodies of endless invalid keys, half-open connections, and a Host
header the trailing-slash redirect must not echo. Each must be refused in one bounded reply while the
server keeps answering everyone else."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import MAX_REPORTED_ERRORS, create_app
from api.schemas import MAX_ATTRIBUTE_JSON_BYTES, MAX_JSON_BYTES
from api.testing import LiveServer
from rag.config import Settings

pytestmark = pytest.mark.slow  # a server, if in a thread

HEADER_TIMEOUT_S = 1.0
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("hostile") / "home"
    settings = Settings(home=home, header_timeout_s=HEADER_TIMEOUT_S)
    with LiveServer(create_app(settings, load_models=False)) as base:
        yield base


def _connect(url: str) -> socket.socket:
    """A raw TCP connection to the server, for requests httpx will not send (or not slowly enough)."""
    return socket.create_connection(("127.0.0.1", httpx.URL(url).port or 80), timeout=10)


def _healthy(url: str) -> None:
    r = httpx.get(f"{url}/healthz", timeout=5)
    assert r.status_code == 200, r.text


def test_a_body_over_the_json_limit_is_refused_before_it_is_parsed(url: str) -> None:
    body = json.dumps({f"k{i}": i for i in range(300_000)}).encode()  # ~3.5 MB of unknown keys
    assert len(body) > MAX_JSON_BYTES
    r = httpx.post(f"{url}/v1/search", content=body, headers=JSON, timeout=30)
    assert r.status_code == 413
    assert f"{MAX_JSON_BYTES:,}-byte limit" in r.json()["detail"]
    _healthy(url)


def test_a_chunked_body_over_the_limit_is_cut_off_as_it_streams(url: str) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"query": "'
        for _ in range(64):
            yield b"x" * 16384  # 1 MB in all, no Content-Length
        yield b'"}'

    r = httpx.post(f"{url}/v1/search", content=pieces(), headers=JSON, timeout=30)
    assert r.status_code == 413


def test_many_unknown_keys_are_one_error(url: str) -> None:
    fields = {"question": "q", "answer": "a", **{f"k{i}": [0, 0, 0] for i in range(20_000)}}
    body = json.dumps(fields).encode()
    assert MAX_JSON_BYTES < len(body) < MAX_ATTRIBUTE_JSON_BYTES  # only attribute takes bodies this big
    assert httpx.post(f"{url}/v1/search", content=body, headers=JSON, timeout=30).status_code == 413
    r = httpx.post(f"{url}/v1/attribute", content=body, headers=JSON, timeout=30)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert "20,000 unknown fields ('k0', 'k1'" in error["msg"]
    assert "the fields are question, answer" in error["msg"]
    assert error["input"] == "an object with 20,002 keys"


def test_many_invalid_values_get_a_short_422_that_counts_the_rest(url: str) -> None:
    body = {"question": "q", "answer": "a", "chunk_ids": [[0] * 3] * 50}
    r = httpx.post(f"{url}/v1/attribute", json=body, timeout=30)
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    rest = 50 - MAX_REPORTED_ERRORS
    assert errors[-1] == {"type": "too_many_errors", "loc": [], "msg": f"and {rest:,} more errors"}
    assert all(e["input"] == "an array of 3 items" for e in errors[:-1])


def test_a_long_invalid_value_is_echoed_clipped(url: str) -> None:
    r = httpx.post(f"{url}/v1/search", json={"query": "é" * 20_000}, timeout=30)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["input"].endswith("... (20,000 characters)")
    assert len(r.content) < 2_000


def test_a_huge_query_string_is_414_and_the_server_goes_on(url: str) -> None:
    with _connect(url) as sock:  # httpx caps URLs itself
        with contextlib.suppress(OSError):  # the server may hang up before all of it is sent
            sock.sendall(b"GET /v1/answers?limit=" + b"1" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414"), reply[:300]
    assert "byte limit" in json.loads(body)["detail"]
    r = httpx.get(f"{url}/v1/answers", params={"limit": "1" * 4_000}, timeout=30)
    assert r.status_code == 422  # long but within the URL limit: the usual validation, clipped
    assert len(r.content) < 2_000
    _healthy(url)


def test_half_open_connections_are_closed_and_do_not_pin_the_server(url: str) -> None:
    held: list[socket.socket] = []
    try:
        for i in range(300):
            sock = _connect(url)
            if i % 2:  # half send a request line and a header, then stall; half send nothing
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        _healthy(url)
        r = httpx.post(f"{url}/v1/documents/1", timeout=5)  # any route answers, not only /healthz
        assert r.status_code == 405
        time.sleep(HEADER_TIMEOUT_S)
        for sock in held:  # the server hangs up on each (recv would time out after 10 s if it did not)
            assert sock.recv(1) == b""
    finally:
        for sock in held:
            sock.close()


def test_a_slow_second_request_on_a_kept_alive_connection_is_closed(url: str) -> None:
    with _connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # then never the rest
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(4096) == b""


def test_the_trailing_slash_redirect_is_relative_whatever_the_host(url: str) -> None:
    r = httpx.get(f"{url}/v1/documents/?x=1", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 307
    assert r.headers["location"] == "/v1/documents?x=1"
    r = httpx.get(f"{url}/v1/documents/", follow_redirects=True, timeout=10)
    assert r.status_code == 200
    assert httpx.get(f"{url}/nothing/here/", timeout=10).status_code == 404
    r = httpx.get(f"{url}/v1/answers/0123abcd", timeout=10)  # a route's own 404 keeps its detail
    assert r.status_code == 404 and "no answer with id" in r.json()["detail"]


def test_the_schema_states_the_question_limits_in_characters_and_tokens(url: str) -> None:
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    question = schema["components"]["schemas"]["AskRequest"]["properties"]["question"]
    assert question["maxLength"] == 4000
    assert "4,000 characters" in question["description"] and "1,024 tokens" in question["description"]


def test_nothing_was_lost_to_the_hostile_requests(url: str, tmp_path: Path) -> None:
    _healthy(url)
    r = httpx.get(f"{url}/v1/documents", timeout=10)
    assert r.status_code == 200 and r.json() == {"documents": []}
