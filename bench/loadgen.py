"""A lean HTTP/1.1 load generator for measuring one server process: keep-alive connections,
one request in flight on each (as a gateway posting callbacks does), requests encoded before
the clock starts, answers parsed only as far as status and Content-Length.

Why not aiohttp here: on a 2-core machine an aiohttp client spends about as much CPU per
request as the uvicorn server it measures, so the figure says as much about the load generator
as about the server. This one spends a fraction of that (event-driven, no task or future per
request), which leaves the server and its database the machine, as they would have it in
production where the gateway is elsewhere. bench/receipts.py and the API ceiling use it
(`--client lean`, the default) and can use aiohttp instead (`--client aiohttp`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import cast
from urllib.parse import urlsplit


def encode_post(target: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """One POST request to `target` (a full URL) as bytes on the wire."""
    parts = urlsplit(target)
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + body


class LoadError(Exception):
    """The server broke the exchange (closed a connection, sent something not HTTP)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; on each complete answer it sends the next request."""

    def __init__(self) -> None:
        self.run: _Run | None = None
        self._buffer = b""
        self._need = -1  # bytes of the whole answer once its head is read
        self._status = 0
        self._sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send_next(self) -> None:
        assert self.run is not None and self.transport is not None
        request = self.run.take()
        if request is None:
            self.run.idle()
            return
        self._sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        run = self.run
        if run is None:
            return
        buffer = self._buffer + data if self._buffer else data
        if self._need < 0:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                self._buffer = buffer
                return
            head = buffer[:head_end].lower()
            try:
                self._status = int(head[9:12])
                start = head.index(b"\r\ncontent-length:") + 17
                end = head.find(b"\r\n", start)
                length = int(head[start : end if end >= 0 else None])
            except ValueError:
                run.fail(LoadError(f"unreadable answer head: {buffer[:200]!r}"))
                return
            self._need = head_end + 4 + length
        if len(buffer) < self._need:
            self._buffer = buffer
            return
        if len(buffer) > self._need:
            run.fail(LoadError("more bytes than one answer (no pipelining is used)"))
            return
        self._buffer = b""
        self._need = -1
        run.answered(self._status, time.perf_counter() - self._sent_at)
        self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.run is not None and not self.run.done.done():
            self.run.fail(LoadError(f"the server closed a connection: {exc!r}"))


class _Run:
    def __init__(self, requests: Iterator[bytes], connections: int) -> None:
        self._requests = requests
        self._busy = connections
        self.ok = 0
        self.failed = 0
        self.latencies: list[float] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take(self) -> bytes | None:
        return next(self._requests, None)

    def answered(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.failed += 1

    def idle(self) -> None:
        self._busy -= 1
        if self._busy == 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class LoadGenerator:
    """`concurrency` keep-alive connections to one http:// server; `run` sends requests."""

    def __init__(self, target: str, concurrency: int) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host:port/... targets: {target!r}")
        self._address = (parts.hostname, parts.port or 80)
        self._concurrency = max(1, concurrency)
        self._connections: list[_Connection] = []

    async def __aenter__(self) -> LoadGenerator:
        loop = asyncio.get_running_loop()
        try:
            for _ in range(self._concurrency):
                _, conn = await loop.create_connection(_Connection, *self._address)
                self._connections.append(conn)
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._connections:
            conn.run = None
            if conn.transport is not None:
                conn.transport.close()
        self._connections.clear()

    async def run(self, requests: Sequence[bytes]) -> tuple[float, int, int, list[float]]:
        """Send every request once; returns (seconds from the first request to the last
        answer, answers 2xx, other answers, latencies in seconds)."""
        run = _Run(iter(requests), len(self._connections))
        start = time.perf_counter()
        for conn in self._connections:
            conn.run = run
            conn.send_next()
        try:
            await run.done
        finally:
            for conn in self._connections:
                conn.run = None
        return time.perf_counter() - start, run.ok, run.failed, run.latencies
