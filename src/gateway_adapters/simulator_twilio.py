"""A Twilio-compatible SMS gateway simulator over real HTTP, for the demo, tests and benchmarks.

It accepts `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` like Twilio (form-encoded, HTTP
Basic auth, one recipient per request), answers 201 with a message SID, and posts signed,
form-encoded status callbacks to the request's `StatusCallback` through a bounded worker pool.
`/_sim/*` endpoints let tests inspect what was accepted and control held callbacks.

Run: `python -m gateway_adapters.simulator_twilio --port 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import inspect
import logging
import random
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateway_adapters.twilio import (
    API_VERSION,
    MESSAGING_SERVICE_PREFIX,
    THROTTLE_CODE,
    is_e164,
    split_token,
    twilio_signature,
)

log = logging.getLogger(__name__)

CALLBACK_RETRIES = 5  # retries after the first attempt
CALLBACK_BACKOFF_SECONDS = 0.05  # doubled per retry: 0.05 .. 0.8 s
FAILURE_STATUS = "undelivered"
FAILURE_CODE = "30003"  # Twilio: unreachable destination handset
RETRY_AFTER_SECONDS = "1"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


@dataclass
class TwilioSimulatorOptions:
    """How the simulated gateway behaves."""

    token: str = "ACsim:authsim"  # AccountSid:AuthToken
    latency_ms: float = 0.0
    failure_ratio: float = 0.0  # answer 500
    throttle_ratio: float = 0.0  # answer 429 / 20429
    invalid_ratio: float = 0.0  # answer 400 / 21211 for a well-formed request
    delivered_ratio: float = 1.0
    receipt_delay_ms: float = 200.0
    send_sent: bool = False
    hold_receipts: bool = False
    receipt_concurrency: int = 32
    seed: int | None = None


@dataclass
class _Stats:
    requests: int = 0
    recipients: int = 0  # accepted messages; named like the GatewayAPI simulator's stats
    rejected_requests: int = 0  # every non-2xx answer, throttling included
    throttled_requests: int = 0
    receipts_sent: int = 0
    receipts_failed: int = 0


@dataclass
class _ReceiptJob:
    """The callbacks of one message, posted in order by one worker ("sent" before final)."""

    callback_url: str
    payloads: list[dict[str, str]] = field(default_factory=list)


class _Refusal(Exception):
    """An error answer: HTTP status, Twilio error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class TwilioSimulator:
    """The simulator's state and HTTP app; `start()` binds it, `close()` stops everything."""

    def __init__(self, options: TwilioSimulatorOptions | None = None) -> None:
        self.options = options or TwilioSimulatorOptions()
        self.account_sid, self.auth_token = split_token(self.options.token)
        self.stats = _Stats()
        self.messages: list[dict[str, Any]] = []
        self._rng = random.Random(self.options.seed)
        self._queue: asyncio.Queue[_ReceiptJob] = asyncio.Queue()
        self._held: list[_ReceiptJob] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._pending = 0  # callbacks not yet posted or given up (held, delayed, queued, in flight)
        self._workers: list[asyncio.Task[None]] = []
        self._client: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post(f"/{API_VERSION}/Accounts/{{sid}}/Messages.json", self._handle_send),
                web.get("/_sim/messages", self._handle_messages),
                web.get("/_sim/stats", self._handle_stats),
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
        """Stop serving, drop callbacks not yet posted, and release every resource."""
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
        try:
            if not self._authorized(request.headers.get("Authorization", "")):
                raise _Refusal(401, 20003, "Authenticate")
            if request.match_info["sid"] != self.account_sid:
                raise _Refusal(404, 20404, "The requested resource was not found")
            if self._rng.random() < self.options.failure_ratio:
                raise _Refusal(500, 20500, "Internal Server Error (simulated)")
            if self._rng.random() < self.options.throttle_ratio:
                self.stats.throttled_requests += 1
                raise _Refusal(429, THROTTLE_CODE, "Too Many Requests (simulated)")
            form = self._validate(await request.post())
            if self._rng.random() < self.options.invalid_ratio:
                raise _Refusal(400, 21211, "The 'To' number is not a valid phone number.")
        except _Refusal as refusal:
            return self._reject(refusal)

        sid = "SM" + uuid.uuid4().hex
        self.stats.recipients += 1
        self.messages.append({"sid": sid, "to": form["To"], "body": form["Body"]})
        callback_url = form.get("StatusCallback")
        if callback_url:
            self._schedule_receipts(sid, form, callback_url)
        log.debug("accepted message %s", sid)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": API_VERSION,
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
                "price": None,
                "error_code": None,
                "error_message": None,
                "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.account_sid}:{self.auth_token}".encode()
        return hmac.compare_digest(decoded, expected)

    def _reject(self, refusal: _Refusal) -> web.Response:
        self.stats.rejected_requests += 1
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if refusal.status == 429 else None
        body = {
            "code": refusal.code,
            "message": refusal.message,
            "more_info": MORE_INFO.format(code=refusal.code),
            "status": refusal.status,
        }
        return web.json_response(body, status=refusal.status, headers=headers)

    @staticmethod
    def _validate(form: Mapping[str, Any]) -> dict[str, str]:
        """The form's string fields, or `_Refusal` (400 with Twilio's code) for a bad request."""
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        to = fields.get("To", "")
        if not to:
            raise _Refusal(400, 21604, "A 'To' phone number is required.")
        if not is_e164(to):
            raise _Refusal(400, 21211, "The 'To' number is not a valid phone number.")
        if not fields.get("Body"):
            raise _Refusal(400, 21602, "Message body is required.")
        service = fields.get("MessagingServiceSid")
        if not fields.get("From") and not service:
            raise _Refusal(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if service and not service.startswith(MESSAGING_SERVICE_PREFIX):
            raise _Refusal(400, 21701, "The Messaging Service Sid is invalid.")
        callback = fields.get("StatusCallback")
        if callback and not callback.startswith(("http://", "https://")):
            raise _Refusal(400, 21609, "The StatusCallback URL is not a valid URL.")
        return fields

    # -- status callbacks ------------------------------------------------------------------------

    def _schedule_receipts(self, sid: str, form: dict[str, str], callback_url: str) -> None:
        job = _ReceiptJob(callback_url)
        if self.options.send_sent:
            job.payloads.append(self._callback(sid, form, "sent"))
        if self._rng.random() < self.options.delivered_ratio:
            job.payloads.append(self._callback(sid, form, "delivered"))
        else:
            job.payloads.append(self._callback(sid, form, FAILURE_STATUS, FAILURE_CODE))
        self._pending += len(job.payloads)

        if self.options.hold_receipts:
            self._held.append(job)
            return
        # A timer rather than sleeping workers, so the delay does not eat into the pool.
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def enqueue() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._queue.put_nowait(job)

        timer = loop.call_later(max(0.0, self.options.receipt_delay_ms / 1000), enqueue)
        self._timers.add(timer)

    def _callback(
        self, sid: str, form: dict[str, str], status: str, error_code: str | None = None
    ) -> dict[str, str]:
        """The parameters Twilio posts to a StatusCallback."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": form["To"],
        }
        if form.get("From"):
            params["From"] = form["From"]
        if form.get("MessagingServiceSid"):
            params["MessagingServiceSid"] = form["MessagingServiceSid"]
        if error_code:
            params["ErrorCode"] = error_code
        return params

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                for payload in job.payloads:
                    ok = await self._post_callback(job.callback_url, payload)
                    self._pending -= 1
                    if ok:
                        self.stats.receipts_sent += 1
                    else:
                        self.stats.receipts_failed += 1
            finally:
                self._queue.task_done()

    async def _post_callback(self, url: str, params: dict[str, str]) -> bool:
        """POST one signed callback, retrying a few times; True once the receiver took it."""
        assert self._client is not None
        headers = {"X-Twilio-Signature": twilio_signature(self.auth_token, url, params)}
        for attempt in range(CALLBACK_RETRIES + 1):
            if attempt:
                await asyncio.sleep(CALLBACK_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                async with self._client.post(url, data=params, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    log.debug("callback answered %d (attempt %d)", resp.status, attempt + 1)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.debug("callback failed: %s (attempt %d)", exc, attempt + 1)
        log.warning("gave up on a status callback for message %s", params["MessageSid"])
        return False

    # -- inspection ------------------------------------------------------------------------------

    async def _handle_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages)

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(vars(self.stats), receipts_pending=self._pending))

    async def _handle_release(self, request: web.Request) -> web.Response:
        held, self._held = self._held, []
        for job in held:
            self._queue.put_nowait(job)
        return web.json_response({"released": sum(len(job.payloads) for job in held)})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        # Callbacks already under way keep going (and keep counting as pending): they are work,
        # not history.
        self.messages.clear()
        self.stats = _Stats()
        return web.json_response({"reset": True})


async def serve(
    options: TwilioSimulatorOptions,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[int], object] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever); `ready(port)` is called once bound."""
    simulator = TwilioSimulator(options)
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


def _token(value: str) -> str:
    try:
        split_token(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: simulator.main dispatches to this module, and a module-level
    # import in both directions would break whichever of the two is run with `-m`.
    from gateway_adapters.simulator import _non_negative, _port, _ratio

    defaults = TwilioSimulatorOptions()
    parser = argparse.ArgumentParser(
        prog="broadcaster simulate-gateway",
        description="Run a Twilio-compatible SMS gateway simulator.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    add("--port", type=_port, default=9100, help="port to bind, 0 = any free (default %(default)s)")
    add("--token", type=_token, default=defaults.token, help="expected ACCOUNT_SID:AUTH_TOKEN")
    add("--latency-ms", type=_non_negative, default=defaults.latency_ms)
    add("--failure-ratio", type=_ratio, default=defaults.failure_ratio, help="answer 500")
    add("--throttle-ratio", type=_ratio, default=defaults.throttle_ratio, help="answer 429")
    add("--invalid-ratio", type=_ratio, default=defaults.invalid_ratio, help="answer 400/21211")
    add("--delivered-ratio", type=_ratio, default=defaults.delivered_ratio)
    add("--receipt-delay-ms", type=_non_negative, default=defaults.receipt_delay_ms)
    add("--receipt-concurrency", type=_positive_int, default=defaults.receipt_concurrency)
    add("--send-sent", action="store_true", help="post 'sent' before each final status")
    add("--hold-receipts", action="store_true", help="keep callbacks until POST /_sim/release")
    add("--seed", type=int, default=None, help="seed for reproducible outcomes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; serves until SIGTERM or SIGINT."""
    args = build_parser().parse_args(argv)
    options = TwilioSimulatorOptions(
        token=args.token,
        latency_ms=args.latency_ms,
        failure_ratio=args.failure_ratio,
        throttle_ratio=args.throttle_ratio,
        invalid_ratio=args.invalid_ratio,
        delivered_ratio=args.delivered_ratio,
        receipt_delay_ms=args.receipt_delay_ms,
        send_sent=args.send_sent,
        hold_receipts=args.hold_receipts,
        receipt_concurrency=args.receipt_concurrency,
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
