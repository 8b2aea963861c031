"""The simulators' HTTP server (gateway_simulators.http_server) on 127.0.0.1, driven over raw
sockets where the wire matters (pipelining, chunked bodies, 100-continue, bad input) and by
aiohttp's client where a real client's view is the point."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from gateway_simulators.http_server import (
    Answer,
    HttpServer,
    Request,
    Response,
    Router,
    get,
    json_response,
    post,
)


class App:
    """Routes that show what the server handed them."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.release = asyncio.Event()
        self.release.set()
        self.router = Router(
            [
                get("/hello", self.hello),
                post("/echo", self.echo),
                post("/accounts/{sid}/messages.json", self.sid),
                post("/slow", self.slow),
                post("/drop", self.drop),
                post("/boom", self.boom),
            ]
        )

    def hello(self, request: Request) -> Response:
        self.seen.append(request)
        return json_response({"hello": request.query}, headers=(("X-Test", "1"),))

    def echo(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(201, request.body, "application/octet-stream")

    def sid(self, request: Request) -> Response:
        return json_response({"sid": request.params["sid"]})

    async def slow(self, request: Request) -> Response:
        await self.release.wait()
        await asyncio.sleep(0.05)
        return Response(200, b"slow:" + request.body)

    def drop(self, request: Request) -> Answer:
        request.transport.close()
        return None

    def boom(self, request: Request) -> Response:
        raise RuntimeError("a handler bug")


class Served:
    """A running server and the raw connections a test opened to it (closed at the end)."""

    def __init__(self, app: App, server: HttpServer, port: int) -> None:
        self.app, self.server, self.port = app, server, port
        self.writers: list[asyncio.StreamWriter] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer


@asynccontextmanager
async def serving(max_body: int = 1 << 20) -> AsyncIterator[Served]:
    app = App()
    server = HttpServer(app.router, max_body=max_body)
    served = Served(app, server, await server.start("127.0.0.1", 0))
    try:
        yield served
    finally:
        for writer in served.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer with a Content-Length body: status, headers (lower-case names), body."""
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def head(method: str, path: str, body: bytes = b"", *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *extra]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_keep_alive_answers_in_order_on_one_connection() -> None:
    async with serving() as served:
        app = served.app
        reader, writer = await served.connect()
        for n in range(3):
            writer.write(head("GET", f"/hello?n={n}"))
            status, headers, body = await read_answer(reader)
            assert status == 200
            assert json.loads(body) == {"hello": f"n={n}"}
            assert headers["content-type"] == "application/json"
            assert headers["x-test"] == "1"
            assert "connection" not in headers
        assert [r.path for r in app.seen] == ["/hello"] * 3
        assert len({id(r.transport) for r in app.seen}) == 1


async def test_pipelined_requests_are_answered_in_request_order_across_an_awaited_one() -> None:
    async with serving() as served:
        app = served.app
        app.release.clear()
        reader, writer = await served.connect()
        writer.write(
            head("POST", "/echo", b"first")
            + head("POST", "/slow", b"second")
            # The third is answered at once by its handler but must wait for the second.
            + head("POST", "/echo", b"third")
        )
        status, _, body = await read_answer(reader)
        assert (status, body) == (201, b"first")
        await asyncio.sleep(0.05)
        app.release.set()
        assert (await read_answer(reader))[2] == b"slow:second"
        assert (await read_answer(reader))[2] == b"third"


async def test_a_chunked_body_arrives_whole() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        status, _, body = await read_answer(reader)
        assert (status, body) == (201, b"hello world")


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(b"body")
        assert (await read_answer(reader))[2] == b"body"


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_gets_413_and_the_connection_closes(chunked: bool) -> None:
    async with serving(max_body=100) as served:
        app = served.app
        reader, writer = await served.connect()
        if chunked:
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % 101
                + b"x" * 101
                + b"\r\n0\r\n\r\n"
            )
        else:
            writer.write(head("POST", "/echo", b"x" * 101))
        status, headers, body = await read_answer(reader)
        assert status == 413
        assert headers["connection"] == "close"
        assert "larger than 100 bytes" in json.loads(body)["message"]
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert app.seen == []


async def test_bytes_that_are_not_http_get_400_and_the_connection_closes() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(b"\x16\x03\x01\x02\x00 this is not a request\r\n\r\n")
        status, _, body = await read_answer(reader)
        assert status == 400
        assert json.loads(body)["message"].startswith("not HTTP")
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_unknown_paths_get_404_and_other_methods_405_with_allow() -> None:
    async with serving() as served, aiohttp.ClientSession() as session:
        port = served.port
        base = f"http://127.0.0.1:{port}"
        async with session.get(f"{base}/nowhere") as resp:
            assert resp.status == 404
            assert "no such resource" in (await resp.json())["message"]
        async with session.get(f"{base}/echo") as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "POST"
        async with session.get(f"{base}/accounts/AC1/messages.json") as resp:
            assert resp.status == 405


async def test_a_path_segment_is_captured_and_percent_decoded() -> None:
    async with serving() as served, aiohttp.ClientSession() as session:
        port = served.port
        url = f"http://127.0.0.1:{port}/accounts/AC%20x%2Fy/messages.json"
        async with session.post(url, data=b"") as resp:
            assert resp.status == 200
            assert await resp.json() == {"sid": "AC x/y"}


async def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(b"GET /hello HTTP/1.0\r\n\r\n")
        status, headers, _ = await read_answer(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""

        reader, writer = await served.connect()
        for _ in range(2):
            writer.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = await read_answer(reader)
            assert (status, headers["connection"]) == (200, "keep-alive")


async def test_connection_close_from_the_client_is_honoured() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(head("GET", "/hello", b"", "Connection: close"))
        status, headers, _ = await read_answer(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_dropping_handler_closes_without_an_answer() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(head("POST", "/drop", b"x"))
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_failing_handler_gets_500_and_the_connection_goes_on() -> None:
    async with serving() as served:
        reader, writer = await served.connect()
        writer.write(head("POST", "/boom", b"x"))
        status, _, body = await read_answer(reader)
        assert (status, json.loads(body)) == (500, {"message": "internal error"})
        writer.write(head("GET", "/hello"))
        assert (await read_answer(reader))[0] == 200


async def test_repeated_headers_are_joined_and_names_lower_cased() -> None:
    async with serving() as served:
        app = served.app
        reader, writer = await served.connect()
        writer.write(
            head(
                "GET",
                "/hello",
                b"",
                "X-Many: a",
                "x-many: b",
                "Content-Type: Text/Plain; charset=utf-8",
            )
        )
        await read_answer(reader)
        request = app.seen[0]
        assert request.headers["x-many"] == "a, b"
        assert request.content_type == "text/plain"


async def test_close_drops_idle_connections_and_handlers_under_way() -> None:
    async with serving() as served:
        app, server = served.app, served.server
        app.release.clear()
        idle_reader, idle_writer = await served.connect()
        idle_writer.write(head("GET", "/hello"))
        await read_answer(idle_reader)
        busy_reader, busy_writer = await served.connect()
        busy_writer.write(head("POST", "/slow", b"x"))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.close(), 5)
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        assert await asyncio.wait_for(busy_reader.read(), 5) == b""
        with pytest.raises(OSError):
            await served.connect()
