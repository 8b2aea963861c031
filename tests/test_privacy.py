"""A citizen's data on request (access and erasure), retention, and the audit log, against a real
PostgreSQL: after an erasure no table holds the number in any form, and the counts of past
alerts still add up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tests.test_cli import run
from tests.test_fanout import queue_alert

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.citizens import retention
from broadcaster.dispatch import receipts
from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.settings import GatewaySettings, load_settings
from gateway_adapters.base import DeliveryState, ReceiptUpdate

PHONE = "+4526123461"
DIGITS = "26123461"
AROUND = {"type": "Circle", "center": [12.30, 55.93], "radius_m": 500}


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        database_url=db_url,
        gateways=[GatewaySettings(name="gw", type="gatewayapi", base_url="http://x")],
    )
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return await create_api_key(conn, "privacy-desk")


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


async def citizen_with_history(pool: asyncpg.Pool) -> int:
    """A subscriber who signed up, got an alert (sent, with a receipt naming the number) and
    answered it."""
    async with pool.acquire() as conn:
        sid = await conn.fetchval(
            "INSERT INTO subscribers (phone, status, source, reason) "
            "VALUES ($1, 'active', 'web', 'curious') RETURNING id",
            PHONE,
        )
        await conn.execute(
            "INSERT INTO subscriber_locations (subscriber_id, label, position) "
            "VALUES ($1, 'home', point(12.30e6, 55.93e6))",
            sid,
        )
        await conn.execute(
            """INSERT INTO signups (subscriber_id, locations, language, source, code_hash,
                                    expires_at, confirmed_at)
               VALUES ($1, $2, 'da', 'web', '\\x00', now(), now())""",
            sid,
            [{"lat": 55.93, "lon": 12.30, "label": "home"}],
        )
        alert = await queue_alert(conn, AROUND)
        await fan_out_next(conn)
        await conn.execute(
            "UPDATE deliveries SET status = 'sent', gateway = 'gw', gateway_message_id = 'm1', "
            "sent_at = now() WHERE alert_id = $1",
            alert,
        )
        await receipts.record_receipts(
            conn,
            "gw",
            [
                ReceiptUpdate(
                    "m1", PHONE, DeliveryState.DELIVERED, "DELIVERED", raw={"msisdn": DIGITS}
                )
            ],
        )
        await conn.execute(
            "INSERT INTO inbound_messages (gateway, phone, subscriber_id, text, kind, alert_id, "
            "raw) VALUES ('gw', $1, $2, 'I saw a grey van', 'tip', $3, $4)",
            PHONE,
            sid,
            alert,
            {"msisdn": int("45" + DIGITS)},
        )
    return int(sid)


async def tables_holding(pool: asyncpg.Pool, needle: str) -> list[str]:
    """Every table.column whose text form contains `needle`, over the whole schema."""
    columns = await pool.fetch(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'public'
             AND data_type IN ('text', 'jsonb', 'json', 'character varying', 'ARRAY')"""
    )
    found = []
    for c in columns:
        hit = await pool.fetchval(
            f'SELECT count(*) FROM "{c["table_name"]}" WHERE "{c["column_name"]}"::text LIKE $1',
            f"%{needle}%",
        )
        if hit:
            found.append(f"{c['table_name']}.{c['column_name']}")
    return found


async def test_access_request_shows_everything_stored(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await citizen_with_history(pool)
    r = await client.get("/v1/subscribers/%2B4526123461", headers=auth(key))
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["subscriber"]["phone"] == PHONE
    assert record["subscriber"]["reason"] == "curious"
    assert record["locations"] == [{"lat": 55.93, "lon": 12.3, "label": "home"}]
    assert [s["source"] for s in record["signups"]] == ["web"]
    assert record["inbound_messages"][0]["text"] == "I saw a grey van"
    assert record["deliveries"] == [
        {
            "kind": "alert",
            "status": "delivered",
            "n": 1,
            "last_sent_at": record["deliveries"][0]["last_sent_at"],
        }
    ]
    # The national form finds the same number.
    assert (await client.get(f"/v1/subscribers/{DIGITS}", headers=auth(key))).json() == record
    assert (await client.get("/v1/subscribers/26123462", headers=auth(key))).status_code == 404
    assert (await client.get("/v1/subscribers/26-12-ab", headers=auth(key))).status_code == 422


async def test_erasure_leaves_no_trace_of_the_number_and_keeps_the_counts(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    sid = await citizen_with_history(pool)
    assert await tables_holding(pool, DIGITS)  # the check finds the number before erasure
    before = await pool.fetch("SELECT alert_id, status FROM deliveries ORDER BY id")
    r = await client.delete(
        "/v1/subscribers/%2B4526123461", headers=auth(key, **{"X-Request-ID": "case-77"})
    )
    assert r.status_code == 204, r.text
    assert r.headers["x-request-id"] == "case-77"
    assert await tables_holding(pool, DIGITS) == []
    assert await pool.fetch("SELECT alert_id, status FROM deliveries ORDER BY id") == before
    row = await pool.fetchrow("SELECT status, phone, erased_at FROM subscribers WHERE id = $1", sid)
    assert row["status"] == "erased" and row["phone"] is None and row["erased_at"] is not None
    assert await pool.fetchval("SELECT text FROM inbound_messages") == "I saw a grey van"
    audit = await pool.fetchrow(
        "SELECT actor, action, subject, request_id FROM audit_log "
        "WHERE action = 'subscriber.erased'"
    )
    assert dict(audit) == {
        "actor": "privacy-desk",
        "action": "subscriber.erased",
        "subject": f"subscriber:{sid}",
        "request_id": "case-77",
    }
    assert (await client.delete(f"/v1/subscribers/{DIGITS}", headers=auth(key))).status_code == 404
    assert (await client.get(f"/v1/subscribers/{DIGITS}", headers=auth(key))).status_code == 404
    # The erased row is never reached again by an alert.
    async with pool.acquire() as conn:
        alert = await queue_alert(conn, AROUND)
        await fan_out_next(conn)
        assert (
            await conn.fetchval("SELECT count(*) FROM deliveries WHERE alert_id = $1", alert) == 0
        )


async def test_retention_forgets_old_numbers_and_stale_pending_sign_ups(
    pool: asyncpg.Pool,
) -> None:
    await citizen_with_history(pool)
    stale = await pool.fetchval(
        "INSERT INTO subscribers (phone, status, created_at) "
        "VALUES ('+4526123462', 'pending', now() - interval '8 days') RETURNING id"
    )
    fresh = await pool.fetchval(
        "INSERT INTO subscribers (phone, status) VALUES ('+4526123463', 'pending') RETURNING id"
    )
    settings = load_settings(retention_days=90, pending_days=7)
    await retention.run(pool, settings)
    assert await pool.fetchval("SELECT phone FROM inbound_messages") == PHONE  # recent: kept
    assert await pool.fetchval("SELECT count(*) FROM subscribers WHERE id = $1", stale) == 0
    assert await pool.fetchval("SELECT count(*) FROM subscribers WHERE id = $1", fresh) == 1
    await pool.execute("UPDATE inbound_messages SET received_at = now() - interval '91 days'")
    await pool.execute("UPDATE delivery_receipts SET received_at = now() - interval '91 days'")
    await retention.run(pool, settings)
    assert await pool.fetchrow("SELECT phone, raw, text FROM inbound_messages") == (
        None,
        {},
        "I saw a grey van",
    )
    assert await pool.fetchrow("SELECT phone, raw, state FROM delivery_receipts") == (
        None,
        {},
        "delivered",
    )


async def test_alerts_are_audited_with_the_request_id(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    body: dict[str, Any] = {"message": "Politiet: hold øje", "area": AROUND}
    r = await client.post("/v1/alerts", headers=auth(key, **{"X-Request-ID": "r-1"}), json=body)
    alert = r.json()["id"]
    replay = await client.post(
        "/v1/alerts", headers=auth(key, **{"Idempotency-Key": "k"}), json=body
    )
    await client.post("/v1/alerts", headers=auth(key, **{"Idempotency-Key": "k"}), json=body)
    await client.post(f"/v1/alerts/{alert}/cancel", headers=auth(key, **{"X-Request-ID": "r-2"}))
    rows = await pool.fetch(
        "SELECT action, subject, request_id FROM audit_log WHERE actor = 'privacy-desk' ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        ("alert.created", f"alert:{alert}", "r-1"),
        ("alert.created", f"alert:{replay.json()['id']}", rows[1]["request_id"]),
        ("alert.cancelled", f"alert:{alert}", "r-2"),
    ]
    assert len(rows[1]["request_id"]) == 32  # made up by the service when none was sent
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM audit_log")


async def test_keys_are_listed_and_revoked_at_once(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, db_url: str
) -> None:
    env = {"DATABASE_URL": db_url}
    listed = run("api-key", "list", env=env)
    assert listed.returncode == 0 and "privacy-desk" in listed.stdout
    assert "bk_" not in listed.stdout  # never the key itself
    assert (await client.get("/v1/alerts/1", headers=auth(key))).status_code == 404
    revoked = run("api-key", "revoke", "privacy-desk", env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/v1/alerts/1", headers=auth(key))).status_code == 401
    again = run("api-key", "revoke", "privacy-desk", env=env)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    actions = await pool.fetch("SELECT action FROM audit_log ORDER BY id")
    assert [a["action"] for a in actions] == ["api_key.created", "api_key.revoked"]
