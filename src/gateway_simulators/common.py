"""Scaffolding shared by the gateway simulators (GatewayAPI, Twilio and SMPP).

`HttpGatewaySimulator` holds what the two HTTP simulators have in common: the HTTP server's
lifecycle (`http_server`), the receipt queue with its worker pool, delay timers and
hold/release, the retrying receipt poster, the `/_sim/*` inspection handlers, and
`POST /_sim/inbound`, which makes the simulator post a citizen's SMS to the configured inbound
URL as the provider's incoming-message webhook would. The provider-specific parts (request
validation, receipt and inbound payloads, signing) stay in the simulator modules.

The command-line helpers (`ratio`, `non_negative`, `port`, `run_until_signalled`, ...) are used by
all three simulators' `main()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Protocol, TypeVar

import aiohttp

from gateway_simulators.http_server import (
    Answer,
    HttpServer,
    Request,
    Response,
    Route,
    Router,
    get,
    json_response,
    post,
)

# Receipt posting: retries after the first attempt, and the first backoff (doubled per retry:
# 0.05 .. 0.8 s, and never above the maximum). Each HTTP simulator module re-exports the first
# two and reads its own copy per post.
CALLBACK_RETRIES = 5
CALLBACK_BACKOFF_SECONDS = 0.05
CALLBACK_MAX_BACKOFF_SECONDS = 1.0

# Options `POST /_sim/faults` leaves alone: read once at start, or not a fault.
_FIXED_OPTIONS = frozenset({"seed", "inbound_receiver", "receipt_concurrency"})

PayloadT = TypeVar("PayloadT")
OptionsT = TypeVar("OptionsT")
OptionsT_contra = TypeVar("OptionsT_contra", contravariant=True)


class ReceiptOptions(Protocol):
    """The options the shared receipt pipeline reads."""

    receipt_delay_ms: float
    hold_receipts: bool
    receipt_concurrency: int


@dataclass
class ReceiptJob(Generic[PayloadT]):
    """The receipts of one recipient, posted in order by one worker (transient before final)."""

    callback_url: str
    payloads: list[PayloadT] = field(default_factory=list)


class HttpStats:
    """The counters `/_sim/stats` reports (plus `receipts_pending`), in that order."""

    def __init__(self) -> None:
        self.requests = 0
        self.recipients = 0
        self.rejected_requests = 0  # every non-2xx answer, throttling included
        self.receipts_sent = 0
        self.receipts_failed = 0
        self.receipt_retries = 0  # attempts after a refused or failed one
        # Storm faults (see `answer_slowly`, `reset_connection`): connections reset before the
        # messages were taken, and requests whose messages were taken but whose answer was
        # lost (reset) or sent late (slow).
        self.resets = 0
        self.lost_answers = 0
        self.slow_answers = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)})"


class HttpGatewaySimulator(Generic[PayloadT]):
    """An HTTP simulator's app and receipt pipeline; `start()` binds it, `close()` stops it.

    Subclasses set `stats` (with `receipts_sent`/`receipts_failed` counters) and `messages`, add
    their send route to `self.router`, and implement `_post_receipt` and `_reset`.
    """

    stats: Any
    messages: list[dict[str, Any]]

    def __init__(self, options: ReceiptOptions) -> None:
        self._receipt_options = options
        self._queue: asyncio.Queue[ReceiptJob[PayloadT]] = asyncio.Queue()
        self._held: list[ReceiptJob[PayloadT]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._pending = 0  # receipts not yet posted or given up (held, delayed, queued, in flight)
        self._workers: list[asyncio.Task[None]] = []
        self._client: aiohttp.ClientSession | None = None
        self.router = Router()
        self._server: HttpServer | None = None
        self.inbound_posted = 0

    def _inspection_routes(self) -> list[Route]:
        return [
            get("/_sim/messages", self._handle_messages),
            get("/_sim/stats", self._handle_stats),
        ]

    def _control_routes(self) -> list[Route]:
        return [
            post("/_sim/release", self._handle_release),
            post("/_sim/reset", self._handle_reset),
            post("/_sim/inbound", self._handle_inbound),
            post("/_sim/faults", self._handle_faults),
        ]

    def _count_and_answer(
        self,
        latency_ms: float,
        send: Callable[[Request], Answer | Awaitable[Answer]],
        request: Request,
    ) -> Answer | Awaitable[Answer]:
        """Count the request, then answer it with `send` at once or after the simulated
        latency (the server awaits only then: no task per request on the usual path). The
        latency comes before the request is handled (a queue in front of the gateway): a client
        that gives up meanwhile leaves nothing taken. `answer_slowly` is the other kind."""
        self.stats.requests += 1
        if latency_ms <= 0:
            return send(request)
        return self._answer_later(latency_ms / 1000, send, request)

    @staticmethod
    async def _answer_later(
        delay: float, send: Callable[[Request], Answer | Awaitable[Answer]], request: Request
    ) -> Answer:
        await asyncio.sleep(delay)
        answer = send(request)
        if inspect.isawaitable(answer):
            return await answer
        return answer

    def answer_slowly(self, answer: Response, slow_ms: float) -> Awaitable[Answer]:
        """The answer to a request whose messages were taken already, sent after `slow_ms`: a
        client whose timeout is shorter never sees it, and the messages go out all the same."""
        self.stats.slow_answers += 1
        return self._late(answer, slow_ms / 1000)

    @staticmethod
    async def _late(answer: Response, delay: float) -> Answer:
        await asyncio.sleep(delay)
        return answer

    def reset_connection(self, request: Request, *, taken: bool) -> Answer:
        """End the request's connection with a TCP reset and no answer (the client reads
        "connection reset by peer"); `taken`: the messages were taken before it."""
        if taken:
            self.stats.lost_answers += 1
        else:
            self.stats.resets += 1
            self.stats.rejected_requests += 1
        sock = request.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Linger with a zero timeout: close() sends RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.abort()
        return None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and start the workers; return the actual port."""
        concurrency = max(1, self._receipt_options.receipt_concurrency)
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=10),
        )
        self._workers = [asyncio.create_task(self._worker()) for _ in range(concurrency)]
        self._server = HttpServer(self.router)
        return await self._server.start(host, port)

    async def close(self) -> None:
        """Stop serving, drop receipts not yet posted, and release every resource."""
        if self._server is not None:
            await self._server.close()
            self._server = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- receipts --------------------------------------------------------------------------------

    def _schedule_jobs(self, jobs: list[ReceiptJob[PayloadT]]) -> None:
        """Count the jobs as pending, then hold them or queue them after the receipt delay."""
        self._pending += sum(len(job.payloads) for job in jobs)
        if self._receipt_options.hold_receipts:
            self._held.extend(jobs)
            return
        # A timer rather than sleeping workers, so the delay does not eat into the pool.
        delay = max(0.0, self._receipt_options.receipt_delay_ms / 1000)

        def enqueue() -> None:
            for job in jobs:
                self._queue.put_nowait(job)

        call_later_tracked(self._timers, delay, enqueue)

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                for payload in job.payloads:
                    ok = await self._post_receipt(job.callback_url, payload)
                    self._pending -= 1
                    if ok:
                        self.stats.receipts_sent += 1
                    else:
                        self.stats.receipts_failed += 1
            finally:
                self._queue.task_done()

    async def _post_receipt(self, url: str, payload: PayloadT) -> bool:
        """POST one receipt; True once the receiver took it."""
        raise NotImplementedError

    async def _post_with_retries(
        self,
        url: str,
        request: dict[str, Any],
        policy: tuple[int, float, logging.Logger],
        what: str,
    ) -> bool:
        """POST `request` (json=/data=/headers=) to `url`; `policy` is (retries after the first
        attempt, first backoff in seconds, doubled per retry up to CALLBACK_MAX_BACKOFF_SECONDS,
        logger). False after giving up."""
        assert self._client is not None
        retries, backoff_seconds, logger = policy
        for attempt in range(retries + 1):
            if attempt:
                self.stats.receipt_retries += 1
                backoff = backoff_seconds * 2 ** min(attempt - 1, 30)
                await asyncio.sleep(min(backoff, CALLBACK_MAX_BACKOFF_SECONDS))
            try:
                async with self._client.post(url, **request) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    logger.debug("callback answered %d (attempt %d)", resp.status, attempt + 1)
            except (TimeoutError, aiohttp.ClientError) as exc:
                logger.debug("callback failed: %s (attempt %d)", exc, attempt + 1)
        logger.warning("gave up on %s", what)
        return False

    # -- inbound messages ------------------------------------------------------------------------

    def _inbound_request(
        self, url: str, sender: str, text: str, message_id: str | None
    ) -> tuple[str, dict[str, Any]]:
        """The message's id (a new one unless given) and the provider's signed
        incoming-message request to `url` (json= or data=, headers=)."""
        raise NotImplementedError

    async def _handle_inbound(self, request: Request) -> Response:
        """`{"from": "+4520123456", "text": "STOP"[, "id": "..."]}`: post it once to the
        configured inbound URL as the provider would; answers with the receiver's status and
        body (`id` again posts a message the receiver may have seen: a provider's retry)."""
        url = getattr(self._receipt_options, "inbound_url", None)
        if not url:
            return json_response({"error": "no inbound_url configured"}, 409)
        try:
            ask = json.loads(request.body)
            sender, text = str(ask["from"]), str(ask["text"])
            message_id = None if ask.get("id") is None else str(ask["id"])
            message_id, outgoing = self._inbound_request(url, sender, text, message_id)
        except (ValueError, KeyError, TypeError):
            return json_response({"error": 'expected {"from": "+45...", "text": ...}'}, 400)
        assert self._client is not None
        try:
            async with self._client.post(url, **outgoing) as resp:
                body = await resp.read()
                answer = {
                    "status": resp.status,
                    "content_type": resp.content_type,
                    "body": body.decode("utf-8", "replace"),
                }
        except (TimeoutError, aiohttp.ClientError) as exc:
            answer = {"status": None, "error": type(exc).__name__}
        self.inbound_posted += 1
        return json_response({"id": message_id, **answer})

    # -- inspection ------------------------------------------------------------------------------

    def _handle_messages(self, request: Request) -> Response:
        return json_response(self.messages)

    def _handle_stats(self, request: Request) -> Response:
        return json_response(dict(vars(self.stats), receipts_pending=self._pending))

    def _handle_faults(self, request: Request) -> Response:
        """`{"failure_ratio": 1.0, "throttle_retry_after": 2, ...}`: change the fault and
        receipt options of a running simulator (a storm starts and ends without a restart);
        answers every such option's value. Only options that are numbers or flags can change:
        names, tokens and the account's lists stay as started."""
        try:
            changes = json.loads(request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            updates = {name: self._fault_value(name, value) for name, value in changes.items()}
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        for name, value in updates.items():
            setattr(self._receipt_options, name, value)
        return json_response(self._faults())

    def _faults(self) -> dict[str, Any]:
        options = vars(self._receipt_options)
        return {
            name: value
            for name, value in options.items()
            if isinstance(value, int | float) and name not in _FIXED_OPTIONS
        }

    def _fault_value(self, name: str, value: Any) -> bool | int | float:
        current = self._faults()
        if name not in current:
            raise ValueError(f"not a fault option: {name!r} (one of {', '.join(current)})")
        kind = type(current[name])
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a non-negative number")
        if kind is int and value != int(value):
            raise ValueError(f"{name} must be a whole number")
        if name.endswith("_ratio") and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        return kind(value)

    def _handle_release(self, request: Request) -> Response:
        held, self._held = self._held, []
        for job in held:
            self._queue.put_nowait(job)
        return json_response({"released": sum(len(job.payloads) for job in held)})

    def _handle_reset(self, request: Request) -> Response:
        # Receipts already under way keep going (and keep counting as pending): they are work,
        # not history.
        self._reset()
        return json_response({"reset": True})

    def _reset(self) -> None:
        """Forget accepted messages and statistics."""
        raise NotImplementedError


def call_later_tracked(
    timers: set[asyncio.TimerHandle], delay: float, callback: Callable[[], object]
) -> None:
    """Call `callback` after `delay` seconds; the timer stays in `timers` (to cancel) until then."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def fire() -> None:
        if timer is not None:
            timers.discard(timer)
        callback()

    timer = loop.call_later(delay, fire)
    timers.add(timer)


class _Startable(Protocol):
    async def start(self, host: str = ..., port: int = ...) -> int: ...

    async def close(self) -> None: ...


async def notify_ready(ready: Callable[..., object] | None, *args: Any) -> None:
    """Call `ready(*args)` if given, awaiting its result when it is awaitable."""
    if ready is not None:
        result = ready(*args)
        if inspect.isawaitable(result):
            await result


class HttpServe(Protocol[OptionsT_contra]):
    """An HTTP simulator module's `serve(options, host, port, *, ready, stop)`."""

    def __call__(
        self,
        options: OptionsT_contra,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ready: Callable[[int], object] | None = None,
        stop: asyncio.Event | None = None,
    ) -> Coroutine[Any, Any, None]: ...


def http_serve(simulator_cls: Callable[[OptionsT], _Startable]) -> HttpServe[OptionsT]:
    """The `serve` function of an HTTP simulator built by `simulator_cls(options)`."""

    async def serve(
        options: OptionsT,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ready: Callable[[int], object] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Serve until `stop` is set (or forever); `ready(port)` is called once bound."""
        simulator = simulator_cls(options)
        try:
            actual_port = await simulator.start(host, port)
            await notify_ready(ready, actual_port)
            await (stop or asyncio.Event()).wait()
        finally:
            await simulator.close()

    return serve


# -- command line --------------------------------------------------------------------------------


def number(value: str, kind: type[float] | type[int] = float) -> float:
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def ratio(value: str) -> float:
    result = number(value)
    if not 0.0 <= result <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return result


def non_negative(value: str) -> float:
    result = number(value)
    if result < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return result


def port(value: str, *, invalid: str = "not a number") -> int:
    try:
        result = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{invalid}: {value!r}") from None
    if not 0 <= result <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return result


def simulator_parser(
    prog: str,
    description: str,
    *,
    default_port: int = 9100,
    port_type: Callable[[str], int] = port,
    port_help: str = "port to bind, 0 = any free (default %(default)s)",
) -> argparse.ArgumentParser:
    """A simulator's argument parser with its `--host` and `--port` options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=port_type, default=default_port, help=port_help)
    return parser


def add_fault_options(
    parser: argparse.ArgumentParser, defaults: Any, ratios: list[tuple[str, str | None]]
) -> None:
    """Add `--latency-ms`, one `--NAME-ratio` per (NAME, help) in `ratios`, `--delivered-ratio`
    and `--receipt-delay-ms`, with their defaults taken from the options `defaults`."""
    add = parser.add_argument
    add("--latency-ms", type=non_negative, default=defaults.latency_ms)
    for name, help_text in ratios:
        add(
            f"--{name}-ratio",
            type=ratio,
            default=getattr(defaults, f"{name.replace('-', '_')}_ratio"),
            help=help_text,
        )
    add("--delivered-ratio", type=ratio, default=defaults.delivered_ratio)
    add("--receipt-delay-ms", type=non_negative, default=defaults.receipt_delay_ms)


def run_until_signalled(serve_coro_factory: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run `serve_coro_factory(stop)` until SIGTERM or SIGINT sets `stop`; the exit status."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_coro_factory(stop)

    try:
        # uvloop where available, as the service and the benchmarks' bare ceiling servers use:
        # the simulator is the other end of every throughput figure.
        with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
            runner.run(run())
    except OSError as exc:  # e.g. the port is taken
        print(f"broadcaster simulate-gateway: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def options_from_args(cls: Callable[..., OptionsT], args: argparse.Namespace) -> OptionsT:
    """The options dataclass `cls` built from the parsed flags named like its fields."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def serve_http_until_signalled(
    serve: HttpServe[OptionsT], options: OptionsT, host: str, port: int
) -> int:
    """Run an HTTP simulator's `serve(options, host, port, ready=, stop=)` until signalled."""

    def announce(actual_port: int) -> None:
        print(f"simulator listening on http://{host}:{actual_port}", flush=True)

    return run_until_signalled(lambda stop: serve(options, host, port, ready=announce, stop=stop))
