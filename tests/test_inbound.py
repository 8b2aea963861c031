"""Inbound SMS through POST /v1/inbound/{gateway} against a real PostgreSQL: every keyword in both
languages with odd spacing and case and what it does (opt-out at once with its queued deliveries
cancelled, opt back in, help, answers by SMS in the right language, at most so many an hour),
numbers we do not know, repeated messages stored once, and refusals of unsigned or wrongly
signed requests in each gateway's format."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import jwt
import pytest
from tests.test_fanout import DONUT, add_subscribers, queue_alert
from twilio import request_validator

from broadcaster.api.app import create_app
from broadcaster.citizens import retention
from broadcaster.citizens.texts import text
from broadcaster.database import create_pool
from broadcaster.dispatch import queue
from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.dispatch.message_ids import ConnectionReceipts
from broadcaster.dispatch.receipt_writer import ReceiptWriter
from broadcaster.importer import import_file
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.zones import resolve_postal_codes
from broadcaster.settings import GatewaySettings, Settings, load_settings
from gateway_adapters.base import InboundMessage, ReceiptsNotStored

SECRET = "inbound-webhook-secret-0123456789abcdef"
ACCOUNT, AUTH_TOKEN = "ACinbound", "inbound-auth-token"
PUBLIC = "https://broadcaster.example.dk"
ORG = "Tryghed"
UNKNOWN = "+4529990001"
_ids = iter(range(5_000_000, 6_000_000))


def settings_for(db_url: str, **extra: Any) -> Settings:
    return load_settings(
        database_url=db_url,
        organisation=ORG,
        public_url=PUBLIC,
        gateways=[
            GatewaySettings(
                name="primary", type="gatewayapi", base_url="http://x", webhook_secret=SECRET
            ),
            GatewaySettings(
                name="tw", type="twilio", base_url="http://x", token=f"{ACCOUNT}:{AUTH_TOKEN}"
            ),
            GatewaySettings(name="smsc", type="smpp", base_url="smpp://127.0.0.1:9", token="a:b"),
        ],
        **extra,
    )


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(db_url), db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def mo(phone: str, message: str, mo_id: int | None = None) -> dict[str, Any]:
    return {
        "id": next(_ids) if mo_id is None else mo_id,
        "msisdn": int(phone.lstrip("+")),
        "receiver": 4570000000,
        "message": message,
        "senttime": int(time.time()),
        "webhook_label": "broadcaster",
    }


async def send(
    client: httpx.AsyncClient, phone: str, message: str, mo_id: int | None = None
) -> httpx.Response:
    """POST a GatewayAPI MO SMS, signed as GatewayAPI signs it."""
    payload = mo(phone, message, mo_id)
    headers = {"X-Gwapi-Signature": jwt.encode(payload, SECRET, algorithm="HS256")}
    return await client.post("/v1/inbound/primary", json=payload, headers=headers)


async def notices_to(pool: asyncpg.Pool, phone: str) -> list[str]:
    rows = await pool.fetch(
        """SELECT a.message FROM alerts a JOIN deliveries d ON d.alert_id = a.id
           JOIN subscribers s ON s.id = d.subscriber_id
           WHERE a.kind = 'notice' AND s.phone = $1 ORDER BY a.id""",
        phone,
    )
    return [r["message"] for r in rows]


async def subscriber(pool: asyncpg.Pool, phone: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT id, status, opted_out_at, opt_out_reason, source, language "
        "FROM subscribers WHERE phone = $1",
        phone,
    )


async def new_subscriber(pool: asyncpg.Pool, language: str = "da", status: str = "active") -> str:
    async with pool.acquire() as conn:
        (sid,) = await add_subscribers(conn, [[(12.05, 55.05)]], status)
        await conn.execute("UPDATE subscribers SET language = $2 WHERE id = $1", sid, language)
        return str(await conn.fetchval("SELECT phone FROM subscribers WHERE id = $1", sid))


# -- keywords -------------------------------------------------------------------------------------

STOPS = [
    ("STOP", None),
    (" stop ", None),
    ("Stop.", None),
    ("sToP!", None),
    ("\nSTÓP\t", None),
    ("AFMELD", "da"),
    (" afmeld. ", "da"),
    ("STOPP", "da"),
    ("Stopp?", "da"),
    ("UNSUBSCRIBE", "en"),
    ("unsubscribe !", "en"),
]


@pytest.mark.parametrize(("word", "_language"), STOPS)
async def test_stop_words_opt_out_at_once_and_confirm_by_sms(
    client: httpx.AsyncClient, pool: asyncpg.Pool, word: str, _language: str | None
) -> None:
    phone = await new_subscriber(pool, language="en")
    r = await send(client, phone, word)
    assert r.status_code == 200 and r.json() == {"received": 1}, r.text
    row = await subscriber(pool, phone)
    assert row is not None
    assert (row["status"], row["opt_out_reason"]) == ("opted_out", "sms STOP")
    assert row["opted_out_at"] is not None
    # The confirmation in the subscriber's own language (English here), whatever the word's.
    assert await notices_to(pool, phone) == [text("stop", "en", ORG)]
    kinds = await pool.fetch("SELECT kind, subscriber_id, text FROM inbound_messages")
    assert [(k["kind"], k["subscriber_id"], k["text"]) for k in kinds] == [
        ("stop", row["id"], word)
    ]


@pytest.mark.parametrize("word", ["START", "  start  ", "Start!"])
async def test_start_opts_back_in_when_there_are_areas(
    client: httpx.AsyncClient, pool: asyncpg.Pool, word: str
) -> None:
    phone = await new_subscriber(pool)
    assert (await send(client, phone, "stop")).status_code == 200
    assert (await send(client, phone, word)).status_code == 200
    row = await subscriber(pool, phone)
    assert row is not None
    assert (row["status"], row["opted_out_at"], row["opt_out_reason"]) == ("active", None, None)
    assert await notices_to(pool, phone) == [text("stop", "da", ORG), text("start", "da", ORG)]


async def test_start_without_areas_says_how_to_join(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    assert (await send(client, UNKNOWN, "STOP")).status_code == 200
    assert (await send(client, UNKNOWN, "start")).status_code == 200
    row = await subscriber(pool, UNKNOWN)
    assert row is not None and row["status"] == "opted_out"  # no areas: nothing to send them
    assert (await notices_to(pool, UNKNOWN))[-1] == text("start_nothing", "da", ORG)


@pytest.mark.parametrize(
    ("word", "language"),
    [
        ("HJÆLP", "da"),
        ("hjælp", "da"),
        ("HJAELP", "da"),
        (" Hjælp? ", "da"),
        ("HELP", "en"),
        ("help.", "en"),
        ("  Help!  ", "en"),
    ],
)
async def test_help_words_answer_in_the_words_language_to_a_number_we_do_not_know(
    client: httpx.AsyncClient, pool: asyncpg.Pool, word: str, language: str
) -> None:
    assert (await send(client, UNKNOWN, word)).status_code == 200
    assert await notices_to(pool, UNKNOWN) == [text("help", language, ORG)]
    # A pending row made by SMS carries the answer; it gets no alert (no areas, not active).
    row = await subscriber(pool, UNKNOWN)
    assert row is not None and (row["status"], row["source"]) == ("pending", "sms")
    stored = await pool.fetchrow("SELECT kind, subscriber_id FROM inbound_messages")
    assert (stored["kind"], stored["subscriber_id"]) == ("help", row["id"])


async def test_help_answers_a_subscriber_in_their_language(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    phone = await new_subscriber(pool, language="en")
    assert (await send(client, phone, "HJÆLP")).status_code == 200
    assert await notices_to(pool, phone) == [text("help", "en", ORG)]
    row = await subscriber(pool, phone)
    assert row is not None and row["status"] == "active"  # help changes nothing


async def test_stop_from_a_number_we_do_not_know_keeps_it_out_for_good(
    client: httpx.AsyncClient, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    assert (await send(client, UNKNOWN, "afmeld")).status_code == 200
    row = await subscriber(pool, UNKNOWN)
    assert row is not None
    assert (row["status"], row["source"], row["opt_out_reason"]) == ("opted_out", "sms", "sms STOP")
    assert await notices_to(pool, UNKNOWN) == [text("stop", "da", ORG)]
    # A later import of the number (no status column) does not subscribe it ...
    csv = tmp_path / "import.csv"
    csv.write_text(f"phone,lat,lon\n{UNKNOWN},55.05,12.05\n")
    async with pool.acquire() as conn:
        await import_file(conn, csv)
        row = await subscriber(pool, UNKNOWN)
        assert row is not None and row["status"] == "opted_out"
        # ... so an alert over its new location leaves it out.
        alert = await queue_alert(conn, DONUT)
        await fan_out_next(conn)
        assert (
            await conn.fetchval("SELECT count(*) FROM deliveries WHERE alert_id = $1", alert) == 0
        )
    # Retention forgets pending rows made by SMS, never the opted-out ones.
    await pool.execute("UPDATE subscribers SET created_at = now() - interval '40 days'")
    await retention.run(pool, settings_for("unused"))
    assert await subscriber(pool, UNKNOWN) is not None


async def test_pending_rows_made_for_answers_are_forgotten_after_the_pending_days(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    assert (await send(client, UNKNOWN, "HELP")).status_code == 200
    assert (await send(client, "+4529990002", "HELP")).status_code == 200
    settings = settings_for("unused")  # BROADCASTER_PENDING_DAYS 7
    await retention.run(pool, settings)
    assert await subscriber(pool, UNKNOWN) is not None  # too young
    await pool.execute(
        "UPDATE subscribers SET created_at = now() - interval '8 days' WHERE phone = $1", UNKNOWN
    )
    await retention.run(pool, settings)
    assert await subscriber(pool, UNKNOWN) is None
    assert await subscriber(pool, "+4529990002") is not None
    # The message it sent stays (without a subscriber): a tip or a keyword is a record.
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == 2


async def test_answers_to_one_number_are_limited_per_hour(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    phone = await new_subscriber(pool)
    for _ in range(7):
        assert (await send(client, phone, "HELP")).status_code == 200
    assert len(await notices_to(pool, phone)) == 5  # BROADCASTER_KEYWORD_REPLIES_PER_NUMBER
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == 7
    # The action is done all the same.
    assert (await send(client, phone, "STOP")).status_code == 200
    row = await subscriber(pool, phone)
    assert row is not None and row["status"] == "opted_out"


async def test_a_repeated_message_is_stored_once_and_acted_on_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    phone = await new_subscriber(pool)
    first = await send(client, phone, "STOP", mo_id=777)
    again = await send(client, phone, "STOP", mo_id=777)
    assert first.status_code == again.status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == 1
    assert len(await notices_to(pool, phone)) == 1
    # Concurrent repeats (a gateway retrying while the first is being stored) too.
    rs = await asyncio.gather(*(send(client, phone, "HELP", mo_id=778) for _ in range(10)))
    assert {r.status_code for r in rs} == {200}
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages WHERE kind = 'help'") == 1
    assert len(await notices_to(pool, phone)) == 2


# -- STOP and queued deliveries ------------------------------------------------------------------


async def test_stop_cancels_the_numbers_queued_alert_deliveries_but_not_its_answers(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(3)])
        first, second = await queue_alert(conn, DONUT), await queue_alert(conn, DONUT)
        await fan_out_next(conn)
        await fan_out_next(conn)
        phone = await conn.fetchval("SELECT phone FROM subscribers WHERE id = $1", ids[1])
    # One of the two deliveries to the number is held by a dispatcher (claimed, being sent).
    holder = await pool.acquire()
    try:
        batch = await holder.fetchval(
            "SELECT id FROM deliveries WHERE alert_id = $1 AND subscriber_id = $2", first, ids[1]
        )
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE", batch)
        started = time.monotonic()
        r = await send(client, phone, "STOP")
        assert r.status_code == 200
        assert time.monotonic() - started < 1.0  # the held row was skipped, not waited for
        await tx.rollback()
    finally:
        await pool.release(holder)
    rows = await pool.fetch(
        "SELECT alert_id, subscriber_id, status, error FROM deliveries ORDER BY alert_id, id"
    )
    cancelled = {(r["alert_id"], r["subscriber_id"]) for r in rows if r["status"] == "cancelled"}
    assert cancelled == {(second, ids[1])}
    assert {r["error"] for r in rows if r["status"] == "cancelled"} == {
        "subscriber opted out by SMS"
    }
    # The confirmation (a notice) stays queued for the number.
    notice = await pool.fetchrow(
        """SELECT d.id, d.status FROM deliveries d JOIN alerts a ON a.id = d.alert_id
           WHERE a.kind = 'notice' AND d.subscriber_id = $1""",
        ids[1],
    )
    assert notice["status"] == "queued"
    # The row that was held goes back to the queue; the next claim sees the subscriber is not
    # active, and the dispatcher cancels such rows (claims take the most urgent priority
    # present: the notice is sent first).
    await pool.execute("UPDATE deliveries SET status = 'sent' WHERE id = $1", notice["id"])
    async with pool.acquire() as conn:
        claimed = await queue.claim(conn, 100, 60)
        mine = [c for c in claimed.rows if c.alert_id == first and c.subscriber_status != "active"]
        await claimed.abandon()
    assert len(claimed) == 5 and len(mine) == 1 and mine[0].subscriber_status == "opted_out"


# -- the wire formats and their refusals ---------------------------------------------------------


async def test_gatewayapi_refusals_store_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    payload = mo(UNKNOWN, "STOP")
    body = json.dumps(payload)
    bad = jwt.encode(payload, "not-the-secret-but-as-long-as-it-0123", algorithm="HS256")
    tampered = jwt.encode({**payload, "message": "HELP"}, SECRET, algorithm="HS256")
    cases = [
        ({}, 401),
        ({"X-Gwapi-Signature": bad}, 401),
        ({"X-Gwapi-Signature": tampered}, 401),
        ({"X-Gwapi-Signature": "not.a.jwt"}, 401),
    ]
    for headers, status in cases:
        r = await client.post(
            "/v1/inbound/primary",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = await send(client, UNKNOWN, "STOP")
    assert r.status_code == 200
    r = await client.post("/v1/inbound/nope", json=payload)
    assert r.status_code == 404 and r.json()["title"] == "Unknown gateway"
    r = await client.post("/v1/inbound/smsc", json=payload)
    assert r.status_code == 404  # SMPP's come over the SMPP connection
    r = await client.get("/v1/inbound/primary")
    assert r.status_code == 405
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == 1


def twilio_form(phone: str, body: str, sid: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT,
        "From": phone,
        "To": "+4570000000",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
    }


async def test_twilio_incoming_message_is_answered_with_empty_twiml(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    phone = await new_subscriber(pool)
    form = twilio_form(phone, " Stop. ", "SM" + "a" * 32)
    validator = request_validator.RequestValidator(AUTH_TOKEN)
    url = f"{PUBLIC}/v1/inbound/tw"  # as configured at Twilio; the app sees http://test/...
    headers = {
        "X-Twilio-Signature": validator.compute_signature(url, form),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    r = await client.post("/v1/inbound/tw", content=urlencode(form), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/xml"
    assert r.text.endswith("<Response/>")
    row = await subscriber(pool, phone)
    assert row is not None and row["status"] == "opted_out"
    stored = await pool.fetchrow("SELECT gateway, gateway_message_id, raw FROM inbound_messages")
    assert (stored["gateway"], stored["gateway_message_id"]) == ("tw", "SM" + "a" * 32)
    assert phone not in json.dumps(stored["raw"])
    # Unsigned, or signed for other parameters: refused.
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await client.post("/v1/inbound/tw", content=urlencode(form), headers=unsigned)
    assert r.status_code == 401
    other = twilio_form(phone, "START", "SM" + "b" * 32)
    r = await client.post("/v1/inbound/tw", content=urlencode(other), headers=headers)
    assert r.status_code == 401
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == 1


async def test_inbound_bodies_over_the_callback_limit_are_refused_before_being_read(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/inbound/primary",
        content=b"x" * (256 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.headers["connection"] == "close"


async def test_the_smpp_sink_says_not_stored_while_the_database_is_away(db_url: str) -> None:
    """Over SMPP the dispatcher's receipt sink stores inbound messages; with the database away
    it raises ReceiptsNotStored (the adapter answers ESME_RSYSERR, the SMSC sends them again)."""
    gone = await create_pool(db_url, min_size=1, max_size=1)
    await gone.close()
    sink = ConnectionReceipts(ReceiptWriter(gone), gone, "smsc", settings_for(db_url))
    with pytest.raises(ReceiptsNotStored):
        await sink.inbound([InboundMessage(None, "+4520123456", "STOP")])


@pytest.mark.parametrize(
    ("word", "language"),
    [("TILMELD 3400", "da"), ("tilmeld3400", "da"), (" Join 3400 ", "en"), ("JOIN 3400.", "en")],
)
async def test_join_subscribes_a_new_number_for_a_postal_code(
    client: httpx.AsyncClient, pool: asyncpg.Pool, word: str, language: str
) -> None:
    assert (await send(client, UNKNOWN, word)).status_code == 200
    row = await subscriber(pool, UNKNOWN)
    assert row is not None and row["status"] == "active"
    codes = await pool.fetch(
        "SELECT z.code FROM subscriber_zones r JOIN zones z ON z.id = r.zone_id "
        "JOIN subscribers s ON s.id = r.subscriber_id WHERE s.phone = $1",
        UNKNOWN,
    )
    assert [r["code"] for r in codes] == ["3400"]
    assert await notices_to(pool, UNKNOWN) == [text("join", language, ORG, postal_code="3400")]
    # An alert for the postal code reaches the number.
    async with pool.acquire() as conn:
        zone_ids = await resolve_postal_codes(conn, ["3400"])
        area = {"postal_codes": ["3400"]}
        new = NewAlert("test", area, None, "normal", None, None, targets=(zone_ids["3400"],))
        alert, _ = await create_alert(conn, new, None, None)
        await fan_out_next(conn)
        reached = await conn.fetchval(
            "SELECT count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.alert_id = $1 AND s.phone = $2",
            alert,
            UNKNOWN,
        )
    assert reached == 1


async def test_join_opts_an_opted_out_number_back_in_and_keeps_its_places(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    assert (await send(client, UNKNOWN, "JOIN 3400")).status_code == 200
    assert (await send(client, UNKNOWN, "STOP")).status_code == 200
    assert (await subscriber(pool, UNKNOWN))["status"] == "opted_out"  # type: ignore[index]
    assert (await send(client, UNKNOWN, "TILMELD 3480")).status_code == 200
    assert (await subscriber(pool, UNKNOWN))["status"] == "active"  # type: ignore[index]
    codes = await pool.fetch(
        "SELECT z.code FROM subscriber_zones r JOIN zones z ON z.id = r.zone_id "
        "JOIN subscribers s ON s.id = r.subscriber_id WHERE s.phone = $1 ORDER BY z.code",
        UNKNOWN,
    )
    assert [r["code"] for r in codes] == ["3400", "3480"]


async def test_join_with_an_unknown_postal_code_says_so_and_subscribes_nobody(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    assert (await send(client, UNKNOWN, "TILMELD 9999")).status_code == 200
    row = await subscriber(pool, UNKNOWN)
    assert row is not None and row["status"] == "pending"  # only to carry the answer
    assert await notices_to(pool, UNKNOWN) == [text("join_unknown", "da", ORG, postal_code="9999")]
    assert await pool.fetchval("SELECT count(*) FROM subscriber_zones") == 0
