"""A GatewayAPI-compatible SMS gateway simulator over real HTTP, for the demo, tests and benchmarks.

It accepts `POST /rest/mtsms` like GatewayAPI, answers with one id per request, and posts one
JWT-signed receipt per recipient to the request's `callback_url` through a bounded worker pool.
`/_sim/*` endpoints let tests inspect what was accepted and control held receipts.

Run: `python -m gateway_adapters.simulator --port 0` (or `broadcaster simulate-gateway`).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import inspect
import itertools
import json
import logging
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from gateway_adapters.gatewayapi import SHORT_KEY_WARNING

log = logging.getLogger(__name__)

CALLBACK_RETRIES = 5  # retries after the first attempt
CALLBACK_BACKOFF_SECONDS = 0.05  # doubled per retry: 0.05 .. 0.8 s
FAILURE_ERROR = "Simulated delivery failure"
FAILURE_CODE = "SIM-0001"


@dataclass
class SimulatorOptions:
    """How the simulated gateway behaves."""

    token: str = "sim-token"
    webhook_secret: str = "sim-secret"
    latency_ms: float = 0.0
    failure_ratio: float = 0.0
    delivered_ratio: float = 1.0
    receipt_delay_ms: float = 200.0
    send_enroute: bool = False
    # Receipt faults real gateways produce: every receipt posted twice, and the transient
    # ENROUTE arriving after the final status instead of before it.
    duplicate_receipts: bool = False
    enroute_after_final: bool = False
    hold_receipts: bool = False
    receipt_concurrency: int = 32
    seed: int | None = None


@dataclass
class _Stats:
    requests: int = 0
    recipients: int = 0
    rejected_requests: int = 0
    receipts_sent: int = 0
    receipts_failed: int = 0


@dataclass
class _ReceiptJob:
    """The receipts of one recipient, posted in order by one worker (ENROUTE before final)."""

    callback_url: str
    payloads: list[dict[str, Any]] = field(default_factory=list)


class _BadRequest(Exception):
    pass


class GatewaySimulator:
    """The simulator's state and HTTP app; `start()` binds it, `close()` stops everything."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self.stats = _Stats()
        self.messages: list[dict[str, Any]] = []
        # (wall-clock time, recipients, userref) per accepted message object: rate measurements.
        self.timeline: list[tuple[float, int, str | None]] = []
        self._rng = random.Random(self.options.seed)
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[_ReceiptJob] = asyncio.Queue()
        self._held: list[_ReceiptJob] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._pending = 0  # receipts not yet posted or given up (held, delayed, queued, in flight)
        self._workers: list[asyncio.Task[None]] = []
        self._client: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/rest/mtsms", self._handle_send),
                web.get("/_sim/messages", self._handle_messages),
                web.get("/_sim/stats", self._handle_stats),
                web.get("/_sim/timeline", self._handle_timeline),
                web.post("/_sim/release", self._handle_release),
                web.post("/_sim/reset", self._handle_reset),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and start the workers; return the actual port."""
        concurrency = max(1, self.options.receipt_concurrency)
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=10),
        )
        self._workers = [asyncio.create_task(self._worker()) for _ in range(concurrency)]
        # A short shutdown timeout: a simulator has nothing worth waiting for on exit.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        actual_port: int = self._runner.addresses[0][1]
        return actual_port

    async def close(self) -> None:
        """Stop serving, drop receipts not yet posted, and release every resource."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
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

    # -- sending ---------------------------------------------------------------------------------

    async def _handle_send(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        if self.options.latency_ms > 0:
            await asyncio.sleep(self.options.latency_ms / 1000)
        if not self._authorized(request.headers.get("Authorization", "")):
            return self._reject(401, "SIM-AUTH", "missing or wrong API token")
        if self._rng.random() < self.options.failure_ratio:
            return self._reject(500, "SIM-FAIL", "simulated internal error")
        try:
            bodies = self._validate(await request.read())
        except _BadRequest as exc:
            return self._reject(400, "SIM-BAD-REQUEST", str(exc))

        # The root is one message object or a list of them; one id per message object.
        ids = []
        for body in bodies:
            message_id = next(self._ids)
            ids.append(message_id)
            msisdns = [r["msisdn"] for r in body["recipients"]]
            userref = body.get("userref")
            self.stats.recipients += len(msisdns)
            self.timeline.append((time.time(), len(msisdns), userref))
            for msisdn in msisdns:
                self.messages.append(
                    {
                        "id": message_id,
                        "msisdn": msisdn,
                        "message": body["message"],
                        "userref": userref,
                        "priority": body.get("priority", "NORMAL"),
                        "encoding": body.get("encoding", "UTF8"),
                        "validity_period": body.get("validity_period"),
                    }
                )
            callback_url = body.get("callback_url")
            if callback_url:
                self._schedule_receipts(message_id, msisdns, userref, callback_url)
            log.debug("accepted message %d with %d recipients", message_id, len(msisdns))
        usage = {"countries": {}, "currency": "EUR", "total_cost": 0.0}
        return web.json_response({"ids": ids, "usage": usage})

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "token" and hmac.compare_digest(
            token.strip().encode(), self.options.token.encode()
        )

    def _reject(self, status: int, code: str, message: str) -> web.Response:
        self.stats.rejected_requests += 1
        return web.json_response({"code": code, "message": message}, status=status)

    @classmethod
    def _validate(cls, raw: bytes) -> list[dict[str, Any]]:
        """The message objects of a request, or `_BadRequest` saying what is wrong."""
        try:
            root = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest("body is not JSON") from None
        bodies = root if isinstance(root, list) else [root]
        if not bodies:
            raise _BadRequest("empty list of messages")
        return [cls._validate_message(body) for body in bodies]

    @staticmethod
    def _validate_message(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _BadRequest("a message is not a JSON object")
        message = body.get("message")
        if not isinstance(message, str) or not message:
            raise _BadRequest("message must be a non-empty string")
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise _BadRequest("recipients must be a non-empty list")
        for recipient in recipients:
            msisdn = recipient.get("msisdn") if isinstance(recipient, dict) else None
            if not isinstance(msisdn, int) or isinstance(msisdn, bool) or msisdn <= 0:
                raise _BadRequest("each recipient needs an integer msisdn")
        for key in ("callback_url", "userref", "sender"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise _BadRequest(f"{key} must be a string")
        if body.get("priority", "NORMAL") not in ("BULK", "NORMAL", "URGENT", "VERY_URGENT"):
            raise _BadRequest("priority must be BULK, NORMAL, URGENT or VERY_URGENT")
        if body.get("encoding", "UTF8") not in ("UTF8", "UCS2"):
            raise _BadRequest("encoding must be UTF8 or UCS2")
        validity = body.get("validity_period")
        if validity is not None and (not isinstance(validity, int) or validity <= 0):
            raise _BadRequest("validity_period must be a positive number of seconds")
        return body

    # -- receipts --------------------------------------------------------------------------------

    def _schedule_receipts(
        self, message_id: int, msisdns: list[int], userref: str | None, callback_url: str
    ) -> None:
        jobs = []
        for msisdn in msisdns:
            job = _ReceiptJob(callback_url)
            if self.options.send_enroute:
                job.payloads.append(self._receipt(message_id, msisdn, userref, "ENROUTE"))
            if self._rng.random() < self.options.delivered_ratio:
                job.payloads.append(self._receipt(message_id, msisdn, userref, "DELIVERED"))
            else:
                failed = self._receipt(message_id, msisdn, userref, "UNDELIVERABLE")
                failed.update(error=FAILURE_ERROR, code=FAILURE_CODE)
                job.payloads.append(failed)
            if self.options.enroute_after_final:
                job.payloads.append(self._receipt(message_id, msisdn, userref, "ENROUTE"))
            if self.options.duplicate_receipts:
                job.payloads += [dict(p) for p in job.payloads]
            self._pending += len(job.payloads)
            jobs.append(job)

        if self.options.hold_receipts:
            self._held.extend(jobs)
            return
        # A timer rather than sleeping workers, so the delay does not eat into the pool.
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def enqueue() -> None:
            if timer is not None:
                self._timers.discard(timer)
            for job in jobs:
                self._queue.put_nowait(job)

        timer = loop.call_later(max(0.0, self.options.receipt_delay_ms / 1000), enqueue)
        self._timers.add(timer)

    @staticmethod
    def _receipt(message_id: int, msisdn: int, userref: str | None, status: str) -> dict[str, Any]:
        return {
            "id": message_id,
            "msisdn": msisdn,
            "time": int(time.time()),
            "status": status,
            "error": None,
            "code": None,
            "userref": userref,
        }

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

    async def _post_receipt(self, url: str, payload: dict[str, Any]) -> bool:
        """POST one signed receipt, retrying a few times; True once the receiver took it."""
        assert self._client is not None
        with warnings.catch_warnings():
            # The default secret is short on purpose (easy to type); that is fine for a simulator.
            warnings.simplefilter("ignore", SHORT_KEY_WARNING)
            signature = jwt.encode(payload, self.options.webhook_secret, algorithm="HS256")
        headers = {"X-Gwapi-Signature": signature}
        for attempt in range(CALLBACK_RETRIES + 1):
            if attempt:
                await asyncio.sleep(CALLBACK_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                async with self._client.post(url, json=payload, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    log.debug("callback answered %d (attempt %d)", resp.status, attempt + 1)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.debug("callback failed: %s (attempt %d)", exc, attempt + 1)
        log.warning("gave up on a receipt for message %s", payload["id"])
        return False

    # -- inspection ------------------------------------------------------------------------------

    async def _handle_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages)

    async def _handle_stats(self, request: web.Request) -> web.Response:
        stats = dict(vars(self.stats), receipts_pending=self._pending)
        return web.json_response(stats)

    async def _handle_timeline(self, request: web.Request) -> web.Response:
        return web.json_response(self.timeline)

    async def _handle_release(self, request: web.Request) -> web.Response:
        held, self._held = self._held, []
        for job in held:
            self._queue.put_nowait(job)
        return web.json_response({"released": sum(len(job.payloads) for job in held)})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        # Receipts already under way keep going (and keep counting as pending): they are work,
        # not history. Ids keep increasing so old receipts cannot be confused with new messages.
        self.messages.clear()
        self.timeline.clear()
        self.stats = _Stats()
        return web.json_response({"reset": True})


async def serve(
    options: SimulatorOptions,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[int], object] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever); `ready(port)` is called once bound."""
    simulator = GatewaySimulator(options)
    try:
        actual_port = await simulator.start(host, port)
        if ready is not None:
            result = ready(actual_port)
            if inspect.isawaitable(result):
                await result
        await (stop or asyncio.Event()).wait()
    finally:
        await simulator.close()


# -- command line --------------------------------------------------------------------------------


def _number(value: str, kind: type[float] | type[int] = float) -> float:
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def _ratio(value: str) -> float:
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def _non_negative(value: str) -> float:
    number = _number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


def _port(value: str) -> int:
    number = int(_number(value, int))
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorOptions()
    parser = argparse.ArgumentParser(
        prog="broadcaster simulate-gateway",
        description="Run a GatewayAPI-compatible SMS gateway simulator.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    add("--port", type=_port, default=9100, help="port to bind, 0 = any free (default %(default)s)")
    add("--token", default=defaults.token, help="expected API token")
    add("--webhook-secret", default=defaults.webhook_secret, help="HS256 key signing receipts")
    add("--latency-ms", type=_non_negative, default=defaults.latency_ms)
    add("--failure-ratio", type=_ratio, default=defaults.failure_ratio)
    add("--delivered-ratio", type=_ratio, default=defaults.delivered_ratio)
    add("--receipt-delay-ms", type=_non_negative, default=defaults.receipt_delay_ms)
    add("--send-enroute", action="store_true", help="post ENROUTE before each final receipt")
    add("--duplicate-receipts", action="store_true", help="post every receipt twice")
    add("--enroute-after-final", action="store_true", help="post ENROUTE after the final receipt")
    add("--hold-receipts", action="store_true", help="keep receipts until POST /_sim/release")
    add("--seed", type=int, default=None, help="seed for reproducible outcomes")
    return parser


PROTOCOLS = {
    "gatewayapi": "gateway_adapters.simulator",
    "twilio": "gateway_adapters.simulator_twilio",
    "smpp": "gateway_adapters.simulator_smpp",
}


def _split_protocol(argv: list[str]) -> tuple[str, list[str]]:
    """Take `--protocol NAME` (or `--protocol=NAME`) out of argv; GatewayAPI by default."""
    rest: list[str] = []
    protocol = "gatewayapi"
    items = iter(argv)
    for item in items:
        if item == "--protocol":
            protocol = next(items, "")
        elif item.startswith("--protocol="):
            protocol = item.split("=", 1)[1]
        else:
            rest.append(item)
    return protocol, rest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; serves until SIGTERM or SIGINT. `--protocol gatewayapi|twilio|
    smpp` picks the wire format (each has its own options; see `--protocol X --help`)."""
    protocol, argv = _split_protocol(list(sys.argv[1:] if argv is None else argv))
    if protocol not in PROTOCOLS:
        print(
            f"broadcaster simulate-gateway: error: unknown --protocol {protocol!r}; "
            f"choose from {', '.join(PROTOCOLS)}",
            file=sys.stderr,
        )
        return 2
    if protocol != "gatewayapi":
        import importlib

        module = importlib.import_module(PROTOCOLS[protocol])
        return int(module.main(argv))
    args = build_parser().parse_args(argv)
    options = SimulatorOptions(
        token=args.token,
        webhook_secret=args.webhook_secret,
        latency_ms=args.latency_ms,
        failure_ratio=args.failure_ratio,
        delivered_ratio=args.delivered_ratio,
        receipt_delay_ms=args.receipt_delay_ms,
        send_enroute=args.send_enroute,
        duplicate_receipts=args.duplicate_receipts,
        enroute_after_final=args.enroute_after_final,
        hold_receipts=args.hold_receipts,
        seed=args.seed,
    )

    def announce(port: int) -> None:
        print(f"simulator listening on http://{args.host}:{port}", flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, args.host, args.port, ready=announce, stop=stop)

    try:
        asyncio.run(run())
    except OSError as exc:  # e.g. the port is taken
        print(f"broadcaster simulate-gateway: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
