"""A lean HTTP/1.1 client for one origin: keep-alive connections, one request in flight on each.

For providers that take one message per request (Twilio), the dispatcher makes one HTTP
request per SMS. aiohttp's client spent about two thirds of the dispatcher's CPU per message on
that path (request and response objects, the body writer task, header multidicts, the timeout
context). This client does what the path needs and no more:

- `post(path, body)` with the head prepared once per client (Host, the fixed headers, then
  Content-Length), written with one `write` call;
- answers parsed by httptools (the parser uvicorn uses): Content-Length, chunked and
  close-delimited bodies, `Connection: close` and HTTP/1.0 answers;
- HTTPS through the `ssl` module, certificate and host name verified by default;
- a total timeout per request (connecting included); a request that times out or is cancelled
  takes its connection with it, so a late answer never reaches the next request;
- idle connections kept for reuse (at most `max_idle`), dropped when the server closes them.

Only the answer headers named in `keep_headers` are kept. No proxies, redirects, cookies or
compression: a gateway API needs none of them. Errors before a complete answer raise
`HttpError` (or `TimeoutError`); the caller decides whether to retry, knowing that a POST whose
answer was lost may have been carried out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

DEFAULT_PORTS = {"http": 80, "https": 443}
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
MAX_ANSWER_BYTES = 1 << 20  # a gateway's answer to one message is a few hundred bytes


class HttpError(Exception):
    """The exchange failed before a complete answer: connection refused, reset or closed, an
    answer that is not HTTP, or one larger than `MAX_ANSWER_BYTES`."""


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]  # only the kept ones, names in lower case


class _Connection(asyncio.Protocol):
    """One connection; httptools calls the `on_*` methods while `data_received` feeds it."""

    def __init__(self, keep_headers: frozenset[bytes]) -> None:
        self._keep = keep_headers
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.usable = True  # False once closed, broken or out of step
        self._body: list[bytes] = []
        self._size = 0
        self._headers: dict[str, str] = {}
        self._head_done = False
        self._framed = False  # the answer says where its body ends

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(HttpError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            # A callback's own HttpError (the answer is too large) comes wrapped.
            cause = exc.__context__
            self.fail(cause if isinstance(cause, HttpError) else HttpError(f"not HTTP: {exc}"))

    def eof_received(self) -> bool | None:
        # An answer with neither Content-Length nor chunks ends where the server closes.
        if self.waiter is not None and self._head_done and not self._framed:
            self.on_message_complete()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.waiter is not None:
            reason = f": {exc}" if exc else ""
            self.fail(HttpError(f"connection closed before a complete answer{reason}"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in FRAMING:
            self._framed = True
        if name in self._keep:
            self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            raise HttpError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        answer = Answer(self._parser.get_status_code(), b"".join(self._body), self._headers)
        self._body, self._size, self._headers = [], 0, {}
        self._head_done = self._framed = False
        if waiter is None or not self._parser.should_keep_alive():
            # Nobody asked (the server is out of step with us) or the server will close.
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    # -- used by Client

    def fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        self.usable = False
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


class Client:
    """POSTs to one origin (`base_url`'s scheme, host and port) over kept-alive connections.

    Concurrency is the caller's to bound: each request in flight has a connection of its own.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        keep_headers: Iterable[str] = (),
        max_idle: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or DEFAULT_PORTS[parts.scheme]
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._keep = frozenset(h.lower().encode("latin-1") for h in keep_headers)
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        default_port = parts.port is None or parts.port == DEFAULT_PORTS[parts.scheme]
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        host_header = host if default_port else f"{host}:{self._port}"
        fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        # Everything after the request target up to the Content-Length value.
        self._head_rest = f" HTTP/1.1\r\nHost: {host_header}\r\n{fixed}Content-Length: "
        self._closed = False

    async def post(self, path: str, body: bytes) -> Answer:
        """POST `body` to `path` (which starts with '/'); the answer, whatever its status."""
        if self._closed:
            raise HttpError("client closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        connection = self._take_idle()
        if connection is None:
            connection = await self._connect(deadline)
        head = f"POST {path}{self._head_rest}{len(body)}\r\n\r\n"
        waiter: asyncio.Future[Answer] = loop.create_future()
        connection.waiter = waiter
        assert connection.transport is not None
        connection.transport.write(head.encode("latin-1") + body)
        timer = loop.call_at(deadline, _expire, connection, self._timeout)
        try:
            answer = await waiter
        except BaseException:
            # Timed out, failed or cancelled mid-exchange: the connection's state is unknown.
            connection.fail(HttpError("request abandoned"))
            raise
        finally:
            timer.cancel()
        if connection.usable and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def close(self) -> None:
        """Close the idle connections; requests in flight keep theirs until they end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        await asyncio.sleep(0)  # let the transports close

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
        return None

    async def _connect(self, deadline: float) -> _Connection:
        keep = self._keep
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(keep),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise TimeoutError(f"no connection to {self._host}:{self._port} in time") from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS failures
            raise HttpError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return protocol


def _expire(connection: _Connection, timeout: float) -> None:
    connection.fail(TimeoutError(f"no complete answer within {timeout:g} s"))
