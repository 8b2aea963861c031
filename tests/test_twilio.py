"""TwilioAdapter against a scripted HTTP server on 127.0.0.1: requests, answers, callbacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import ANY
from urllib.parse import urlencode

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    GatewayConfig,
    GatewayError,
    GatewayMisconfigured,
    OutboundMessage,
    ReceiptUpdate,
    SendResult,
)
from gateway_adapters.registry import create_adapter, known_types
from gateway_adapters.twilio import TwilioAdapter
from gateway_adapters.twilio_callbacks import STATUS_MAP, twilio_signature

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "auth-token-0123456789"
TOKEN = f"{ACCOUNT_SID}:{AUTH_TOKEN}"
FROM = "+4512345678"
SERVICE_SID = "MG0123456789abcdef0123456789abcdef"
CALLBACK_URL = "https://broadcaster.example/v1/callbacks/tw1"
SEND_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@dataclass
class Reply:
    status: int = 201
    body: str | None = None  # None: a fresh {"sid": ..., "status": "queued"} per request
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    sid: str
    peer: tuple[str, int] | None = None


def sid_for(index: int) -> str:
    return f"SM{index:032x}"


class FakeTwilio:
    """Records each request and answers with `by_to[To]` or `reply`; measures requests in flight.

    SIDs count up per request: SM000...0, SM000...1, ...
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply = Reply()
        self.by_to: dict[str, Reply] = {}
        self.in_flight = 0
        self.max_in_flight = 0
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

    def sid_of(self, phone: str) -> str:
        [request] = [r for r in self.requests if r.form.get("To") == phone]
        return request.sid

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            form = {k: str(v) for k, v in (await request.post()).items()}
            sid = sid_for(len(self.requests))  # no await between this and the append below
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    dict(request.headers),
                    form,
                    sid,
                    request.transport.get_extra_info("peername") if request.transport else None,
                )
            )
            reply = self.by_to.get(form.get("To", ""), self.reply)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            text = reply.body
            if text is None:
                text = json.dumps({"sid": sid, "status": "queued", "to": form.get("To")})
            return web.Response(status=reply.status, text=text, headers=reply.headers)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def gateway() -> AsyncIterator[FakeTwilio]:
    server = FakeTwilio()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(base_url: str = "http://unused", **changes: Any) -> GatewayConfig:
    settings: dict[str, Any] = {"token": TOKEN, "sender": FROM, **changes}
    return GatewayConfig(name="tw1", type="twilio", base_url=base_url, **settings)


@pytest.fixture
async def make_adapter() -> AsyncIterator[Callable[..., TwilioAdapter]]:
    """Builds adapters (each owning its session) and closes them afterwards."""
    adapters: list[TwilioAdapter] = []

    def make(base_url: str, callback_url: str = CALLBACK_URL, **changes: Any) -> TwilioAdapter:
        adapter = TwilioAdapter(config(base_url, **changes), callback_url)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.close()


def msg(delivery_id: int, phone: str | None = None, text: str = "Police: stay indoors"):
    phone = phone or f"+452000{delivery_id:04d}"
    return OutboundMessage(delivery_id=delivery_id, phone=phone, text=text, alert_id=17)


def batch(count: int, first: int = 1) -> list[OutboundMessage]:
    return [msg(i) for i in range(first, first + count)]


# -- (a) configuration and request building -------------------------------------------------------

BAD_TOKENS = {
    "empty": "",
    "no separator": ACCOUNT_SID,
    "no auth token": f"{ACCOUNT_SID}:",
    "no account sid": f":{AUTH_TOKEN}",
    "blank parts": " : ",
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_token_is_refused_at_construction(token: str) -> None:
    with pytest.raises(ValueError, match="ACCOUNT_SID:AUTH_TOKEN") as caught:
        TwilioAdapter(config(token=token), CALLBACK_URL)
    assert "tw1" in str(caught.value)


async def test_odd_account_sid_is_quoted_in_the_path(gateway: FakeTwilio, make_adapter) -> None:
    adapter = make_adapter(gateway.base_url, token="AC with space/slash:secret")
    [result] = await adapter.send_batch([msg(1)])
    assert result.accepted
    [request] = gateway.requests
    assert request.path == "/2010-04-01/Accounts/AC with space/slash/Messages.json"


def test_auth_token_may_contain_colons() -> None:
    adapter = TwilioAdapter(config(token=f"{ACCOUNT_SID}:with:colons"), CALLBACK_URL)
    assert adapter.account_sid == ACCOUNT_SID


# (sender, callback_url, expected form without To/Body)
REQUEST_CASES = {
    "From number": (FROM, CALLBACK_URL, {"From": FROM, "StatusCallback": CALLBACK_URL}),
    "alphanumeric From": (
        "POLITI",
        CALLBACK_URL,
        {"From": "POLITI", "StatusCallback": CALLBACK_URL},
    ),
    "Messaging Service": (
        SERVICE_SID,
        CALLBACK_URL,
        {"MessagingServiceSid": SERVICE_SID, "StatusCallback": CALLBACK_URL},
    ),
    "no callback URL": (FROM, "", {"From": FROM}),
}


@pytest.mark.parametrize("case", REQUEST_CASES.values(), ids=REQUEST_CASES.keys())
async def test_request_building(gateway: FakeTwilio, make_adapter, case) -> None:
    sender, callback_url, expected_form = case
    adapter = make_adapter(gateway.base_url, callback_url, sender=sender)
    messages = [
        msg(1, "+4520000001", "Police: stay indoors"),
        msg(2, "+4520000002", "Politi: bliv indendørs & luk vinduer + døre"),
        msg(3, "+4520000003", "Police: stay indoors"),
    ]

    results = await adapter.send_batch(messages)

    basic = "Basic " + base64.b64encode(TOKEN.encode()).decode()
    assert len(gateway.requests) == 3  # one request per message
    for request in gateway.requests:
        assert (request.method, request.path) == ("POST", SEND_PATH)
        assert request.headers["Authorization"] == basic
        assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    sent = sorted((r.form["To"], r.form["Body"]) for r in gateway.requests)
    assert sent == sorted((m.phone, m.text) for m in messages)
    for request in gateway.requests:
        assert {k: v for k, v in request.form.items() if k not in ("To", "Body")} == expected_form

    # One result per message, in input order, carrying the SID Twilio gave that message.
    assert results == [
        SendResult(m.delivery_id, True, gateway_message_id=gateway.sid_of(m.phone))
        for m in messages
    ]


CONCURRENCY_CASES = {"one": (1, 1), "three": (3, 1), "three, two batches at once": (3, 2)}


@pytest.mark.parametrize("case", CONCURRENCY_CASES.values(), ids=CONCURRENCY_CASES.keys())
async def test_concurrency_cap(gateway: FakeTwilio, make_adapter, case) -> None:
    concurrency, batches = case
    gateway.reply = Reply(delay=0.05)
    adapter = make_adapter(gateway.base_url, concurrency=concurrency)

    outcomes = await asyncio.gather(
        *(adapter.send_batch(batch(8, first=1 + 100 * b)) for b in range(batches))
    )

    assert all(r.accepted for results in outcomes for r in results)
    assert len(gateway.requests) == 8 * batches
    # The cap is the adapter's, not each batch's: the dispatcher sends several batches at once.
    assert gateway.max_in_flight == concurrency


async def test_invalid_number_costs_no_request(gateway: FakeTwilio, make_adapter) -> None:
    adapter = make_adapter(gateway.base_url)
    results = await adapter.send_batch([msg(1, "+45abc"), msg(2, "4520000002"), msg(3)])
    assert [(r.accepted, r.retryable) for r in results] == [(False, False)] * 2 + [(True, False)]
    assert results[0].error and results[1].error
    assert [r.form["To"] for r in gateway.requests] == [msg(3).phone]


async def test_empty_batch(gateway: FakeTwilio, make_adapter) -> None:
    assert await make_adapter(gateway.base_url).send_batch([]) == []
    assert gateway.requests == []


# -- (b) answers -> results or errors -------------------------------------------------------------


def twilio_error(code: int, message: str, status: int) -> str:
    return json.dumps({"code": code, "message": message, "more_info": "", "status": status})


NOT_A_NUMBER = "The 'To' number is not a valid phone number."
NOT_MOBILE = "The 'To' phone number is not a mobile number"
QUEUE_FULL = "This 'From' number has exceeded the maximum number of queued messages"

# reply -> the expected result of message 1 (without delivery_id), or the error the batch raises
ANSWER_CASES: dict[str, tuple[Reply, dict[str, Any] | type[GatewayError]]] = {
    "201": (
        Reply(201, '{"sid": "SMabc", "status": "queued"}'),
        {"accepted": True, "gateway_message_id": "SMabc"},
    ),
    "200": (
        Reply(200, '{"sid": "SMdef", "status": "accepted"}'),
        {"accepted": True, "gateway_message_id": "SMdef"},
    ),
    "429 with Retry-After": (
        Reply(429, twilio_error(20429, "Too Many Requests", 429), {"Retry-After": "3"}),
        {"error": "twilio 20429: Too Many Requests", "retryable": True, "throttled": True}
        | {"retry_after": 3.0},
    ),
    "429 bare": (
        Reply(429, "slow down"),
        {"error": "HTTP 429: slow down", "retryable": True, "throttled": True},
    ),
    "20429 in a 400": (
        Reply(400, twilio_error(20429, "Too Many Requests", 400), {"Retry-After": "2"}),
        {"error": ANY, "retryable": True, "throttled": True, "retry_after": 2.0},
    ),
    "500": (Reply(500, "oops"), {"error": "HTTP 500: oops", "retryable": True}),
    "503 with code": (
        Reply(503, twilio_error(20503, "Service Unavailable", 503)),
        {"error": "twilio 20503: Service Unavailable", "retryable": True},
    ),
    "timeout": (Reply(delay=1.0), {"error": ANY, "retryable": True}),
    "201 without sid": (Reply(201, '{"status": "queued"}'), {"error": ANY, "retryable": True}),
    "201 not JSON": (Reply(201, "<html>ok</html>"), {"error": ANY, "retryable": True}),
    "400 21211": (
        Reply(400, twilio_error(21211, NOT_A_NUMBER, 400)),
        {"error": f"twilio 21211: {NOT_A_NUMBER}"},
    ),
    "400 21614": (
        Reply(400, twilio_error(21614, NOT_MOBILE, 400)),
        {"error": f"twilio 21614: {NOT_MOBILE}"},
    ),
    "400 21610 STOP": (
        Reply(400, twilio_error(21610, "Attempt to send to unsubscribed recipient", 400)),
        {"error": "twilio 21610: Attempt to send to unsubscribed recipient", "opted_out": True},
    ),
    "400 21611 queue full": (
        Reply(400, twilio_error(21611, QUEUE_FULL, 400)),
        {"error": f"twilio 21611: {QUEUE_FULL}", "retryable": True, "throttled": True}
        | {"retry_after": 10.0},
    ),
    "400 21611 queue full with Retry-After": (
        Reply(400, twilio_error(21611, QUEUE_FULL, 400), {"Retry-After": "4"}),
        {"error": ANY, "retryable": True, "throttled": True, "retry_after": 4.0},
    ),
    "400 21408 region": (
        Reply(400, twilio_error(21408, "Permission to send an SMS has not been enabled", 400)),
        {"error": "twilio 21408: Permission to send an SMS has not been enabled"},
    ),
    "400 without code": (Reply(400, "bad"), {"error": "HTTP 400: bad"}),
    "401": (Reply(401, twilio_error(20003, "Authenticate", 401)), GatewayMisconfigured),
    "403": (Reply(403, "forbidden"), GatewayMisconfigured),
    "404": (Reply(404, twilio_error(20404, "Not Found", 404)), GatewayMisconfigured),
    "400 21212 bad From": (
        Reply(400, twilio_error(21212, "Invalid From Number", 400)),
        GatewayMisconfigured,
    ),
    "400 21606 From cannot send": (
        Reply(400, twilio_error(21606, "The From number is not a valid sender", 400)),
        GatewayMisconfigured,
    ),
    "400 21603 From missing": (
        Reply(400, twilio_error(21603, "A 'From' phone number is required", 400)),
        GatewayMisconfigured,
    ),
    "400 21601 From not SMS-capable": (
        Reply(400, twilio_error(21601, "Phone number is not a valid SMS-capable number", 400)),
        GatewayMisconfigured,
    ),
    "400 21659 From not a Twilio number": (
        Reply(400, twilio_error(21659, "'From' is not a Twilio phone number", 400)),
        GatewayMisconfigured,
    ),
    "400 21701 no such Messaging Service": (
        Reply(400, twilio_error(21701, "The Messaging Service does not exist", 400)),
        GatewayMisconfigured,
    ),
    "400 21705 Messaging Service invalid": (
        Reply(400, twilio_error(21705, "The Messaging Service is invalid", 400)),
        GatewayMisconfigured,
    ),
}


@pytest.mark.parametrize("case", ANSWER_CASES.values(), ids=ANSWER_CASES.keys())
async def test_answer_mapping(gateway: FakeTwilio, make_adapter, case) -> None:
    reply, expected = case
    gateway.reply = reply
    adapter = make_adapter(gateway.base_url, timeout_seconds=0.3, concurrency=1)

    if isinstance(expected, type):
        with pytest.raises(expected) as caught:
            await adapter.send_batch(batch(3))
        assert type(caught.value) is expected
        assert caught.value.partial_results == ()
        assert len(gateway.requests) == 1  # the rest of the batch is not even tried
        return
    results = await adapter.send_batch([msg(1)])
    assert results == [SendResult(1, **{"accepted": False, **expected})]
    assert len(gateway.requests) == 1  # never retried by the adapter


async def test_connection_refused_is_retryable(make_adapter) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = make_adapter(f"http://127.0.0.1:{port}", timeout_seconds=2)
    results = await adapter.send_batch(batch(2))
    assert [(r.accepted, r.retryable, r.throttled) for r in results] == [(False, True, False)] * 2
    assert all(r.error for r in results)


async def test_mixed_answers_stay_with_their_messages(gateway: FakeTwilio, make_adapter) -> None:
    messages = batch(4)
    gateway.by_to = {
        messages[1].phone: Reply(400, twilio_error(21211, NOT_A_NUMBER, 400)),
        messages[2].phone: Reply(503, "busy"),
    }
    results = await make_adapter(gateway.base_url, concurrency=4).send_batch(messages)
    assert [(r.delivery_id, r.accepted, r.retryable) for r in results] == [
        (1, True, False),
        (2, False, False),
        (3, False, True),
        (4, True, False),
    ]
    assert [r.gateway_message_id for r in results] == [
        gateway.sid_of(messages[0].phone),
        None,
        None,
        gateway.sid_of(messages[3].phone),
    ]


async def test_misconfigured_keeps_results_accepted_before(gateway: FakeTwilio, make_adapter):
    messages = batch(5)
    gateway.by_to = {messages[2].phone: Reply(401, twilio_error(20003, "Authenticate", 401))}
    adapter = make_adapter(gateway.base_url, concurrency=1)  # one at a time: a fixed order

    with pytest.raises(GatewayMisconfigured) as caught:
        await adapter.send_batch(messages)

    assert [r.form["To"] for r in gateway.requests] == [m.phone for m in messages[:3]]
    assert caught.value.partial_results == (
        SendResult(1, True, gateway_message_id=sid_for(0)),
        SendResult(2, True, gateway_message_id=sid_for(1)),
    )


async def test_misconfigured_waits_for_requests_on_the_wire(gateway: FakeTwilio, make_adapter):
    """Requests already sent when the 401 arrives are answered and kept; no new ones start."""
    messages = batch(8)
    gateway.by_to = {
        messages[0].phone: Reply(delay=0.2),
        messages[1].phone: Reply(403, "forbidden"),
        messages[2].phone: Reply(delay=0.2),
    }
    adapter = make_adapter(gateway.base_url, concurrency=3)

    with pytest.raises(GatewayMisconfigured) as caught:
        await adapter.send_batch(messages)

    assert sorted(r.form["To"] for r in gateway.requests) == [m.phone for m in messages[:3]]
    assert caught.value.partial_results == (
        SendResult(1, True, gateway_message_id=gateway.sid_of(messages[0].phone)),
        SendResult(3, True, gateway_message_id=gateway.sid_of(messages[2].phone)),
    )
    # The cap was released: the adapter still works.
    gateway.by_to = {}
    assert (await adapter.send_batch(batch(4, first=50)))[0].accepted


async def test_connections_are_kept_alive(gateway: FakeTwilio, make_adapter) -> None:
    adapter = make_adapter(gateway.base_url, concurrency=2)
    for first in (1, 101):
        assert all(r.accepted for r in await adapter.send_batch(batch(10, first=first)))
    assert len(gateway.requests) == 20
    # Two requests in flight at most, so two connections carry all twenty.
    assert 1 <= len({r.peer for r in gateway.requests}) <= 2


# -- (c) callbacks --------------------------------------------------------------------------------

# Written out rather than derived from STATUS_MAP, so a changed mapping fails here.
EXPECTED_STATES = {
    "queued": DeliveryState.SENT,
    "accepted": DeliveryState.SENT,
    "scheduled": DeliveryState.SENT,
    "sending": DeliveryState.SENT,
    "sent": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "read": DeliveryState.DELIVERED,
    "undelivered": DeliveryState.FAILED,
    "failed": DeliveryState.FAILED,
    "canceled": DeliveryState.FAILED,
}


def status_params(status: str = "delivered", **changes: str | None) -> dict[str, str]:
    """A status callback as Twilio posts it; a change to None drops the parameter."""
    params = {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": FROM,
        "MessageSid": "SM11111111111111111111111111111111",
        "MessageStatus": status,
        "SmsSid": "SM11111111111111111111111111111111",
        "SmsStatus": status,
        "To": "+4520123456",
    }
    params.update({k: v for k, v in changes.items() if v is not None})
    return {k: v for k, v in params.items() if changes.get(k, "") is not None}


def sign(params: dict[str, str], url: str = CALLBACK_URL, token: str = AUTH_TOKEN) -> str:
    """Twilio's algorithm, written out independently of the adapter."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def signed_request(
    params: dict[str, str], url: str = CALLBACK_URL, token: str = AUTH_TOKEN
) -> tuple[dict[str, str], bytes]:
    return {"X-Twilio-Signature": sign(params, url, token)}, urlencode(params).encode()


@pytest.fixture
async def adapter() -> AsyncIterator[TwilioAdapter]:
    adapter = TwilioAdapter(config(), CALLBACK_URL)
    yield adapter
    await adapter.close()


def test_status_table_covers_the_map() -> None:
    assert set(EXPECTED_STATES) == set(STATUS_MAP)


@pytest.mark.parametrize(("status", "state"), [*EXPECTED_STATES.items(), ("newword", "sent")])
async def test_callback_status(adapter: TwilioAdapter, status: str, state: str) -> None:
    params = status_params(status)
    headers, body = signed_request(params)

    updates = adapter.parse_callback(headers, body, CALLBACK_URL)

    assert updates == [
        ReceiptUpdate(
            gateway_message_id="SM11111111111111111111111111111111",
            phone=None,  # matched by MessageSid alone; To stays in raw
            state=DeliveryState(state),
            provider_status=status,
            error=None,
            raw=params,
            known_status=status != "newword",
        )
    ]


CALLBACK_FIELD_CASES = {
    "error code": ({"MessageStatus": "undelivered", "ErrorCode": "30003"}, "error", "twilio 30003"),
    "empty error code": ({"ErrorCode": ""}, "error", None),
    "capitalised status": ({"MessageStatus": "Delivered"}, "state", DeliveryState.DELIVERED),
    "To without plus": ({"To": "4520123456"}, "phone", None),
    "no To": ({"To": None}, "phone", None),
    "WhatsApp To": ({"To": "whatsapp:+4520123456"}, "phone", None),
    "with Messaging Service": ({"MessagingServiceSid": SERVICE_SID}, "phone", None),
    "21610 STOP is an opt-out": (
        {"MessageStatus": "failed", "ErrorCode": "21610"},
        "opted_out",
        True,
    ),
    "other errors are not": ({"MessageStatus": "failed", "ErrorCode": "30003"}, "opted_out", False),
    "unknown status word": ({"MessageStatus": "partially_delivered"}, "known_status", False),
    "known status word": ({"MessageStatus": "undelivered"}, "known_status", True),
    "unicode parameter": ({"Body": "bliv indendørs ✓"}, "provider_status", "delivered"),
}


@pytest.mark.parametrize("case", CALLBACK_FIELD_CASES.values(), ids=CALLBACK_FIELD_CASES.keys())
async def test_callback_fields(adapter: TwilioAdapter, case) -> None:
    changes, attribute, expected = case
    headers, body = signed_request(status_params(**changes))
    [update] = adapter.parse_callback(headers, body, CALLBACK_URL)
    assert getattr(update, attribute) == expected


def plain(signature: str) -> dict[str, str]:
    return {"X-Twilio-Signature": signature}


ACCEPT_CASES: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "lower-case header": (lambda sig: {"x-twilio-signature": sig}, CALLBACK_URL, CALLBACK_URL),
    "CIMultiDict header": (
        lambda sig: CIMultiDict({"X-TWILIO-SIGNATURE": sig}),
        CALLBACK_URL,
        CALLBACK_URL,
    ),
    # Twilio signs https URLs with or without :443; its own validator accepts both.
    "signed with :443": (plain, "https://broadcaster.example:443/v1/callbacks/tw1", CALLBACK_URL),
    "called with :443": (plain, CALLBACK_URL, "https://broadcaster.example:443/v1/callbacks/tw1"),
    # Behind a proxy the service sees another URL; the one we gave Twilio is still valid.
    "seen through a proxy": (plain, CALLBACK_URL, "http://10.0.0.5:8000/v1/callbacks/tw1"),
    "URL with query": (
        plain,
        "https://broadcaster.example/cb?gw=tw1&x=1",
        "https://broadcaster.example/cb?gw=tw1&x=1",
    ),
}


@pytest.mark.parametrize("case", ACCEPT_CASES.values(), ids=ACCEPT_CASES.keys())
async def test_callback_accepted(adapter: TwilioAdapter, case) -> None:
    make_headers, signed_url, called_url = case
    params = status_params()
    headers = make_headers(sign(params, signed_url))
    [update] = adapter.parse_callback(headers, urlencode(params).encode(), called_url)
    assert update.state is DeliveryState.DELIVERED


def _rejection_cases() -> dict[str, tuple[dict[str, str], bytes, str, int]]:
    good = status_params()
    headers, body = signed_request(good)
    tampered = urlencode({**good, "MessageStatus": "failed"}).encode()
    extra = urlencode({**good, "ErrorCode": "30003"}).encode()
    other_account = status_params(AccountSid="AC99999999999999999999999999999999")
    no_sid = status_params(MessageSid=None)
    no_status = status_params(MessageStatus=None)
    empty_sid = status_params(MessageSid="")
    return {
        "wrong token": (*signed_request(good, token="another-token"), CALLBACK_URL, 401),
        "missing header": ({}, body, CALLBACK_URL, 401),
        "empty header": ({"X-Twilio-Signature": ""}, body, CALLBACK_URL, 401),
        "garbage header": ({"X-Twilio-Signature": "not-a-signature"}, body, CALLBACK_URL, 401),
        "tampered parameter": (headers, tampered, CALLBACK_URL, 401),
        "added parameter": (headers, extra, CALLBACK_URL, 401),
        "signed for another URL": (
            *signed_request(good, "https://evil.example/cb"),
            "https://evil.example/cb2",
            401,
        ),
        "other AccountSid": (*signed_request(other_account), CALLBACK_URL, 401),
        "missing MessageSid": (*signed_request(no_sid), CALLBACK_URL, 400),
        "empty MessageSid": (*signed_request(empty_sid), CALLBACK_URL, 400),
        "missing MessageStatus": (*signed_request(no_status), CALLBACK_URL, 400),
        "body not UTF-8": (headers, b"MessageSid=\xff\xfe", CALLBACK_URL, 400),
    }


REJECTIONS = _rejection_cases()


@pytest.mark.parametrize("case", REJECTIONS.values(), ids=REJECTIONS.keys())
async def test_callback_rejected(adapter: TwilioAdapter, case) -> None:
    headers, body, url, status = case
    with pytest.raises(CallbackRejected) as caught:
        adapter.parse_callback(headers, body, url)
    assert caught.value.status == status


# -- (d) the signature against Twilio's own validator (optional dependency) -----------------------

SIGNATURE_CASES = {
    "status callback": (CALLBACK_URL, status_params()),
    "failure with code": (CALLBACK_URL, status_params("undelivered", ErrorCode="30003")),
    "unicode and symbols": (
        "https://broadcaster.example/cb?a=1&b=two",
        {"Body": "bliv indendørs & luk + døre ✓", "To": "+4520123456", "Empty": ""},
    ),
    "no parameters": ("http://127.0.0.1:8080/cb", {}),
}


@pytest.mark.parametrize("case", SIGNATURE_CASES.values(), ids=SIGNATURE_CASES.keys())
async def test_signature_matches_twilio_library(adapter: TwilioAdapter, case) -> None:
    request_validator = pytest.importorskip("twilio.request_validator")
    url, params = case
    validator = request_validator.RequestValidator(AUTH_TOKEN)

    ours = twilio_signature(AUTH_TOKEN, url, params)

    assert ours == validator.compute_signature(url, params)
    assert validator.validate(url, params, ours)
    if "MessageSid" in params:  # and the adapter takes what Twilio's library signs
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        [update] = adapter.parse_callback(headers, urlencode(params).encode(), url)
        assert update.gateway_message_id == params["MessageSid"]


# -- registry -------------------------------------------------------------------------------------


async def test_registry() -> None:
    assert "twilio" in known_types()
    adapter = create_adapter(config(), CALLBACK_URL)
    try:
        assert isinstance(adapter, TwilioAdapter)
        assert adapter.max_batch == config().max_batch
    finally:
        await adapter.close()
