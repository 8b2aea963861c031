"""Gateway callbacks as the gateways retry them: answered within the deadline (503 when the
receipts could not be committed in time, so the gateway sends them again), refused with 422 when
the database can never store them (not 503 for ever), applied by Twilio's MessageSid whatever
the To, and counted when their status word is unknown. A real PostgreSQL behind the app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import jwt
import pytest
from prometheus_client import REGISTRY

from broadcaster.api.app import create_app
from broadcaster.settings import GatewaySettings, load_settings
from gateway_adapters.twilio_callbacks import twilio_signature

SECRET = "test-webhook-secret-0123456789abcdef"
TWILIO_TOKEN = "ACtest:auth-token"
BASE = "http://test"


@asynccontextmanager
async def api(db_url: str, deadline: float = 4.0) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        database_url=db_url,
        callback_deadline_seconds=deadline,
        gateways=[
            GatewaySettings(
                name="primary",
                type="gatewayapi",
                base_url="http://127.0.0.1:9",
                token="t",
                webhook_secret=SECRET,
            ),
            GatewaySettings(
                name="tw", type="twilio", base_url="http://127.0.0.1:9", token=TWILIO_TOKEN
            ),
        ],
        public_url=BASE,
    )
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


def gatewayapi_receipt(**claims: Any) -> dict[str, Any]:
    payload = {"id": 77, "msisdn": 4520000001, "time": 1763900000, "status": "DELIVERED"}
    payload.update(claims)
    return {
        "content": json.dumps(payload),
        "headers": {"X-Gwapi-Signature": jwt.encode(payload, SECRET, "HS256")},
    }


def twilio_receipt(**params: str) -> dict[str, Any]:
    form = {"AccountSid": "ACtest", "MessageSid": "SM77", "MessageStatus": "delivered"}
    form.update(params)
    url = f"{BASE}/v1/callbacks/tw"
    return {
        "content": urlencode(form),
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature("auth-token", url, form),
        },
    }


async def sent_delivery(pool: asyncpg.Pool, gateway: str, message_id: str, phone: str) -> int:
    async with pool.acquire() as conn:
        sub = await conn.fetchval("INSERT INTO subscribers (phone) VALUES ($1) RETURNING id", phone)
        alert = await conn.fetchval(
            "INSERT INTO alerts (message, area, priority, status) "
            "VALUES ('m', '{}'::jsonb, 2, 'dispatching') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO deliveries (alert_id, subscriber_id, priority, status, gateway, "
            "gateway_message_id) VALUES ($1, $2, 2, 'sent', $3, $4)",
            alert,
            sub,
            gateway,
            message_id,
        )
    return int(sub)


# What the database can never store, in a correctly signed receipt.
UNSTORABLE: dict[str, Callable[[], dict[str, Any]]] = {
    "NUL in the error text": lambda: gatewayapi_receipt(status="UNDELIVERABLE", error="a\x00b"),
    "NUL in a field only kept raw": lambda: gatewayapi_receipt(userref="ref\x00"),
    "NUL in the status word": lambda: gatewayapi_receipt(status="DELIVERED\x00"),
    "lone surrogate": lambda: gatewayapi_receipt(userref="\ud800"),
    "NUL in a Twilio parameter": lambda: twilio_receipt(ErrorMessage="x\x00y"),
}


@pytest.mark.parametrize("make", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_a_receipt_that_can_never_be_stored_is_refused_not_retried_for_ever(
    db_url: str, pool: asyncpg.Pool, make: Callable[[], dict[str, Any]]
) -> None:
    request = make()
    path = (
        "/v1/callbacks/tw"
        if "X-Twilio-Signature" in request["headers"]
        else ("/v1/callbacks/primary")
    )
    async with api(db_url) as client:
        answers = [(await client.post(path, **request)).status_code for _ in range(2)]
        # The database is fine: a good receipt next to it is stored.
        good = await client.post("/v1/callbacks/primary", **gatewayapi_receipt())
    assert answers == [422, 422]
    assert good.status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 1


async def test_a_slow_database_is_answered_503_within_the_deadline(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with api(db_url, deadline=0.5) as client:
        async with pool.acquire() as blocker, blocker.transaction():
            await blocker.execute("LOCK TABLE delivery_receipts IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = await client.post("/v1/callbacks/primary", **gatewayapi_receipt())
            took = time.monotonic() - started
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert took < 1.5, took
        # The gateway sends it again once the database is back: stored.
        again = await client.post("/v1/callbacks/primary", **gatewayapi_receipt())
        assert again.status_code == 200
    # The first request was being written when its handler gave up, so it may be stored as
    # well; a repeated receipt changes nothing.
    assert 1 <= await pool.fetchval("SELECT count(*) FROM delivery_receipts") <= 2


async def test_a_twilio_receipt_applies_by_message_sid_whatever_its_to(
    db_url: str, pool: asyncpg.Pool
) -> None:
    await sent_delivery(pool, "tw", "SM77", "+4520000001")
    async with api(db_url) as client:
        answer = await client.post("/v1/callbacks/tw", **twilio_receipt(To="+45 20 00 00 01"))
    assert answer.status_code == 200
    assert await pool.fetchval("SELECT status FROM deliveries") == "delivered"
    assert await pool.fetchval("SELECT applied FROM delivery_receipts")


async def test_a_stop_callback_opts_out_only_its_recipient(db_url: str, pool: asyncpg.Pool) -> None:
    stopped = await sent_delivery(pool, "tw", "SM77", "+4520000001")
    other = await sent_delivery(pool, "tw", "SM78", "+4520000002")
    # GatewayAPI's ids cover a whole batch: only the receipt's number is concerned.
    batch = await sent_delivery(pool, "primary", "900", "+4520000003")
    neighbour = await sent_delivery(pool, "primary", "900", "+4520000004")
    async with api(db_url) as client:
        stop = twilio_receipt(MessageStatus="failed", ErrorCode="21610")
        assert (await client.post("/v1/callbacks/tw", **stop)).status_code == 200
        again = await client.post("/v1/callbacks/tw", **stop)  # Twilio may send it twice
        assert again.status_code == 200
    status = dict(await pool.fetch("SELECT id, status FROM subscribers"))
    assert status == {stopped: "opted_out", other: "active", batch: "active", neighbour: "active"}
    reason = await pool.fetchval("SELECT opt_out_reason FROM subscribers WHERE id = $1", stopped)
    assert reason == "carrier opt-out via tw: twilio 21610"
    assert (
        await pool.fetchval("SELECT status FROM deliveries WHERE subscriber_id = $1", stopped)
        == "failed"
    )


def unknown_count(gateway: str) -> float:
    value = REGISTRY.get_sample_value(
        "broadcaster_receipts_unknown_status_total", {"gateway": gateway}
    )
    return value or 0.0


async def test_receipts_with_an_unknown_status_are_kept_logged_and_counted(
    db_url: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await sent_delivery(pool, "tw", "SM77", "+4520000001")
    before = unknown_count("tw"), unknown_count("primary")
    async with api(db_url) as client:
        for request, path in (
            (twilio_receipt(MessageStatus="partially_delivered"), "/v1/callbacks/tw"),
            (gatewayapi_receipt(status="DELIVERD"), "/v1/callbacks/primary"),
            (twilio_receipt(MessageStatus="sent"), "/v1/callbacks/tw"),  # known
        ):
            assert (await client.post(path, **request)).status_code == 200
    assert (unknown_count("tw"), unknown_count("primary")) == (before[0] + 1, before[1] + 1)
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 3
    assert await pool.fetchval("SELECT status FROM deliveries") == "sent"  # moved nothing
    warnings = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert len(warnings) == 2 and "4520000001" not in " ".join(warnings)


async def test_answers_within_the_deadline_under_many_concurrent_callbacks(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with api(db_url) as client:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(client.post("/v1/callbacks/primary", **gatewayapi_receipt(id=i)) for i in range(300))
        )
        took = time.monotonic() - started
    assert {a.status_code for a in answers} == {200}
    assert took < 4
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 300
