"""HTTP as a client meets it on the wire, against a real `broadcaster api` process: the key is
checked before the body is read, bodies over a route's limit are answered 413 before they are
read (also chunked), and after an error answer the keep-alive connection either carries the
next request or was said to close."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import asyncpg
import pytest
from tests.stack import Stack

from broadcaster.auth import create_api_key

MB = 1024 * 1024


class Wire:
    """One keep-alive HTTP/1.1 connection, read by hand (no client library that would hide a
    closed connection or retry)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before an answer")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the middle of an answer")
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def request(
    method: str, path: str, body: bytes = b"", key: str | None = None, **headers: str
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def api(stack: Stack, pool: asyncpg.Pool) -> tuple[Stack, str]:
    stack.sim_url = "http://127.0.0.1:9"  # the API never calls the gateway
    stack.write_config(rate=100)
    stack.start_service("api")
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "edges")
    return stack, key


async def test_error_answers_leave_the_connection_usable(api: tuple[Stack, str]) -> None:
    stack, key = api
    wire = Wire(stack.api_url)
    try:
        for bad, status in [
            (request("POST", "/v1/alerts", b'{"message": "x"}', key), 422),
            (request("POST", "/v1/alerts", b'{"message":', key), 400),
            (request("GET", "/v1/alerts/99999999999999999999999", key=key), 422),
            (request("GET", "/v1/alerts/12345", key=key), 404),
            (request("POST", "/v1/alerts", json.dumps({"message": "a\u0000"}).encode(), key), 422),
            (request("GET", "/nowhere"), 404),
            (request("POST", "/v1/callbacks/nosuch", b"{}"), 404),
        ]:
            wire.send(bad)
            got, headers, body = wire.response()
            assert got == status, body
            assert headers["content-type"] == "application/problem+json"
            assert headers.get("connection") != "close"
            wire.send(request("GET", "/healthz"))
            assert wire.response()[0] == 200  # the same connection carries the next request
    finally:
        wire.close()


async def test_no_key_is_401_before_the_body_is_read(api: tuple[Stack, str]) -> None:
    stack, _ = api
    pid = next(c.pid for c in stack.children if c.name == "api")
    before = rss_mb(pid)
    for _ in range(4):
        wire = Wire(stack.api_url)
        try:
            # Only the head goes: an answer means the server did not wait for the 20 MB.
            head = request("POST", "/v1/alerts").replace(
                b"Content-Length: 0", b"Content-Length: %d" % (20 * MB)
            )
            wire.send(head)
            status, headers, body = wire.response()
            assert status == 401, body
            assert headers["connection"] == "close"  # the body it did not read ends the connection
            assert wire.closed_by_server()
        finally:
            wire.close()
    assert rss_mb(pid) - before < 20
    started = time.monotonic()
    wire = Wire(stack.api_url)
    wire.send(request("GET", "/healthz"))
    assert wire.response()[0] == 200 and time.monotonic() - started < 0.5
    wire.close()


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/alerts", 4 * MB), ("/v1/subscribers", 64 * 1024), ("/v1/alerts/1/cancel", 64 * 1024)],
)
async def test_a_body_over_the_route_limit_is_413_before_it_is_read(
    api: tuple[Stack, str], path: str, limit: int
) -> None:
    stack, key = api
    wire = Wire(stack.api_url)
    try:
        head = request("POST", path, key=key).replace(
            b"Content-Length: 0", b"Content-Length: %d" % (limit + 1)
        )
        wire.send(head)
        status, headers, body = wire.response()
        assert status == 413, body
        assert headers["content-type"] == "application/problem+json"
        assert str(limit) in json.loads(body)["detail"]
        assert headers["connection"] == "close" and wire.closed_by_server()
    finally:
        wire.close()


async def test_a_chunked_body_is_counted_while_it_streams(api: tuple[Stack, str]) -> None:
    stack, key = api
    wire = Wire(stack.api_url)
    try:
        wire.send(
            b"POST /v1/subscribers HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: Bearer " + key.encode() + b"\r\n\r\n"
        )
        chunk = b"x" * 16384
        status = None
        for _ in range(16):  # 256 KB offered against a 64 KB limit
            try:
                wire.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
        status, headers, body = wire.response()
        assert status == 413, body
        assert headers["connection"] == "close"
    finally:
        wire.close()


async def test_callbacks_have_their_own_limit(api: tuple[Stack, str]) -> None:
    stack, _ = api
    wire = Wire(stack.api_url)
    try:
        head = request("POST", "/v1/callbacks/primary").replace(
            b"Content-Length: 0", b"Content-Length: %d" % (256 * 1024 + 1)
        )
        wire.send(head)
        status, headers, _ = wire.response()
        assert status == 413 and headers["connection"] == "close"
    finally:
        wire.close()


@pytest.mark.parametrize("path", ["/v1/alerts", "/v1/subscribers", "/v1/zones"])
async def test_a_50_mb_body_sent_with_a_valid_key_is_413_before_it_is_all_read(
    api: tuple[Stack, str], pool: asyncpg.Pool, path: str
) -> None:
    """A client that does send its 50 MB (not only announces them): the answer comes while most
    of the body is still unsent, the server does not grow by the body, and nothing is stored."""
    stack, key = api
    pid = next(c.pid for c in stack.children if c.name == "api")
    before = rss_mb(pid)
    wire = Wire(stack.api_url)
    sent = 0
    try:
        head = request("POST", path, key=key).replace(
            b"Content-Length: 0", b"Content-Length: %d" % (50 * MB)
        )
        wire.send(head + b'{"message": "')
        chunk = b"x" * (256 * 1024)
        wire.sock.settimeout(0.2)
        try:
            while sent < 50 * MB:
                wire.send(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server stopped reading: the answer is waiting
        wire.sock.settimeout(10)
        status, headers, body = wire.response()
        assert status == 413, body
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
    finally:
        wire.close()
    assert sent < 25 * MB, sent  # refused long before the end
    assert rss_mb(pid) - before < 20
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 0
