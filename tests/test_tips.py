"""Tips against a real PostgreSQL: any text that is not a keyword, linked to the most recent alert
its number got (sent or delivered) within the tip window, else kept unlinked; listed newest first
a page at a time with the sender masked (GET /v1/alerts/{id}/tips, scope tips:read), counted in
GET /v1/alerts/{id}; an alert's tip_webhook (https, with a signing secret) gets an outbox row in
the tip's own transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tests.test_fanout import DONUT, add_subscribers, queue_alert
from tests.test_inbound import send, settings_for

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.dispatch.fanout import fan_out_next

WEBHOOK_SECRET = "tip-webhook-secret-0123456789"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(db_url, webhook_secret=WEBHOOK_SECRET)
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def keys(pool: asyncpg.Pool) -> dict[str, dict[str, str]]:
    async with pool.acquire() as conn:
        made = {
            "tips": await create_api_key(conn, "investigators", ["tips:read"]),
            "alerts": await create_api_key(conn, "dispatch", ["alerts:write", "alerts:read"]),
        }
    return {name: {"Authorization": f"Bearer {key}"} for name, key in made.items()}


async def sent_alert(
    conn: asyncpg.Connection,
    subscriber_ids: list[int],
    hours_ago: float,
    status: str = "delivered",
    tip_webhook: str | None = None,
) -> int:
    """An alert over DONUT fanned out, whose deliveries to `subscriber_ids` went out
    `hours_ago` hours ago with `status` (the others stay queued)."""
    alert = await queue_alert(conn, DONUT)
    await fan_out_next(conn)
    await conn.execute(
        """UPDATE deliveries SET status = $3, sent_at = now() - $4 * interval '1 hour'
           WHERE alert_id = $1 AND subscriber_id = ANY($2::bigint[])""",
        alert,
        subscriber_ids,
        status,
        hours_ago,
    )
    await conn.execute(
        "UPDATE alerts SET tip_webhook = $2, created_at = now() - $3 * interval '1 hour' "
        "WHERE id = $1",
        alert,
        tip_webhook,
        hours_ago,
    )
    return alert


async def phone_of(conn: asyncpg.Connection, subscriber_id: int) -> str:
    return str(await conn.fetchval("SELECT phone FROM subscribers WHERE id = $1", subscriber_id))


async def tips(pool: asyncpg.Pool) -> list[tuple[str, int | None, int | None]]:
    rows = await pool.fetch(
        "SELECT text, alert_id, subscriber_id FROM inbound_messages ORDER BY id"
    )
    return [(r["text"], r["alert_id"], r["subscriber_id"]) for r in rows]


async def test_a_tip_is_linked_to_the_most_recent_alert_the_number_got_in_the_window(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        a, b, c, d = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(4)])
        old = await sent_alert(conn, [a, b], hours_ago=50)  # before the 48 h window
        earlier = await sent_alert(conn, [a], hours_ago=10)
        latest = await sent_alert(conn, [a], hours_ago=1, status="sent")
        await sent_alert(conn, [c], hours_ago=2, status="failed")  # never reached c
        # A newer alert whose delivery to a is still queued does not count (not sent yet).
        await sent_alert(conn, [], hours_ago=0)
        phones = [await phone_of(conn, s) for s in (a, b, c, d)]
    assert old < earlier < latest
    for phone, words in zip(
        phones, ["Blå varevogn ved stationen", "I saw him", "?", "hm"], strict=True
    ):
        assert (await send(client, phone, words)).status_code == 200
    assert (await send(client, "+4529990009", "who is this")).status_code == 200
    assert await tips(pool) == [
        ("Blå varevogn ved stationen", latest, a),
        ("I saw him", None, b),  # its alert is 50 h old
        ("?", None, c),  # its delivery failed
        ("hm", None, d),  # got no alert
        ("who is this", None, None),  # a number we do not know
    ]
    assert set(await pool.fetchval("SELECT array_agg(DISTINCT kind) FROM inbound_messages")) == {
        "tip"
    }


async def test_the_tip_window_is_configurable(db_url: str, pool: asyncpg.Pool) -> None:
    app = create_app(settings_for(db_url, tip_window_hours=5), db_url)
    async with pool.acquire() as conn:
        (a,) = await add_subscribers(conn, [[(12.05, 55.05)]])
        await sent_alert(conn, [a], hours_ago=6)
        phone = await phone_of(conn, a)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await send(c, phone, "saw it")).status_code == 200
    assert await tips(pool) == [("saw it", None, a)]


async def test_tips_are_listed_newest_first_a_page_at_a_time_with_the_sender_masked(
    client: httpx.AsyncClient, pool: asyncpg.Pool, keys: dict[str, dict[str, str]]
) -> None:
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(3)])
        alert = await sent_alert(conn, ids, hours_ago=1)
        phones = [await phone_of(conn, s) for s in ids]
    for n in range(5):
        assert (await send(client, phones[n % 3], f"tip {n}")).status_code == 200
    url = f"/v1/alerts/{alert}/tips"
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await client.get(url, params=params, headers=keys["tips"])
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [t["text"] for t in seen] == [f"tip {n}" for n in range(4, -1, -1)]
    first = phones[4 % 3]
    assert seen[0]["sender"] == f"+45 {first[3:5]} ** ** {first[-2:]}"
    assert all(first not in str(t) for t in seen)  # never the whole number
    # Counted in the alert's status.
    r = await client.get(f"/v1/alerts/{alert}", headers=keys["alerts"])
    assert r.status_code == 200 and r.json()["tips"] == {"received": 5, "forwarded": 0}


async def test_tips_route_answers_errors_as_problems(
    client: httpx.AsyncClient, pool: asyncpg.Pool, keys: dict[str, dict[str, str]]
) -> None:
    async with pool.acquire() as conn:
        alert = await queue_alert(conn, DONUT)
    assert (await client.get(f"/v1/alerts/{alert}/tips")).status_code == 401
    r = await client.get(f"/v1/alerts/{alert}/tips", headers=keys["alerts"])
    assert r.status_code == 403 and "tips:read" in r.json()["detail"]
    r = await client.get(f"/v1/alerts/{alert}/tips", headers=keys["tips"])
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}
    r = await client.get("/v1/alerts/999999/tips", headers=keys["tips"])
    assert r.status_code == 404
    # A notice is not an alert.
    await send(client, "+4529990001", "HELP")
    notice = await pool.fetchval("SELECT id FROM alerts WHERE kind = 'notice'")
    assert (await client.get(f"/v1/alerts/{notice}/tips", headers=keys["tips"])).status_code == 404
    for params in ({"cursor": "x"}, {"cursor": "812"}, {"limit": 0}, {"limit": 201}):
        r = await client.get(f"/v1/alerts/{alert}/tips", params=params, headers=keys["tips"])
        assert r.status_code == 422, (params, r.text)


async def test_tip_webhook_must_be_https_and_tips_signable(
    db_url: str, client: httpx.AsyncClient, pool: asyncpg.Pool, keys: dict[str, dict[str, str]]
) -> None:
    body = {"message": "Har du set ham?", "area": DONUT}
    for url, status in [
        ("https://cases.example.dk/tips/4711", 202),
        ("http://cases.example.dk/tips", 422),
        ("https://", 422),
        ("https://host:99999/x", 422),
        ("ftp://cases.example.dk/", 422),
        ("https://cases example.dk/", 422),
    ]:
        r = await client.post(
            "/v1/alerts", json={**body, "tip_webhook": url}, headers=keys["alerts"]
        )
        assert r.status_code == status, (url, r.text)
        if status == 202:
            assert r.json()["tip_webhook"] == url
            assert r.json()["tips"] == {"received": 0, "forwarded": 0}
    # Without a secret to sign tips with, an alert with a tip_webhook is refused.
    app = create_app(settings_for(db_url), db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post(
                "/v1/alerts",
                json={**body, "tip_webhook": "https://cases.example.dk/x"},
                headers=keys["alerts"],
            )
            assert r.status_code == 422 and "BROADCASTER_WEBHOOK_SECRET" in r.json()["detail"]
            r = await c.post("/v1/alerts", json=body, headers=keys["alerts"])
            assert r.status_code == 202 and r.json()["tip_webhook"] is None


async def test_a_tip_to_an_alert_with_a_webhook_is_queued_for_forwarding_with_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        a, b = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(2)])
        hooked = await sent_alert(conn, [a], hours_ago=1, tip_webhook="https://cases.example/1")
        await sent_alert(conn, [b], hours_ago=1)
        phones = [await phone_of(conn, s) for s in (a, b)]
    assert (await send(client, phones[0], "saw it")).status_code == 200
    assert (await send(client, phones[1], "me too")).status_code == 200
    assert (await send(client, phones[0], "STOP")).status_code == 200  # a keyword is no tip
    rows = await pool.fetch(
        """SELECT o.url, m.text, m.alert_id FROM webhook_outbox o
           JOIN inbound_messages m ON m.id = o.inbound_message_id"""
    )
    assert [(r["url"], r["text"], r["alert_id"]) for r in rows] == [
        ("https://cases.example/1", "saw it", hooked)
    ]
