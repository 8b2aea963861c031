"""GatewayApiAdapter against a scripted HTTP server on 127.0.0.1: requests, answers, callbacks."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    GatewayConfig,
    GatewayError,
    GatewayMisconfigured,
    GatewayRejected,
    GatewayThrottled,
    GatewayUnavailable,
    OutboundMessage,
    ReceiptUpdate,
)
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_adapters.gatewayapi_callbacks import STATUS_MAP, _hs256_key, _verified_claims
from gateway_adapters.registry import create_adapter, known_types

CALLBACK_URL = "https://broadcaster.example/callbacks/gw1"
SECRET = "webhook-secret-of-at-least-32-bytes"


@dataclass
class Reply:
    status: int = 200
    body: str | None = None  # None: a fresh {"ids": [n]} per request
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    message_id: int


class FakeGateway:
    """Records each request and answers with `reply`; ids count up from 1000 per request."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply = Reply()
        self.replies: list[Reply] = []  # used in order before falling back to `reply`
        # Answers a request by its body first, when it returns a reply (refusals by content).
        self.refuse: Callable[[Any], Reply | None] = lambda body: None
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Short shutdown timeout: the slow-answer case leaves a handler sleeping.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        message_id = 1000 + len(self.requests)  # no await between this and the append below
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(
            Recorded(request.method, request.path, dict(request.headers), body, message_id)
        )
        reply = self.refuse(body) or (self.replies.pop(0) if self.replies else self.reply)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        # GatewayAPI answers one id per message object; a list root carries several.
        count = len(body) if isinstance(body, list) else 1
        ids = [message_id * 10 + i for i in range(count)] if count > 1 else [message_id]
        text = reply.body if reply.body is not None else json.dumps({"ids": ids})
        return web.Response(status=reply.status, text=text, headers=reply.headers)


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    server = FakeGateway()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_adapter() -> AsyncIterator[Callable[..., GatewayApiAdapter]]:
    """Builds adapters (each owning its session) and closes them afterwards."""
    adapters: list[GatewayApiAdapter] = []

    def make(base_url: str, **config: Any) -> GatewayApiAdapter:
        settings: dict[str, Any] = {"token": "tok-123", "webhook_secret": SECRET, **config}
        adapter = GatewayApiAdapter(
            GatewayConfig(name="gw1", type="gatewayapi", base_url=base_url, **settings),
            CALLBACK_URL,
        )
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.close()


def msg(delivery_id: int, phone: str, text: str = "Police: stay indoors", alert: int = 17):
    return OutboundMessage(delivery_id=delivery_id, phone=phone, text=text, alert_id=alert)


# -- (a) request building -------------------------------------------------------------------------

A, B = "Police: stay indoors", "Politi: bliv indendørs"

# (messages, max_batch, expected message objects as (message, userref, msisdns), order-free,
#  expected number of HTTP requests)
REQUEST_CASES = {
    "one text, one request": (
        [msg(1, "+4520000001"), msg(2, "+4520000002"), msg(3, "+4520000003")],
        10,
        [(A, "17", [4520000001, 4520000002, 4520000003])],
        1,
    ),
    "two texts batched in one request": (
        [msg(1, "+4520000001", A), msg(2, "+4520000002", B), msg(3, "+4520000003", A)],
        10,
        [(A, "17", [4520000001, 4520000003]), (B, "17", [4520000002])],
        1,
    ),
    "grouped by alert": (
        [msg(1, "+4520000001", alert=17), msg(2, "+4520000002", alert=18)],
        10,
        [(A, "17", [4520000001]), (A, "18", [4520000002])],
        1,
    ),
    "chunked at max_batch recipients per request": (
        [msg(i, f"+45200000{i:02d}") for i in range(1, 6)],
        2,
        [
            (A, "17", [4520000001, 4520000002]),
            (A, "17", [4520000003, 4520000004]),
            (A, "17", [4520000005]),
        ],
        3,
    ),
    "small groups packed up to max_batch": (
        [msg(1, "+4520000001", A), msg(2, "+4520000002", B), msg(3, "+4520000003", "C")],
        2,
        [(A, "17", [4520000001]), (B, "17", [4520000002]), ("C", "17", [4520000003])],
        2,
    ),
}


def objects_of(request: Recorded) -> list[tuple[dict[str, Any], str]]:
    """(message object, the id the fake gave it) for a dict or list root."""
    if isinstance(request.body, list):
        return [(o, str(request.message_id * 10 + i)) for i, o in enumerate(request.body)]
    return [(request.body, str(request.message_id))]


@pytest.mark.parametrize("case", REQUEST_CASES.values(), ids=REQUEST_CASES.keys())
async def test_request_building(gateway: FakeGateway, make_adapter, case) -> None:
    messages, max_batch, expected, requests = case
    adapter = make_adapter(gateway.base_url, max_batch=max_batch, sender="POLITI")

    results = await adapter.send_batch(messages)

    assert len(gateway.requests) == requests
    objects = [pair for request in gateway.requests for pair in objects_of(request)]
    for request in gateway.requests:
        assert (request.method, request.path) == ("POST", "/rest/mtsms")
        assert request.headers["Authorization"] == "Token tok-123"
        assert request.headers["Content-Type"].startswith("application/json")
        total = sum(len(o["recipients"]) for o, _ in objects_of(request))
        assert total <= max_batch
    for body, _ in objects:
        assert set(body) == {
            "class",
            "sender",
            "message",
            "recipients",
            "callback_url",
            "userref",
            "priority",
        }
        assert body["sender"] == "POLITI"
        assert body["callback_url"] == CALLBACK_URL
        assert (body["priority"], body["class"]) == ("NORMAL", "standard")
        assert all(type(r["msisdn"]) is int for r in body["recipients"])
    sent = sorted(
        (o["message"], o["userref"], [x["msisdn"] for x in o["recipients"]]) for o, _ in objects
    )
    assert sent == sorted(expected)

    # One result per message, in input order, carrying the id of the object that sent it.
    id_of = {(o["message"], x["msisdn"]): i for o, i in objects for x in o["recipients"]}
    assert [r.delivery_id for r in results] == [m.delivery_id for m in messages]
    for message, result in zip(messages, results, strict=True):
        assert result.accepted and result.error is None
        assert result.gateway_message_id == id_of[(message.text, int(message.phone[1:]))]


@pytest.mark.parametrize(
    ("priority", "text", "expires_in", "expected"),
    [
        (
            "emergency",
            "Politi: bliv indendørs",
            None,
            {"priority": "VERY_URGENT", "class": "premium"},
        ),
        (
            "high",
            "Police {stay} €",
            3600,
            {"priority": "URGENT", "class": "premium", "validity_period": 3599},
        ),
        (
            "normal",
            "Полиция",
            10,
            {"priority": "NORMAL", "class": "standard", "encoding": "UCS2", "validity_period": 60},
        ),
        (
            "normal",
            "Politi 👮",
            None,
            {"priority": "NORMAL", "class": "standard", "encoding": "UCS2"},
        ),
    ],
)
async def test_priority_validity_and_encoding(
    gateway: FakeGateway,
    make_adapter,
    priority: str,
    text: str,
    expires_in: int | None,
    expected: dict[str, Any],
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
    adapter = make_adapter(gateway.base_url)
    message = OutboundMessage(1, "+4520000001", text, 17, priority, expires)
    [result] = await adapter.send_batch([message])
    assert result.accepted
    body = gateway.requests[0].body
    keys = ("priority", "class", "encoding", "validity_period")
    optional = {k: body[k] for k in keys if k in body}
    if "validity_period" in expected and expected["validity_period"] > 60:
        # Seconds left at the moment of sending: allow for the time the test took.
        assert expected["validity_period"] - 5 <= optional.pop("validity_period") <= 3600
        expected = {k: v for k, v in expected.items() if k != "validity_period"}
    assert optional == expected


async def test_invalid_number_is_a_per_recipient_rejection(gateway: FakeGateway, make_adapter):
    adapter = make_adapter(gateway.base_url)
    results = await adapter.send_batch([msg(1, "+45abc"), msg(2, "+4520000002")])
    assert [(r.accepted, r.gateway_message_id) for r in results] == [(False, None), (True, "1000")]
    assert results[0].error
    assert [x["msisdn"] for x in gateway.requests[0].body["recipients"]] == [4520000002]


async def test_partial_failure_keeps_accepted_results(gateway: FakeGateway, make_adapter):
    adapter = make_adapter(gateway.base_url, max_batch=1)
    gateway.replies = [Reply(), Reply(503, "busy")]  # whichever chunk arrives second fails
    with pytest.raises(GatewayUnavailable) as caught:
        await adapter.send_batch([msg(1, "+4520000001"), msg(2, "+4520000002")])
    assert len(gateway.requests) == 2
    [accepted] = caught.value.partial_results
    assert accepted.accepted and accepted.gateway_message_id == "1000"


# -- (b) answers -> results or errors -------------------------------------------------------------

ANSWER_CASES: dict[str, tuple[Reply, type[GatewayError] | None, float | None]] = {
    "200 ids": (Reply(200, '{"ids": [987], "usage": {"total_cost": 0.1}}'), None, None),
    "401": (Reply(401, '{"message": "bad token"}'), GatewayMisconfigured, None),
    "403": (Reply(403, "forbidden"), GatewayMisconfigured, None),
    "429 Retry-After": (Reply(429, "slow down", {"Retry-After": "3"}), GatewayThrottled, 3.0),
    "429 no Retry-After": (Reply(429, "slow down"), GatewayThrottled, None),
    "500": (Reply(500, "oops"), GatewayUnavailable, None),
    "503": (Reply(503, "maintenance"), GatewayUnavailable, None),
    "400": (Reply(400, '{"message": "bad request"}'), GatewayRejected, None),
    "slow answer": (Reply(delay=1.0), GatewayUnavailable, None),
    "200 not JSON": (Reply(200, "<html>ok</html>"), GatewayUnavailable, None),
    "200 without ids": (Reply(200, '{"usage": {}}'), GatewayUnavailable, None),
    "200 empty ids": (Reply(200, '{"ids": []}'), GatewayUnavailable, None),
}


@pytest.mark.parametrize("case", ANSWER_CASES.values(), ids=ANSWER_CASES.keys())
async def test_answer_mapping(gateway: FakeGateway, make_adapter, case) -> None:
    reply, error, retry_after = case
    gateway.reply = reply
    adapter = make_adapter(gateway.base_url, timeout_seconds=0.3)
    messages = [msg(1, "+4520000001"), msg(2, "+4520000002")]

    if error is None:
        results = await adapter.send_batch(messages)
        assert [(r.delivery_id, r.accepted, r.gateway_message_id) for r in results] == [
            (1, True, "987"),
            (2, True, "987"),
        ]
        return
    with pytest.raises(error) as caught:
        await adapter.send_batch(messages)
    assert type(caught.value) is error
    if error is GatewayThrottled:
        assert caught.value.retry_after == retry_after
    assert len(gateway.requests) == 1  # never retried


async def test_connection_refused_is_unavailable(make_adapter) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = make_adapter(f"http://127.0.0.1:{port}", timeout_seconds=2)
    with pytest.raises(GatewayUnavailable):
        await adapter.send_batch([msg(1, "+4520000001")])


def api_error(code: str, message: str, *variables: str) -> str:
    """An error body as GatewayAPI writes it."""
    body: dict[str, Any] = {"code": code, "incident_uuid": "0f0e", "message": message}
    if variables:
        body["variables"] = list(variables)
    return json.dumps(body)


# GatewayAPI's error codes -> the error the batch raises (table-driven, one row per code).
CODE_CASES: dict[str, tuple[Reply, type[GatewayError]]] = {
    "422 0x0311 priority not available": (
        Reply(422, api_error("0x0311", "Priority %1 not available", "VERY_URGENT")),
        GatewayMisconfigured,
    ),
    "422 0x0218 unknown class": (
        Reply(422, api_error("0x0218", "Unknown message class id %1", "premium")),
        GatewayMisconfigured,
    ),
    "403 0x021E class not configured": (
        Reply(403, api_error("0x021E", "Message class %1 is not configured for %2", "x", "y")),
        GatewayMisconfigured,
    ),
    "403 0x0216 insufficient credit": (
        Reply(403, api_error("0x0216", "Insufficient credit")),
        GatewayMisconfigured,
    ),
    "403 0x0213 unauthorised IP": (
        Reply(403, api_error("0x0213", "Unauthorized IP-address: %1", "1.2.3.4")),
        GatewayMisconfigured,
    ),
    "401 0x0211 invalid password": (
        Reply(401, api_error("0x0211", "Invalid password")),
        GatewayMisconfigured,
    ),
    "400 0x0308 invalid argument": (
        Reply(400, api_error("0x0308", "Invalid Argument")),
        GatewayRejected,
    ),
    "422 without code": (Reply(422, '{"message": "Invalid json"}'), GatewayRejected),
    "500 with incident": (
        Reply(500, '{"incident_uuid": "0f0e", "message": "Internal"}'),
        GatewayUnavailable,
    ),
}


@pytest.mark.parametrize("case", CODE_CASES.values(), ids=CODE_CASES.keys())
async def test_error_codes(gateway: FakeGateway, make_adapter, case) -> None:
    reply, error = case
    gateway.reply = reply
    adapter = make_adapter(gateway.base_url)
    with pytest.raises(error) as caught:
        await adapter.send_batch([msg(1, "+4520000001"), msg(2, "+4520000002")])
    assert type(caught.value) is error
    assert "4520000001" not in str(caught.value)  # variables (numbers) stay out of the text
    assert len(gateway.requests) == 1


def refusing(code: str, message: str, test: Callable[[int], bool], variable: Callable[[int], str]):
    """A gateway rule: refuse (403 with `code`) any request holding a recipient `test` picks,
    naming the first such recipient by `variable(msisdn)`."""

    def rule(body: Any) -> Reply | None:
        objects = body if isinstance(body, list) else [body]
        for obj in objects:
            for r in obj["recipients"]:
                if test(r["msisdn"]):
                    return Reply(403, api_error(code, message, variable(r["msisdn"])))
        return None

    return rule


BLACKLISTED = {4520000003, 4520000007}
SWEDISH = {46700000001, 46700000002}

# recipients, refusal rule -> the recipients refused (their error's code, and whether the
# result is retryable); everyone else is accepted
REFUSAL_CASES: dict[str, tuple[list[int], Any, dict[int, tuple[str, bool]]]] = {
    "0x0215 blacklisted, named": (
        [4520000000 + i for i in range(1, 11)],
        refusing("0x0215", "MSISDN %1 blacklisted", BLACKLISTED.__contains__, str),
        {n: ("0x0215", False) for n in BLACKLISTED},
    ),
    "0x0214 temporary blacklist is retryable": (
        [4520000001, 4520000003, 4520000005],
        refusing(
            "0x0214",
            "Temporary blacklist for MSISDN %1 with hash %2",
            {4520000003}.__contains__,
            str,
        ),
        {4520000003: ("0x0214", True)},
    ),
    "0x0217 country by ISO code": (
        [4520000001, 46700000001, 4520000002, 46700000002],
        refusing(
            "0x0217", "Unauthorized destination: country %1", SWEDISH.__contains__, lambda _: "SE"
        ),
        {n: ("0x0217", False) for n in SWEDISH},
    ),
    "0x0217 country by calling code": (
        [4520000001, 46700000001, 46700000002],
        refusing(
            "0x0217", "Unauthorized destination: country %1", SWEDISH.__contains__, lambda _: "46"
        ),
        {n: ("0x0217", False) for n in SWEDISH},
    ),
    "0x021F operator, found by halving": (
        [4520000000 + i for i in range(1, 17)],
        refusing(
            "0x021F",
            "Unauthorized operator: MCC %1, MNC %2",
            {4520000011}.__contains__,
            lambda _: "238",
        ),
        {4520000011: ("0x021F", False)},
    ),
    "0x0215 naming nobody in the request: halved": (
        [4520000001, 4520000002, 4520000003],
        refusing("0x0215", "MSISDN %1 blacklisted", {4520000002}.__contains__, lambda _: "999"),
        {4520000002: ("0x0215", False)},
    ),
}


@pytest.mark.parametrize("case", REFUSAL_CASES.values(), ids=REFUSAL_CASES.keys())
async def test_a_refused_recipient_fails_alone(gateway: FakeGateway, make_adapter, case) -> None:
    msisdns, rule, refused = case
    gateway.refuse = rule
    adapter = make_adapter(gateway.base_url, max_batch=100)
    messages = [msg(i, f"+{n}") for i, n in enumerate(msisdns)]

    results = await adapter.send_batch(messages)

    assert [r.delivery_id for r in results] == list(range(len(msisdns)))
    outcome = {
        n: (r.error.split(":")[0].split()[-1], r.retryable) if not r.accepted else None
        for n, r in zip(msisdns, results, strict=True)
        if r.error or not r.accepted
    }
    assert outcome == refused
    assert all(r.accepted for n, r in zip(msisdns, results, strict=True) if n not in refused)
    accepted = [
        x["msisdn"]
        for req in gateway.requests
        if not gateway.refuse(req.body)
        for o, _ in objects_of(req)
        for x in o["recipients"]
    ]
    assert sorted(accepted) == sorted(n for n in msisdns if n not in refused)  # each once
    assert len(gateway.requests) <= 2 * len(msisdns)


async def test_refusal_then_outage_keeps_what_was_given(gateway: FakeGateway, make_adapter):
    """The refused recipient's result and nothing else ride along when the resubmission fails."""
    calls = []

    def rule(body: Any) -> Reply | None:
        calls.append(body)
        if len(calls) == 1:
            return Reply(403, api_error("0x0215", "MSISDN %1 blacklisted", "4520000002"))
        return Reply(503, "maintenance")

    gateway.refuse = rule
    adapter = make_adapter(gateway.base_url)
    with pytest.raises(GatewayUnavailable) as caught:
        await adapter.send_batch([msg(1, "+4520000001"), msg(2, "+4520000002")])
    [refused] = caught.value.partial_results
    assert (refused.delivery_id, refused.accepted) == (2, False)
    assert refused.error == "gatewayapi 0x0215: MSISDN %1 blacklisted"


OPTION_CASES = {
    "defaults": ({}, {"emergency": ("VERY_URGENT", "premium"), "normal": ("NORMAL", "standard")}),
    "standard class account": (
        {"emergency_priority": "NORMAL", "emergency_class": "standard"},
        {"emergency": ("NORMAL", "standard"), "normal": ("NORMAL", "standard")},
    ),
    "secret class for everything": (
        {"normal_class": "secret", "emergency_class": "secret"},
        {"emergency": ("VERY_URGENT", "secret"), "normal": ("NORMAL", "secret")},
    ),
}


@pytest.mark.parametrize("case", OPTION_CASES.values(), ids=OPTION_CASES.keys())
async def test_priority_and_class_options(gateway: FakeGateway, make_adapter, case) -> None:
    extra, expected = case
    adapter = make_adapter(gateway.base_url, extra=extra)
    for priority in expected:
        await adapter.send_batch([OutboundMessage(1, "+4520000001", "x", 17, priority)])
    sent = [(r.body["priority"], r.body["class"]) for r in gateway.requests]
    assert sent == list(expected.values())


@pytest.mark.parametrize(
    "extra", [{"emergency_class": "gold"}, {"high_priority": "SUPER"}], ids=["class", "priority"]
)
def test_unknown_priority_or_class_is_refused_at_start(extra: dict[str, str]) -> None:
    config = GatewayConfig(name="gw1", type="gatewayapi", base_url="http://x", extra=extra)
    with pytest.raises(ValueError, match=r"gateway 'gw1': (emergency_class|high_priority)"):
        GatewayApiAdapter(config, CALLBACK_URL)


async def test_message_objects_hold_at_most_10000_recipients(
    gateway: FakeGateway, make_adapter
) -> None:
    adapter = make_adapter(gateway.base_url, max_batch=25_000)
    messages = [msg(i, f"+4530{i:06d}") for i in range(25_000)]
    results = await adapter.send_batch(messages)
    assert all(r.accepted for r in results)
    [request] = gateway.requests
    assert [len(o["recipients"]) for o, _ in objects_of(request)] == [10_000, 10_000, 5_000]


async def test_shared_session_is_not_closed_by_adapter(gateway: FakeGateway) -> None:
    config = GatewayConfig(name="gw1", type="gatewayapi", base_url=gateway.base_url)
    async with aiohttp.ClientSession() as session:
        adapter = GatewayApiAdapter(config, CALLBACK_URL, session)
        await adapter.close()
        assert not session.closed
        assert (await adapter.send_batch([msg(1, "+4520000001")]))[0].accepted


# -- (c) callbacks --------------------------------------------------------------------------------

# Written out rather than derived from STATUS_MAP, so a changed mapping fails here.
EXPECTED_STATES = {
    "DELIVERED": DeliveryState.DELIVERED,
    "UNDELIVERABLE": DeliveryState.FAILED,
    "REJECTED": DeliveryState.FAILED,
    "DELETED": DeliveryState.FAILED,
    "SKIPPED": DeliveryState.FAILED,
    "EXPIRED": DeliveryState.EXPIRED,
    "UNKNOWN": DeliveryState.SENT,
    "SCHEDULED": DeliveryState.SENT,
    "BUFFERED": DeliveryState.SENT,
    "ENROUTE": DeliveryState.SENT,
    "ACCEPTED": DeliveryState.DELIVERED,  # final per GatewayAPI
}


def receipt(status: str = "DELIVERED", **changes: Any) -> dict[str, Any]:
    payload = {
        "id": 12345,
        "msisdn": 4520123456,
        "time": 1700000000,
        "status": status,
        "error": None,
        "code": None,
        "userref": "17",
    }
    return {**payload, **changes}


def signed(payload: dict[str, Any], secret: str = SECRET) -> dict[str, str]:
    return {"X-Gwapi-Signature": jwt.encode(payload, secret, algorithm="HS256")}


def unsigned_token(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def callback_adapter(secret: str = SECRET) -> GatewayApiAdapter:
    config = GatewayConfig(
        name="gw1", type="gatewayapi", base_url="http://unused", webhook_secret=secret
    )
    return GatewayApiAdapter(config, CALLBACK_URL)


@pytest.fixture
async def adapter() -> AsyncIterator[GatewayApiAdapter]:
    adapter = callback_adapter()
    yield adapter
    await adapter.close()


def test_status_table_covers_the_map() -> None:
    assert set(EXPECTED_STATES) == set(STATUS_MAP)


@pytest.mark.parametrize(("status", "state"), [*EXPECTED_STATES.items(), ("NEWWORD", "sent")])
async def test_callback_status(adapter: GatewayApiAdapter, status: str, state: str) -> None:
    payload = receipt(status)
    body = json.dumps(payload).encode()

    updates = adapter.parse_callback(signed(payload), body, CALLBACK_URL)

    assert updates == [
        ReceiptUpdate(
            gateway_message_id="12345",
            phone="+4520123456",
            state=DeliveryState(state),
            provider_status=status,
            error=None,
            occurred_at=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
            raw=payload,
            known_status=status != "NEWWORD",
        )
    ]


ERROR_CASES = {
    "error and code": ({"error": "Absent", "code": "0x01"}, "Absent (code 0x01)"),
    "code only": ({"code": "0x01"}, "0x01"),
    "error only": ({"error": "Absent subscriber"}, "Absent subscriber"),
    "neither": ({}, None),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_callback_error_text(adapter: GatewayApiAdapter, case) -> None:
    changes, expected = case
    payload = receipt("UNDELIVERABLE", **changes)
    [update] = adapter.parse_callback(signed(payload), json.dumps(payload).encode(), "")
    assert update.error == expected
    assert update.state is DeliveryState.FAILED


async def test_callback_header_is_case_insensitive(adapter: GatewayApiAdapter) -> None:
    payload = receipt()
    headers = {"x-gwapi-signature": signed(payload)["X-Gwapi-Signature"]}
    [update] = adapter.parse_callback(headers, json.dumps(payload).encode(), "")
    assert update.state is DeliveryState.DELIVERED


async def test_short_secret_works_without_warnings() -> None:
    # pytest turns warnings into errors: PyJWT's short-key warning must not escape the adapter.
    adapter = callback_adapter(secret="short")
    payload = receipt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        headers = signed(payload, "short")
    [update] = adapter.parse_callback(headers, json.dumps(payload).encode(), "")
    assert update.state is DeliveryState.DELIVERED
    await adapter.close()


def _rejection_cases() -> dict[str, tuple[dict[str, str], bytes, int]]:
    good = receipt()
    body = json.dumps(good).encode()
    expired = jwt.encode({**good, "exp": 1_000_000}, SECRET, algorithm="HS256")
    return {
        "wrong secret": (signed(good, "another-secret-of-at-least-32-bytes"), body, 401),
        "missing header": ({}, body, 401),
        "garbage token": ({"X-Gwapi-Signature": "not.a.jwt"}, body, 401),
        "alg none": ({"X-Gwapi-Signature": unsigned_token(good)}, body, 401),
        "expired token": ({"X-Gwapi-Signature": expired}, body, 401),
        "body id differs": (signed(good), json.dumps(receipt(id=99999)).encode(), 401),
        "body msisdn differs": (signed(good), json.dumps(receipt(msisdn=4599999999)).encode(), 401),
        "body status differs": (signed(receipt("UNDELIVERABLE")), body, 401),
        "malformed JSON": (signed(good), b"{not json", 400),
        "JSON not an object": (signed(good), b"[1, 2]", 400),
        "missing status": (signed(good), json.dumps(receipt(status=None)).encode(), 400),
        "claims miss msisdn": (signed(receipt(msisdn=None)), body, 400),
    }


REJECTIONS = _rejection_cases()


@pytest.mark.parametrize("case", REJECTIONS.values(), ids=REJECTIONS.keys())
async def test_callback_rejected(adapter: GatewayApiAdapter, case) -> None:
    headers, body, status = case
    with pytest.raises(CallbackRejected) as caught:
        adapter.parse_callback(headers, body, CALLBACK_URL)
    assert caught.value.status == status


async def test_callback_rejected_without_secret() -> None:
    adapter = callback_adapter(secret="")
    try:
        payload = receipt()
        headers = signed(payload)  # validly signed, but the adapter has nothing to check it by
        with pytest.raises(CallbackRejected) as caught:
            adapter.parse_callback(headers, json.dumps(payload).encode(), CALLBACK_URL)
        assert caught.value.status == 401
    finally:
        await adapter.close()


# -- the HS256 fast path agrees with PyJWT ---------------------------------------------------------


def _segment(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hs256(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes) -> str:
    import hashlib
    import hmac

    signing_input = f"{_segment(header)}.{_segment(payload)}"
    digest = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_segment(digest)}"


def _parity_tokens() -> dict[str, str]:
    good = receipt()
    plain = jwt.encode(good, SECRET, algorithm="HS256")
    head, body, sig = plain.split(".")
    hs256 = {"alg": "HS256", "typ": "JWT"}
    # The last character of a 32-byte signature carries 2 unused bits: another character
    # decodes to the same bytes, which PyJWT refuses as non-canonical.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(sig[-1]) ^ 1]
    now = int(datetime.now(UTC).timestamp())
    return {
        "plain": plain,
        "header without typ": _hs256({"alg": "HS256"}, good),
        "spaced JSON": _hs256(b'{ "alg" : "HS256" }', b' {"id": 12345, "msisdn": 4520123456} '),
        "header with kid": _hs256({**hs256, "kid": "k1"}, good),
        "kid not a string": _hs256({**hs256, "kid": 5}, good),
        "crit header": _hs256({**hs256, "crit": ["exp"]}, good),
        "alg HS384": _hs256({"alg": "HS384", "typ": "JWT"}, good),
        "alg none": unsigned_token(good),
        "alg missing": _hs256({"typ": "JWT"}, good),
        "padded signature": f"{plain}=" if len(sig) % 4 else plain,
        "padded payload": f"{head}.{body}{'=' * (-len(body) % 4)}.{sig}",
        "non-canonical signature": f"{head}.{body}.{sig[:-1]}{twin}",
        "tampered payload": f"{head}.{_segment({**good, 'status': 'FAILED'})}.{sig}",
        "tampered signature": f"{head}.{body}.{sig[::-1]}",
        "wrong secret": jwt.encode(good, "another-secret-of-at-least-32-bytes", algorithm="HS256"),
        "expired": _hs256(hs256, {**good, "exp": now - 60}),
        "expires later": _hs256(hs256, {**good, "exp": now + 600}),
        "not yet valid": _hs256(hs256, {**good, "nbf": now + 600}),
        "issued in the future": _hs256(hs256, {**good, "iat": now + 600}),
        "iat not a number": _hs256(hs256, {**good, "iat": "yesterday"}),
        "audience": _hs256(hs256, {**good, "aud": "someone"}),
        "subject not a string": _hs256(hs256, {**good, "sub": 5}),
        "payload not an object": _hs256(hs256, b"[1, 2]"),
        "payload not JSON": _hs256(hs256, b"{nope"),
        "two segments": f"{head}.{body}",
        "four segments": f"{plain}.x",
        "not base64": f"{head}.{body[:-2]}!!.{sig}",
        "non-ASCII": f"{head}.{body}\u00e6.{sig}",
    }


PARITY_TOKENS = _parity_tokens()


@pytest.mark.parametrize("token", PARITY_TOKENS.values(), ids=PARITY_TOKENS.keys())
def test_fast_path_accepts_only_what_pyjwt_accepts_with_the_same_claims(token: str) -> None:
    try:
        expected = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        expected = None
    key = _hs256_key(SECRET)
    assert key is not None
    fast = _verified_claims(token, key)
    # The fast path may leave a token to PyJWT (None), but never accepts what PyJWT refuses,
    # and what it accepts it reads as PyJWT does.
    assert fast is None or fast == expected
    # parse_callback (fast path, PyJWT behind it) decides as PyJWT alone does.
    adapter = callback_adapter()
    body = json.dumps(receipt()).encode()
    try:
        adapter.parse_callback({"X-Gwapi-Signature": token}, body, CALLBACK_URL)
        outcome = "accepted"
    except CallbackRejected as exc:
        outcome = "signature" if exc.status == 401 else "claims"
    if expected is None:
        assert outcome == "signature"
    else:
        assert outcome in ("accepted", "claims")  # claims may then miss fields or differ


def test_fast_path_takes_the_tokens_gatewayapi_sends() -> None:
    key = _hs256_key(SECRET)
    assert key is not None
    for name in ("plain", "header without typ", "spaced JSON", "expires later"):
        claims = _verified_claims(PARITY_TOKENS[name], key)
        if name == "expires later":
            assert claims is None  # registered claims: PyJWT checks them
        else:
            assert claims is not None and claims["id"] == 12345, name


def test_secret_pyjwt_refuses_as_hmac_key_disables_the_fast_path() -> None:
    assert _hs256_key("") is None
    assert (
        _hs256_key("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQY=\n-----END PUBLIC KEY-----")
        is None
    )
    assert _hs256_key("ssh-rsa AAAAB3NzaC1yc2E") is None
    assert _hs256_key("short") == b"short"


# -- registry -------------------------------------------------------------------------------------


async def test_registry() -> None:
    assert "gatewayapi" in known_types()
    config = GatewayConfig(name="gw1", type="gatewayapi", base_url="http://unused")
    adapter = create_adapter(config, CALLBACK_URL)
    try:
        assert isinstance(adapter, GatewayApiAdapter)
    finally:
        await adapter.close()
    with pytest.raises(KeyError) as caught:
        create_adapter(GatewayConfig(name="gw2", type="carrier-pigeon", base_url="x"), "")
    assert isinstance(caught.value, ValueError)
    assert "carrier-pigeon" in str(caught.value) and "gatewayapi" in str(caught.value)


def test_every_adapter_declares_its_limits_and_the_registry_caps_the_config() -> None:
    from gateway_adapters.base import AdapterLimits
    from gateway_adapters.registry import ADAPTERS, capped

    for name, cls in ADAPTERS.items():
        assert isinstance(cls.limits, AdapterLimits), name
    config = GatewayConfig(
        name="gw",
        type="gatewayapi",
        base_url="http://127.0.0.1:9",
        concurrency=100,
        rate_per_second=50_000,
    )
    assert capped(config, AdapterLimits(None, 40, 10_000)) == GatewayConfig(
        name="gw",
        type="gatewayapi",
        base_url="http://127.0.0.1:9",
        concurrency=40,
        rate_per_second=10_000,
    )
    assert capped(config, AdapterLimits(None, None, None)) is config
    adapter = create_adapter(config, CALLBACK_URL)
    assert adapter.config.concurrency == 40  # GatewayAPI: 40 open connections per IP
