"""A GatewayAPI-compatible SMS gateway simulator over real HTTP, for the demo, tests and benchmarks.

It accepts `POST /rest/mtsms` like GatewayAPI, answers with one id per request, and posts one
JWT-signed receipt per recipient to the request's `callback_url` through a bounded worker pool.
`/_sim/*` endpoints let tests inspect what was accepted and control held receipts, and
`POST /_sim/inbound` posts a citizen's SMS to `--inbound-url` as GatewayAPI's MO webhook does.

Run: `python -m gateway_simulators.gatewayapi --port 0` (or `broadcaster simulate-gateway`).
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import json
import logging
import random
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import jwt
import phonenumbers

from gateway_adapters.gatewayapi_callbacks import SHORT_KEY_WARNING
from gateway_simulators.common import (
    CALLBACK_BACKOFF_SECONDS,
    CALLBACK_RETRIES,
    HttpGatewaySimulator,
    HttpStats,
    ReceiptJob,
    add_fault_options,
    http_serve,
    non_negative,
    number,
    options_from_args,
    port,
    ratio,
    serve_http_until_signalled,
    simulator_parser,
)
from gateway_simulators.http_server import Answer, Request, Response, get, json_response, post

log = logging.getLogger(__name__)

FAILURE_ERROR = "Simulated delivery failure"
FAILURE_CODE = "0x1013"  # GatewayAPI's SMS error "Absent subscriber", as its receipts write codes


@dataclass
class SimulatorOptions:
    """How the simulated gateway behaves."""

    token: str = "sim-token"
    webhook_secret: str = "sim-secret"
    latency_ms: float = 0.0
    failure_ratio: float = 0.0
    # Answer 429 with Retry-After (seconds), or drop the connection without answering.
    throttle_ratio: float = 0.0
    throttle_retry_after: float = 1.0
    drop_ratio: float = 0.0
    # Take the messages (they go out, receipts follow) but answer 200 with a body that carries
    # no readable ids, in turn: not JSON at all (a proxy's error page), JSON without "ids", and
    # JSON cut off in the middle.
    garbled_ratio: float = 0.0
    # The status of the simulated failures (failure_ratio): 500 with GatewayAPI's JSON error
    # body, or 502/503/504 with the HTML page a load balancer in front of it answers.
    failure_status: int = 500
    # Connection faults: reset (TCP RST) before the messages were taken; the messages taken and
    # then the connection reset without an answer (the answer lost); the messages taken and the
    # answer sent after slow_ms (beyond a client's timeout, it is lost as well).
    reset_ratio: float = 0.0
    lost_answer_ratio: float = 0.0
    slow_ratio: float = 0.0
    slow_ms: float = 5000.0
    delivered_ratio: float = 1.0
    receipt_delay_ms: float = 200.0
    send_enroute: bool = False
    # Receipt faults real gateways produce: every receipt posted twice, and the transient
    # ENROUTE arriving after the final status instead of before it.
    duplicate_receipts: bool = False
    enroute_after_final: bool = False
    # Every receipt posted this many times (duplicate_receipts means at least 2), and each
    # recipient's receipts (copies, ENROUTE, final) posted in a random order.
    receipt_copies: int = 1
    shuffle_receipts: bool = False
    # Per recipient, this many receipts more for message ids this simulator never gave (as
    # receipts of another account's or a long-purged message arrive), among its own.
    unknown_receipts: int = 0
    hold_receipts: bool = False
    # How often a refused receipt is posted again (default CALLBACK_RETRIES): GatewayAPI itself
    # goes on for 12 hours, which a test of an outage may want a few seconds of.
    callback_retries: int | None = None
    receipt_concurrency: int = 32
    seed: int | None = None
    # The account, as GatewayAPI refuses what it does not allow: its message classes (URGENT
    # and VERY_URGENT are refused in the standard class), blacklisted MSISDNs (0x0215), MSISDNs
    # on the temporary blacklist (0x0214), destinations not authorised by calling code (0x0217,
    # naming the country's ISO code) and MSISDN prefixes of operators not authorised (0x021F).
    classes: tuple[str, ...] = ("standard", "premium")
    blacklisted: tuple[int, ...] = ()
    temporarily_blacklisted: tuple[int, ...] = ()
    unauthorised_countries: tuple[str, ...] = ()
    unauthorised_operators: tuple[str, ...] = ()
    # Where POST /_sim/inbound posts a citizen's SMS (GatewayAPI's MO webhook), and the number
    # (short code or virtual number) it was sent to.
    inbound_url: str | None = None
    inbound_receiver: int = 4570000000


_ReceiptJob = ReceiptJob[dict[str, Any]]


class _Stats(HttpStats):
    def __init__(self) -> None:
        super().__init__()
        self.garbled_answers = 0  # 200 answers without ids (the messages were taken)


class _BadRequest(Exception):
    pass


class _Refusal(Exception):
    """An error answer as GatewayAPI writes it: HTTP status, error code, message, variables."""

    def __init__(self, status: int, code: int | None, message: str, *variables: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.variables = status, code, message, variables


# GatewayAPI's message classes and priorities; the priorities that need a class above standard.
CLASSES = ("standard", "premium", "secret")
PRIORITIES = ("BULK", "NORMAL", "URGENT", "VERY_URGENT")
URGENT_PRIORITIES = ("URGENT", "VERY_URGENT")
MAX_RECIPIENTS_PER_MESSAGE = 10_000
UNKNOWN_ID_BASE = 1_000_000_000  # receipts for ids never given (unknown_receipts)


class GatewaySimulator(HttpGatewaySimulator[dict[str, Any]]):
    """The simulator's state and HTTP app; `start()` binds it, `close()` stops everything."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        super().__init__(self.options)
        self.stats = _Stats()
        self.messages: list[dict[str, Any]] = []
        # (wall-clock time, recipients, userref) per accepted message object: rate measurements.
        self.timeline: list[tuple[float, int, str | None]] = []
        self._rng = random.Random(self.options.seed)
        self._ids = itertools.count(1)
        self._mo_ids = itertools.count(9_000_001)
        self._unknown_ids = itertools.count(1)
        self.router.add(
            [
                post("/rest/mtsms", self._handle_send),
                *self._inspection_routes(),
                get("/_sim/timeline", self._handle_timeline),
                *self._control_routes(),
            ]
        )

    # -- sending ---------------------------------------------------------------------------------

    def _handle_send(self, request: Request) -> Answer | Awaitable[Answer]:
        return self._count_and_answer(self.options.latency_ms, self._send, request)

    def _send(self, request: Request) -> Answer | Awaitable[Answer]:
        if not self._authorized(request.headers.get("authorization", "")):
            return self._reject(_Refusal(401, None, "Invalid API token"))
        if self._rng.random() < self.options.failure_ratio:
            return self._fail()
        if self.options.reset_ratio and self._rng.random() < self.options.reset_ratio:
            return self.reset_connection(request, taken=False)
        if self.options.drop_ratio and self._rng.random() < self.options.drop_ratio:
            self.stats.rejected_requests += 1
            request.transport.close()  # the client sees the connection closed, no answer
            return None
        if self.options.throttle_ratio and self._rng.random() < self.options.throttle_ratio:
            retry_after = ("Retry-After", f"{self.options.throttle_retry_after:g}")
            refusal = _Refusal(429, None, "Too many requests (simulated)")
            return self._reject(refusal, retry_after)
        try:
            bodies = self._validate(request.body)
            self._check_account(bodies)
        except _BadRequest as exc:
            return self._reject(_Refusal(400, 0x0308, str(exc)))
        except _Refusal as refusal:
            return self._reject(refusal)

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
                        "class": body.get("class", "standard"),
                        "encoding": body.get("encoding", "UTF8"),
                        "validity_period": body.get("validity_period"),
                    }
                )
            callback_url = body.get("callback_url")
            if callback_url:
                self._schedule_receipts(message_id, msisdns, userref, callback_url)
            log.debug("accepted message %d with %d recipients", message_id, len(msisdns))
        options = self.options
        if options.lost_answer_ratio and self._rng.random() < options.lost_answer_ratio:
            return self.reset_connection(request, taken=True)
        answer = self._accepted(ids)
        if options.slow_ratio and self._rng.random() < options.slow_ratio:
            return self.answer_slowly(answer, options.slow_ms)
        return answer

    def _accepted(self, ids: list[int]) -> Response:
        """GatewayAPI's answer to a request it took, or an unreadable 200 (garbled_ratio)."""
        usage = {"countries": {}, "currency": "EUR", "total_cost": 0.0}
        if self.options.garbled_ratio and self._rng.random() < self.options.garbled_ratio:
            self.stats.garbled_answers += 1
            turn = self.stats.garbled_answers % 3
            if turn == 1:
                return Response(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            if turn == 2:
                return json_response({"usage": usage})
            whole = json.dumps({"ids": ids, "usage": usage}).encode()
            return Response(200, whole[: len(whole) // 2])  # JSON cut off
        return json_response({"ids": ids, "usage": usage})

    def _fail(self) -> Response:
        """A simulated server failure: GatewayAPI's own 500, or a load balancer's page."""
        status = self.options.failure_status
        if status == 500:
            return self._reject(_Refusal(500, None, "Internal server error (simulated)"))
        self.stats.rejected_requests += 1
        page = f"<html><head><title>{status}</title></head><body>{status}</body></html>"
        return Response(status, page.encode(), "text/html")

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "token" and hmac.compare_digest(
            token.strip().encode(), self.options.token.encode()
        )

    def _reject(self, refusal: _Refusal, *headers: tuple[str, str]) -> Response:
        """GatewayAPI's error body: code (as hex) and variables are left out when empty."""
        self.stats.rejected_requests += 1
        body: dict[str, Any] = {"incident_uuid": str(uuid.uuid4()), "message": refusal.message}
        if refusal.code is not None:
            body["code"] = f"0x{refusal.code:04X}"
        if refusal.variables:
            body["variables"] = list(refusal.variables)
        return json_response(body, refusal.status, headers)

    def _check_account(self, bodies: list[dict[str, Any]]) -> None:
        """Refuse, as GatewayAPI does, what the account does not allow: a class it does not
        have, an urgent priority outside the premium class, a recipient it may not reach (the
        whole request is refused for one recipient)."""
        classes = {body.get("class", "standard") for body in bodies}
        if len(classes) > 1:
            raise _BadRequest("class must be the same for all messages in a request")
        (message_class,) = classes
        if message_class not in CLASSES:
            raise _Refusal(422, 0x0218, "Unknown message class id %1", str(message_class))
        if message_class not in self.options.classes:
            raise _Refusal(
                403, 0x021E, "Message class %1 is not configured for %2", message_class, "account"
            )
        for body in bodies:
            priority = body.get("priority", "NORMAL")
            if priority in URGENT_PRIORITIES and message_class == "standard":
                raise _Refusal(422, 0x0311, "Priority %1 not available", priority)
            for recipient in body["recipients"]:
                self._check_recipient(recipient["msisdn"])

    def _check_recipient(self, msisdn: int) -> None:
        options = self.options
        if msisdn in options.blacklisted:
            raise _Refusal(403, 0x0215, "MSISDN %1 blacklisted", str(msisdn))
        if msisdn in options.temporarily_blacklisted:
            raise _Refusal(
                403, 0x0214, "Temporary blacklist for MSISDN %1 with hash %2", str(msisdn), "0"
            )
        digits = str(msisdn)
        for code in options.unauthorised_countries:
            if digits.startswith(code):
                region = phonenumbers.region_code_for_country_code(int(code))
                raise _Refusal(403, 0x0217, "Unauthorized destination: country %1", region)
        if any(digits.startswith(prefix) for prefix in options.unauthorised_operators):
            raise _Refusal(403, 0x021F, "Unauthorized operator: MCC %1, MNC %2", "238", "99")

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
        if len(recipients) > MAX_RECIPIENTS_PER_MESSAGE:
            raise _BadRequest("a message has at most 10000 recipients")
        for recipient in recipients:
            msisdn = recipient.get("msisdn") if isinstance(recipient, dict) else None
            if not isinstance(msisdn, int) or isinstance(msisdn, bool) or msisdn <= 0:
                raise _BadRequest("each recipient needs an integer msisdn")
        for key in ("callback_url", "userref", "sender"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise _BadRequest(f"{key} must be a string")
        if body.get("priority", "NORMAL") not in PRIORITIES:
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
            job: _ReceiptJob = ReceiptJob(callback_url)  # the bare class: an alias call is slow
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
            for n in range(self.options.unknown_receipts):
                # Ids far above any this simulator gives; delivered and undeliverable in turn.
                status = "UNDELIVERABLE" if n % 2 else "DELIVERED"
                unknown = UNKNOWN_ID_BASE + next(self._unknown_ids)
                job.payloads.append(self._receipt(unknown, msisdn, userref, status))
            copies = max(self.options.receipt_copies, 2 if self.options.duplicate_receipts else 1)
            if copies > 1:
                job.payloads = [dict(p) for _ in range(copies) for p in job.payloads]
            if self.options.shuffle_receipts:
                self._rng.shuffle(job.payloads)
            jobs.append(job)
        self._schedule_jobs(jobs)

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

    async def _post_receipt(self, url: str, payload: dict[str, Any]) -> bool:
        """POST one signed receipt, retrying a few times; True once the receiver took it."""
        with warnings.catch_warnings():
            # The default secret is short on purpose (easy to type); that is fine for a simulator.
            warnings.simplefilter("ignore", SHORT_KEY_WARNING)
            signature = jwt.encode(payload, self.options.webhook_secret, algorithm="HS256")
        request = {"json": payload, "headers": {"X-Gwapi-Signature": signature}}
        retries = self.options.callback_retries
        policy = (CALLBACK_RETRIES if retries is None else retries, CALLBACK_BACKOFF_SECONDS, log)
        what = f"a receipt for message {payload['id']}"
        return await self._post_with_retries(url, request, policy, what)

    # -- inbound messages ------------------------------------------------------------------------

    def _inbound_request(
        self, url: str, sender: str, text: str, message_id: str | None
    ) -> tuple[str, dict[str, Any]]:
        """An MO SMS as GatewayAPI posts it: JSON, signed with the webhook's token."""
        mo_id = int(message_id) if message_id is not None else next(self._mo_ids)
        payload = {
            "id": mo_id,
            "msisdn": int(sender.lstrip("+")),
            "receiver": self.options.inbound_receiver,
            "message": text,
            "senttime": int(time.time()),
            "webhook_label": "broadcaster",
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SHORT_KEY_WARNING)
            signature = jwt.encode(payload, self.options.webhook_secret, algorithm="HS256")
        return str(mo_id), {"json": payload, "headers": {"X-Gwapi-Signature": signature}}

    # -- inspection ------------------------------------------------------------------------------

    def _handle_timeline(self, request: Request) -> Response:
        return json_response(self.timeline)

    def _reset(self) -> None:
        # Ids keep increasing so old receipts cannot be confused with new messages.
        self.messages.clear()
        self.timeline.clear()
        self.stats = _Stats()


# `serve(options, host, port, *, ready, stop)`: serve until `stop` is set (or forever);
# `ready(port)` is called once bound.
serve = http_serve(GatewaySimulator)


# -- command line --------------------------------------------------------------------------------


_number, _ratio, _non_negative, _port = number, ratio, non_negative, port


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorOptions()
    parser = simulator_parser(
        "broadcaster simulate-gateway", "Run a GatewayAPI-compatible SMS gateway simulator."
    )
    add = parser.add_argument
    add("--token", default=defaults.token, help="expected API token")
    add("--webhook-secret", default=defaults.webhook_secret, help="HS256 key signing receipts")
    add_fault_options(
        parser,
        defaults,
        [
            ("failure", "answer 500"),
            ("throttle", "answer 429"),
            ("drop", "drop the connection"),
            (
                "garbled",
                "take the messages but answer 200 without readable ids (HTML, JSON without, "
                "JSON cut off)",
            ),
            ("reset", "reset the connection (TCP RST) before taking the messages"),
            ("lost-answer", "take the messages, then reset the connection without answering"),
            ("slow", "take the messages and answer after --slow-ms"),
        ],
    )
    add("--slow-ms", type=non_negative, default=defaults.slow_ms, help="see --slow-ratio")
    add(
        "--failure-status",
        type=_failure_status,
        default=defaults.failure_status,
        help="500 (GatewayAPI's JSON error) or 502/503/504 (a load balancer's HTML page)",
    )
    add(
        "--throttle-retry-after",
        type=non_negative,
        default=defaults.throttle_retry_after,
        help="Retry-After seconds on 429 answers",
    )
    add("--send-enroute", action="store_true", help="post ENROUTE before each final receipt")
    add("--duplicate-receipts", action="store_true", help="post every receipt twice")
    add("--receipt-copies", type=_count, default=1, help="post every receipt N times")
    add(
        "--unknown-receipts",
        type=_count,
        default=0,
        help="post N receipts more per recipient for message ids never given",
    )
    add(
        "--shuffle-receipts",
        action="store_true",
        help="post each recipient's receipts (copies, ENROUTE, final) in a random order",
    )
    add("--enroute-after-final", action="store_true", help="post ENROUTE after the final receipt")
    add("--hold-receipts", action="store_true", help="keep receipts until POST /_sim/release")
    add("--inbound-url", default=None, help="where POST /_sim/inbound posts MO SMS (webhook)")
    add(
        "--callback-retries",
        type=_count,
        default=None,
        help=f"post a refused receipt again this many times (default {CALLBACK_RETRIES}; the "
        "pause doubles from 0.05 s up to 1 s)",
    )
    add(
        "--blacklist",
        dest="blacklisted",
        type=_msisdns,
        default=(),
        help="comma-separated MSISDNs refused with 403 0x0215 (the whole request is refused)",
    )
    add(
        "--no-premium",
        dest="classes",
        action="store_const",
        const=("standard",),
        default=defaults.classes,
        help="the account has only the standard class (urgent priorities refused with 0x0311)",
    )
    add("--seed", type=int, default=None, help="seed for reproducible outcomes")
    return parser


def _count(value: str) -> int:
    result = int(number(value, int))
    if result < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return result


def _failure_status(value: str) -> int:
    result = int(number(value, int))
    if result not in (500, 502, 503, 504):
        raise argparse.ArgumentTypeError(f"must be 500, 502, 503 or 504, got {value}")
    return result


def _msisdns(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part.strip().lstrip("+")) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of MSISDNs: {value!r}") from None


PROTOCOLS = {
    "gatewayapi": "gateway_simulators.gatewayapi",
    "twilio": "gateway_simulators.twilio",
    "smpp": "gateway_simulators.smpp",
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
    options = options_from_args(SimulatorOptions, args)
    return serve_http_until_signalled(serve, options, args.host, args.port)


if __name__ == "__main__":
    raise SystemExit(main())


# -- reading a timeline ---------------------------------------------------------------------------
# `/_sim/timeline` is one [arrival time, recipients, userref] per accepted request: what a
# provider counts its per-second limit on.

Arrivals = list[tuple[float, int]]


def arrivals(timeline: list[list[Any]]) -> Arrivals:
    return [(float(t), int(n)) for t, n, *_ in timeline]


def busiest_window(arrivals: Arrivals, seconds: float = 1.0) -> int:
    """The most recipients in any window [t, t + seconds) starting at an arrival (the
    strictest way to count a per-second limit: every second, not only whole clock seconds)."""
    busiest = total = start = 0
    for t, n in arrivals:
        total += n
        while arrivals[start][0] <= t - seconds:
            total -= arrivals[start][1]
            start += 1
        busiest = max(busiest, total)
    return busiest


def mean_rate(arrivals: Arrivals) -> float:
    """Recipients per second over the whole timeline: everything after the first request, over
    the time from the first request to the last."""
    first, last = arrivals[0][0], arrivals[-1][0]
    return (sum(n for _, n in arrivals) - arrivals[0][1]) / (last - first)
