"""Sign-up with double opt-in against a real PostgreSQL: the code goes out as a notice (through a
real dispatcher and gateway simulator in the first test), only the right code activates, codes
expire, are single-use and limited in tries, and sign-up SMS and code attempts are throttled."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tests.test_failover import Running, gateway, start_sim
from tests.test_fanout import queue_alert

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.settings import GatewaySettings, load_settings

PHONE = "+4526123461"
HOME = {"lat": 55.93, "lon": 12.30, "label": "home"}
AROUND_HOME = {"type": "Circle", "center": [12.30, 55.93], "radius_m": 500}


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        database_url=db_url,
        organisation="Tryghed",
        gateways=[GatewaySettings(name="primary", type="gatewayapi", base_url="http://x")],
    )
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return await create_api_key(conn, "web", ["signups:write"])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def sign_up(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    payload = {"phone": "26 12 34 61", "locations": [HOME], "language": "da", **body}
    return await client.post("/v1/signups", headers=auth(key), json=payload)


async def confirm(
    client: httpx.AsyncClient, key: str, code: str, phone: str = "26123461"
) -> httpx.Response:
    return await client.post(
        "/v1/signups/confirm", headers=auth(key), json={"phone": phone, "code": code}
    )


async def last_code(pool: asyncpg.Pool, phone: str = PHONE) -> str:
    """The code as the SMS carries it (the notice's text, before any gateway took it)."""
    text = await pool.fetchval(
        """SELECT a.message FROM alerts a JOIN deliveries d ON d.alert_id = a.id
           JOIN subscribers s ON s.id = d.subscriber_id
           WHERE a.kind = 'notice' AND s.phone = $1 ORDER BY a.id DESC LIMIT 1""",
        phone,
    )
    found = re.search(r"\b(\d{6})\b", text)
    assert found, text
    return found.group(1)


async def subscriber(pool: asyncpg.Pool, phone: str = PHONE) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT id, status, language, reason, source FROM subscribers WHERE phone = $1", phone
    )


async def test_code_goes_out_by_sms_and_confirms_the_subscription(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, db_url: str
) -> None:
    sim, port = await start_sim()
    settings = load_settings(
        database_url=db_url, poll_interval=0.05, gateways=[gateway("primary", port)]
    )
    running = Running(settings, pool, db_url)
    try:
        r = await sign_up(client, key, reason="help_community")
        assert r.status_code == 202, r.text
        assert r.json() == {"status": "code_sent", "expires_in": 600}
        assert (await subscriber(pool))["status"] == "pending"
        deadline = time.monotonic() + 10
        while not sim.messages:
            assert time.monotonic() < deadline, "no code reached the gateway"
            await asyncio.sleep(0.05)
    finally:
        await running.close()
        await sim.close()
    (sms,) = sim.messages
    assert sms["msisdn"] == int(PHONE[1:])
    assert sms["message"].startswith("Tryghed: Din kode er ")
    assert sms["priority"] in ("URGENT", "NORMAL")  # a notice goes out as 'high'
    code = re.search(r"\b(\d{6})\b", sms["message"]).group(1)  # type: ignore[union-attr]
    r = await confirm(client, key, code)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "active", "phone": PHONE, "language": "da", "locations": [HOME]}
    row = await subscriber(pool)
    assert (row["status"], row["reason"], row["source"]) == ("active", "help_community", "api")
    # Active now: an alert around home reaches the number.
    async with pool.acquire() as conn:
        from broadcaster.dispatch.fanout import fan_out_next

        alert = await queue_alert(conn, AROUND_HOME)
        await fan_out_next(conn)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND subscriber_id = $2",
                alert,
                row["id"],
            )
            == 1
        )


async def test_a_pending_number_gets_no_alert(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    assert (await sign_up(client, key)).status_code == 202
    async with pool.acquire() as conn:
        from broadcaster.dispatch.fanout import fan_out_next

        alert = await queue_alert(conn, AROUND_HOME)
        await fan_out_next(conn)
        assert (
            await conn.fetchval("SELECT count(*) FROM deliveries WHERE alert_id = $1", alert) == 0
        )
        # Its locations are not even stored before the code is confirmed.
        assert await conn.fetchval("SELECT count(*) FROM subscriber_locations") == 0


async def test_wrong_code_counts_down_then_429(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await sign_up(client, key)
    code = await last_code(pool)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        r = await confirm(client, key, wrong)
        assert r.status_code == 422 and f"{left} attempt(s) left" in r.json()["detail"], r.text
    r = await confirm(client, key, wrong)
    assert r.status_code == 429 and "ask for a new one" in r.json()["detail"]
    # Even the right code no longer works for this sign-up ...
    assert (await confirm(client, key, code)).status_code == 429
    assert (await subscriber(pool))["status"] == "pending"
    # ... a new sign-up sends a new code, which does.
    await sign_up(client, key)
    assert (await confirm(client, key, await last_code(pool))).status_code == 200


async def test_expired_code_is_refused(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await sign_up(client, key)
    code = await last_code(pool)
    await pool.execute("UPDATE signups SET expires_at = now() - interval '1 second'")
    r = await confirm(client, key, code)
    assert r.status_code == 422 and "expired" in r.json()["detail"]
    assert (await subscriber(pool))["status"] == "pending"


async def test_a_code_is_single_use_and_a_new_one_replaces_the_old(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await sign_up(client, key)
    first = await last_code(pool)
    await sign_up(client, key, language="en")
    second = await last_code(pool)
    if first != second:
        r = await confirm(client, key, first)
        assert r.status_code == 422, r.text  # the first code no longer counts
    assert (await confirm(client, key, second)).status_code == 200
    r = await confirm(client, key, second)  # replayed
    assert r.status_code == 422 and "no sign-up is waiting" in r.json()["detail"]
    assert (await subscriber(pool))["language"] == "en"


async def test_sign_up_sms_are_throttled_per_number(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    for _ in range(3):
        assert (await sign_up(client, key)).status_code == 202
    r = await sign_up(client, key)
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert 0 < int(r.headers["retry-after"]) <= 3600
    assert await pool.fetchval("SELECT count(*) FROM alerts WHERE kind = 'notice'") == 3
    # Another number from the same client is not held back by this one's limit.
    assert (await sign_up(client, key, phone="26123462")).status_code == 202
    # Counters hold hashes, never the number.
    keys = await pool.fetch("SELECT key FROM throttles")
    assert all(PHONE.encode() not in bytes(k["key"]) for k in keys)


async def test_code_attempts_are_throttled_per_client(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await pool.execute("UPDATE api_keys SET scopes = scopes")  # (the key exists)
    statuses = [
        (await confirm(client, key, "000000", phone=f"2612{n:04d}")).status_code for n in range(31)
    ]
    assert statuses[:30] == [422] * 30 and statuses[30] == 429


async def test_an_opted_out_number_stays_out_until_the_code_is_confirmed(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await pool.execute(
        "INSERT INTO subscribers (phone, status, opted_out_at) VALUES ($1, 'opted_out', now())",
        PHONE,
    )
    await sign_up(client, key)
    assert (await subscriber(pool))["status"] == "opted_out"
    assert (await confirm(client, key, await last_code(pool))).status_code == 200
    assert (await subscriber(pool))["status"] == "active"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"phone": "123"}, 422, "phone"),
        ({"phone": "+45 1234"}, 422, "not a valid phone number"),
        ({"locations": []}, 422, "locations"),
        ({"reason": "revenge"}, 422, "reason"),
        ({"language": "de"}, 422, "language"),
    ],
)
async def test_bad_sign_ups_are_refused(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, body: dict, status: int, words: str
) -> None:
    r = await sign_up(client, key, **body)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_the_signup_scope_can_do_nothing_else(client: httpx.AsyncClient, key: str) -> None:
    for method, path in [
        ("GET", "/v1/alerts/1"),
        ("POST", "/v1/subscribers"),
        ("POST", "/v1/alerts"),
    ]:
        r = await client.request(method, path, headers=auth(key), json={})
        assert r.status_code == 403, (path, r.text)
