"""The HTTP/1.1 server under the HTTP gateway simulators (GatewayAPI and Twilio).

A simulator is the other end of every throughput figure in bench/, and one request per SMS
(Twilio's wire format) makes its server path count: under aiohttp's web server the Twilio
simulator spent about twice a bare aiohttp server's CPU per request and was the busiest process
of its benchmark. This server does what a simulator needs and no more:

- requests parsed by httptools (the parser uvicorn uses): Content-Length and chunked bodies,
  `Expect: 100-continue`, keep-alive and HTTP/1.0;
- routes by method and path; a path segment written `{name}` is captured, percent-decoded;
- a handler takes a `Request` and returns a `Response` at once, or an awaitable of one (simulated
  latency), or None after closing the connection itself (a simulated drop);
- answers go out in request order, one `write` each: pipelined requests wait their turn;
- a body over `max_body` gets 413 and anything that is not HTTP 400, and the connection closes;
  an unknown path gets 404, a known one with another method 405.

No TLS, no compression, no streaming bodies: the simulators listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 << 20  # a GatewayAPI batch of 1,000 recipients is about 40 kB
JSON_TYPE = "application/json"
_REASONS = {s.value: s.phrase for s in HTTPStatus}


@dataclass(slots=True)
class Request:
    method: str
    path: str  # as sent, without the query
    query: str
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes
    transport: asyncio.Transport
    params: dict[str, str] = field(default_factory=dict)  # the route's `{name}` segments

    @property
    def content_type(self) -> str:
        """The media type without parameters, in lower case ("" when absent)."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


Answer = Response | None  # None: the handler closed the connection without answering
Handler = Callable[[Request], Answer | Awaitable[Answer]]


class Route(NamedTuple):
    method: str
    path: str  # may hold `{name}` segments
    handler: Handler


def get(path: str, handler: Handler) -> Route:
    return Route("GET", path, handler)


def post(path: str, handler: Handler) -> Route:
    return Route("POST", path, handler)


def json_response(
    data: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(status, json.dumps(data).encode(), JSON_TYPE, headers)


_date = (0, "")


def http_date() -> str:
    """Now as an HTTP date (RFC 9110, which is RFC 2822's form in GMT), formatted once a
    second: the Date header, and the dates Twilio writes in its resources."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, formatdate(second, usegmt=True))
    return _date[1]


class _BodyTooLarge(Exception):
    pass


class Router:
    """Finds a request's handler: exact paths by dictionary, `{name}` paths by pattern."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self.add(routes)

    def add(self, routes: Iterable[Route]) -> None:
        for method, path, handler in routes:
            if "{" not in path:
                self._exact.setdefault(path, {})[method] = handler
                continue
            regex = re.compile(
                "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
            )
            for pattern, methods in self._patterns:
                if pattern.pattern == regex.pattern:
                    methods[method] = handler
                    break
            else:
                self._patterns.append((regex, {method: handler}))

    def dispatch(self, request: Request) -> Answer | Awaitable[Answer]:
        methods = self._exact.get(request.path)
        if methods is None:
            for pattern, candidates in self._patterns:
                match = pattern.match(request.path)
                if match:
                    methods = candidates
                    request.params = {k: unquote(v) for k, v in match.groupdict().items()}
                    break
            else:
                return json_response({"message": f"no such resource: {request.path}"}, 404)
        handler = methods.get(request.method)
        if handler is None:
            allow = (("Allow", ", ".join(sorted(methods))),)
            return json_response({"message": f"{request.method} not allowed here"}, 405, allow)
        return handler(request)


class HttpServer:
    """Serves a `Router` on one port; `start()` binds, `close()` stops and drops connections."""

    def __init__(self, router: Router, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.router = router
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        return cast(int, self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()
            self._server = None


class _Connection(asyncio.Protocol):
    """One client connection; httptools calls the `on_*` methods while `data_received` feeds it."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        # Parsed requests waiting for their turn: (request, keep alive, HTTP/1.0).
        self._ready: deque[tuple[Request, bool, bool]] = deque()
        self._waiting: asyncio.Task[None] | None = None  # an awaited answer under way
        self._closed = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server._connections.discard(self)
        if self._waiting is not None:
            self._waiting.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _BodyTooLarge):  # raised by a callback, wrapped
                self._refuse(413, f"the body is larger than {self._server.max_body} bytes")
            else:
                self._refuse(400, f"not HTTP: {exc}")

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        have = self._headers.get(key)
        self._headers[key] = text if have is None else f"{have}, {text}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body:
            raise _BodyTooLarge
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._server.max_body:
            raise _BodyTooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        path, _, query = self._url.decode("latin-1").partition("?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = self._parser.get_method().decode("latin-1")
        request = Request(method, path, query, self._headers, body, self._transport)
        http10 = self._parser.get_http_version() == "1.0"
        self._ready.append((request, self._parser.should_keep_alive(), http10))
        if self._waiting is None:
            self._answer_ready()

    # -- answering

    def _answer_ready(self) -> None:
        """Answer parsed requests in order until one must be awaited."""
        while self._ready and not self._closed:
            request, keep_alive, http10 = self._ready.popleft()
            try:
                answer = self._server.router.dispatch(request)
            except Exception:
                log.exception("the handler of %s %s failed", request.method, request.path)
                answer = json_response({"message": "internal error"}, 500)
            if answer is None or isinstance(answer, Response):
                self._send(answer, keep_alive, http10)
                continue
            assert self._transport is not None
            self._transport.pause_reading()
            self._waiting = asyncio.ensure_future(self._await(answer, keep_alive, http10))
            return

    async def _await(self, pending: Awaitable[Answer], keep_alive: bool, http10: bool) -> None:
        try:
            answer = await pending
        except Exception:
            log.exception("an awaited handler failed")
            answer = json_response({"message": "internal error"}, 500)
        self._waiting = None
        if self._closed:
            return
        self._send(answer, keep_alive, http10)
        if not self._closed:
            assert self._transport is not None
            self._transport.resume_reading()
            self._answer_ready()

    def _send(self, answer: Answer, keep_alive: bool, http10: bool = False) -> None:
        if answer is None:  # the handler dropped the connection
            self.close()
            return
        if self._closed:
            return
        assert self._transport is not None
        extra = "".join(f"{name}: {value}\r\n" for name, value in answer.headers)
        if not keep_alive:
            extra += "Connection: close\r\n"
        elif http10:
            extra += "Connection: keep-alive\r\n"
        head = (
            f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}\r\n"
            f"Content-Type: {answer.content_type}\r\nContent-Length: {len(answer.body)}\r\n"
            f"Date: {http_date()}\r\nServer: broadcaster-simulator\r\n{extra}\r\n"
        )
        self._transport.write(head.encode("latin-1") + answer.body)
        if not keep_alive:
            self.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that could not be read, then close."""
        self._ready.clear()
        if self._waiting is None:
            self._send(json_response({"message": message}, status), keep_alive=False)
        else:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._transport is not None:
                self._transport.close()
