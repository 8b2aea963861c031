"""gateway_adapters.http1 against real servers on 127.0.0.1: an aiohttp server for well-behaved
HTTP, raw asyncio servers for what aiohttp would not send, and TLS with a throwaway CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web

from gateway_adapters import http1


class EchoServer:
    """Answers POST /echo with the body it got, and counts connections (by client port)."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.headers: list[dict[str, str]] = []
        self.closed_peers = 0
        self.delay = 0.0
        self.answer_headers: dict[str, str] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_post("/echo", self._echo)
        app.router.add_post("/chunked", self._chunked)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _echo(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        self.headers.append(dict(request.headers))
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(body=body, status=201, headers=self.answer_headers)

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(body), 3):
            await response.write(body[i : i + 3])
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[EchoServer]:
    s = EchoServer()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def client(server: EchoServer) -> AsyncIterator[http1.Client]:
    c = http1.Client(
        f"http://127.0.0.1:{server.port}",
        headers={"Content-Type": "text/plain", "X-Test": "yes"},
        timeout=2,
        keep_headers=("Retry-After", "X-Answer"),
    )
    yield c
    await c.close()


async def test_post_echoes_and_sends_the_fixed_headers(server, client) -> None:
    answer = await client.post("/echo", b"hello")
    assert (answer.status, answer.body) == (201, b"hello")
    [headers] = server.headers
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert headers["X-Test"] == "yes"
    assert headers["Content-Length"] == "5"


async def test_sequential_requests_reuse_one_connection(server, client) -> None:
    for i in range(10):
        assert (await client.post("/echo", str(i).encode())).body == str(i).encode()
    assert len(set(server.peers)) == 1


async def test_concurrent_requests_get_their_own_answers(server, client) -> None:
    server.delay = 0.01
    bodies = [f"message {i}".encode() for i in range(40)]
    answers = await asyncio.gather(*(client.post("/echo", b) for b in bodies))
    assert [a.body for a in answers] == bodies
    assert len(set(server.peers)) <= 40
    # The connections are kept: the next round opens none.
    before = set(server.peers)
    await asyncio.gather(*(client.post("/echo", b) for b in bodies))
    assert set(server.peers) <= before


async def test_only_the_named_headers_are_kept(server, client) -> None:
    server.answer_headers = {"Retry-After": "7", "x-answer": "a", "X-Other": "b"}
    answer = await client.post("/echo", b"")
    assert answer.headers == {"retry-after": "7", "x-answer": "a"}


async def test_chunked_answer(server, client) -> None:
    body = b"a chunked answer, three bytes at a time"
    answer = await client.post("/chunked", body)
    assert (answer.status, answer.body) == (200, body)
    assert (await client.post("/echo", b"after")).body == b"after"  # still in step


async def test_timeout_drops_the_connection(server, client) -> None:
    short = http1.Client(f"http://127.0.0.1:{server.port}", headers={}, timeout=0.2)
    try:
        server.delay = 0.5
        with pytest.raises(TimeoutError):
            await short.post("/echo", b"slow")
        server.delay = 0
        # The late answer to "slow" must not be taken for the answer to "next".
        await asyncio.sleep(0.5)
        assert (await short.post("/echo", b"next")).body == b"next"
        assert len(set(server.peers)) == 2
    finally:
        await short.close()


async def test_cancelled_request_drops_the_connection(server, client) -> None:
    server.delay = 0.3
    task = asyncio.create_task(client.post("/echo", b"cancelled"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.delay = 0
    await asyncio.sleep(0.4)
    assert (await client.post("/echo", b"next")).body == b"next"
    assert len(set(server.peers)) == 2


async def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = http1.Client(f"http://127.0.0.1:{port}", headers={}, timeout=2)
    with pytest.raises(http1.HttpError, match="cannot connect"):
        await c.post("/", b"")


async def test_closed_client_refuses(client) -> None:
    await client.close()
    with pytest.raises(http1.HttpError, match="closed"):
        await client.post("/echo", b"")


@pytest.mark.parametrize("url", ["ftp://example.org", "http://", "not a url"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        http1.Client(url, headers={}, timeout=1)


# -- raw servers: answers aiohttp's server would not give -----------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, list[int]]]]]:
    """Starts a raw TCP server with the given handler; yields (base URL, connection counter)."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[str, list[int]]:
        count = [0]

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            count[0] += 1
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        srv = await asyncio.start_server(counted, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", count

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def canned(answer: bytes, linger: float = 0.0) -> Callable[..., Awaitable[None]]:
    """A raw-server handler: read one request, write `answer`, wait `linger` s, close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(linger)

    return handler


async def test_close_delimited_answer(raw_server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + body.upper())
        await writer.drain()

    url, connections = await raw_server(handler)
    c = http1.Client(url, headers={}, timeout=2)
    assert (await c.post("/", b"until close")).body == b"UNTIL CLOSE"
    assert (await c.post("/", b"again")).body == b"AGAIN"
    assert connections == [2]  # not reused after an answer ended by the close
    await c.close()


async def test_connection_close_answer_is_not_reused(raw_server) -> None:
    # Closes a while later: the client must not wait for it.
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    url, connections = await raw_server(canned(answer, linger=0.2))
    c = http1.Client(url, headers={}, timeout=2)
    for _ in range(3):
        assert (await c.post("/", b"x")).body == b"ok"
    assert connections == [3]
    await c.close()


async def test_server_closing_mid_answer(raw_server) -> None:
    url, _ = await raw_server(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"))
    c = http1.Client(url, headers={}, timeout=2)
    with pytest.raises(http1.HttpError, match="closed before a complete answer"):
        await c.post("/", b"")


async def test_server_closing_an_idle_connection(raw_server) -> None:
    # The server closes after its answer: keep-alive ended by the server.
    url, connections = await raw_server(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    c = http1.Client(url, headers={}, timeout=2)
    assert (await c.post("/", b"")).body == b"ok"
    await asyncio.sleep(0.1)  # the close arrives while the connection is idle
    assert (await c.post("/", b"")).body == b"ok"
    assert connections == [2]
    await c.close()


async def test_not_http(raw_server) -> None:
    url, _ = await raw_server(canned(b"SSH-2.0-OpenSSH_9.6\r\n", linger=1))
    c = http1.Client(url, headers={}, timeout=2)
    with pytest.raises(http1.HttpError, match="not HTTP"):
        await c.post("/", b"")


async def test_answer_too_large(raw_server) -> None:
    size = http1.MAX_ANSWER_BYTES + 1
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    url, _ = await raw_server(canned(head + b"x" * size))
    c = http1.Client(url, headers={}, timeout=5)
    with pytest.raises(http1.HttpError, match="larger than"):
        await c.post("/", b"")


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[EchoServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    s = EchoServer()
    await s.start(context)
    yield s
    await s.stop()


async def test_https_with_a_trusted_certificate(tls_server, ca) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    c = http1.Client(
        f"https://127.0.0.1:{tls_server.port}", headers={}, timeout=2, ssl_context=context
    )
    assert (await c.post("/echo", b"over TLS")).body == b"over TLS"
    assert (await c.post("/echo", b"and again")).body == b"and again"
    assert len(set(tls_server.peers)) == 1
    await c.close()


async def test_https_refuses_an_untrusted_certificate(tls_server) -> None:
    c = http1.Client(f"https://127.0.0.1:{tls_server.port}", headers={}, timeout=2)
    with pytest.raises(http1.HttpError, match="CERTIFICATE_VERIFY_FAILED"):
        await c.post("/echo", b"")
    assert tls_server.peers == []
