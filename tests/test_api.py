"""The HTTP API in-process (ASGI) against a real PostgreSQL: auth, validation, idempotency,
callbacks, health and metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.settings import GatewaySettings, load_settings

SECRET = "test-webhook-secret-0123456789abcdef"
HILLEROD_SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[12.25, 55.90], [12.35, 55.90], [12.35, 55.95], [12.25, 55.95], [12.25, 55.90]]
    ],
}


@pytest.fixture
async def client(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        database_url=db_url,
        max_segments=2,
        gateways=[
            GatewaySettings(
                name="primary",
                type="gatewayapi",
                base_url="http://127.0.0.1:9",
                token="t",
                webhook_secret=SECRET,
            )
        ],
    )
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return await create_api_key(conn, "tests")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def alert_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": "Politiet: hold øje",
        "area": HILLEROD_SQUARE,
        "priority": "normal",
    }
    body.update(overrides)
    return body


def assert_problem(response: httpx.Response, status: int, detail_part: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and isinstance(problem["detail"], str)
    assert detail_part.lower() in problem["detail"].lower(), problem
    return problem


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/alerts"), ("GET", "/v1/alerts/1"), ("POST", "/v1/subscribers")],
)
async def test_every_v1_endpoint_needs_a_key(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await client.request(method, path, json={})
    assert_problem(r, 401, "api key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.request(method, path, json={}, headers=auth("bk_not-a-key"))
    assert_problem(r, 401, "not valid")


async def test_scope_is_enforced(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        reader = await create_api_key(conn, "reader", ["alerts:read"])
        stored = await conn.fetchval("SELECT key_hash FROM api_keys WHERE name = 'reader'")
    assert reader.encode() not in bytes(stored)  # only the hash is stored
    r = await client.post("/v1/alerts", json=alert_body(), headers=auth(reader))
    assert_problem(r, 403, "alerts:write")


# ---------------------------------------------------------------- subscribers


async def test_subscriber_is_normalised_and_committed(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    r = await client.post(
        "/v1/subscribers",
        headers=auth(key),
        json={
            "phone": "20 12 34 56",
            "locations": [
                {"lat": 55.93, "lon": 12.30, "label": "home"},
                {"lat": 55.68, "lon": 12.57, "label": "work"},
            ],
            "language": "da",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["phone"] == "+4520123456"
    rows = await pool.fetch(
        "SELECT s.phone, s.status, l.position[0] / 1e6 AS lon, l.position[1] / 1e6 AS lat "
        "FROM subscribers s JOIN subscriber_locations l ON l.subscriber_id = s.id ORDER BY l.id"
    )
    assert [(r["phone"], r["status"], r["lon"], r["lat"]) for r in rows] == [
        ("+4520123456", "active", 12.30, 55.93),
        ("+4520123456", "active", 12.57, 55.68),
    ]
    again = await client.post(
        "/v1/subscribers",
        headers=auth(key),
        json={"phone": "+45 20123456", "locations": [{"lat": 55.9, "lon": 12.3}]},
    )
    assert_problem(again, 409, "already")


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"phone": "12", "locations": [{"lat": 55.9, "lon": 12.3}]}, 422, "phone"),
        ({"phone": "not a number", "locations": [{"lat": 55.9, "lon": 12.3}]}, 422, "phone"),
        ({"phone": "+4520123456", "locations": []}, 422, "locations"),
        ({"phone": "+4520123456", "locations": [{"lat": 95, "lon": 12.3}]}, 422, "lat"),
        ({"phone": "+4520123456", "locations": [{"lat": "x", "lon": 12.3}]}, 422, "lat"),
        ({"phone": 4520123456, "locations": [{"lat": 55.9, "lon": 12.3}]}, 422, "phone"),
    ],
)
async def test_bad_subscribers_are_refused(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, body: dict, status: int, detail: str
) -> None:
    r = await client.post("/v1/subscribers", headers=auth(key), json=body)
    assert_problem(r, status, detail)
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 0


# ---------------------------------------------------------------- alerts


async def test_alert_is_committed_before_202(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    r = await client.post(
        "/v1/alerts",
        headers=auth(key),
        json=alert_body(priority="emergency", reference="case-17", expires_at=expires.isoformat()),
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["priority"] == "emergency"
    assert r.headers["location"] == f"/v1/alerts/{body['id']}"
    row = await pool.fetchrow("SELECT * FROM alerts WHERE id = $1", body["id"])
    assert (row["message"], row["priority"], row["reference"], row["expires_at"]) == (
        "Politiet: hold øje",
        0,
        "case-17",
        expires,
    )
    zones = await pool.fetch(
        "SELECT kind, ring::text FROM alert_zones WHERE alert_id = $1", body["id"]
    )
    assert [z["kind"] for z in zones] == ["outer"]
    got = await client.get(f"/v1/alerts/{body['id']}", headers=auth(key))
    assert got.status_code == 200
    assert got.json()["deliveries"] == {
        s: 0 for s in ("queued", "sending", "sent", "delivered", "failed", "expired", "cancelled")
    }


async def test_idempotent_repost_returns_the_same_alert(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    headers = {**auth(key), "Idempotency-Key": "case-17-first"}
    first = await client.post("/v1/alerts", headers=headers, json=alert_body())
    second = await client.post("/v1/alerts", headers=headers, json=alert_body())
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 1
    changed = await client.post(
        "/v1/alerts", headers=headers, json=alert_body(message="another text")
    )
    assert_problem(changed, 422, "idempotency-key")
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 1
    other = await client.post(
        "/v1/alerts", headers={**auth(key), "Idempotency-Key": "x2"}, json=alert_body()
    )
    assert other.json()["id"] != first.json()["id"]


BOWTIE = {
    "type": "Polygon",
    "coordinates": [[[12.0, 55.0], [12.2, 55.2], [12.2, 55.0], [12.0, 55.2], [12.0, 55.0]]],
}
UNCLOSED = {
    "type": "Polygon",
    "coordinates": [[[12.0, 55.0], [12.2, 55.0], [12.2, 55.2], [12.0, 55.2]]],
}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (alert_body(area=UNCLOSED), 422, "not closed"),
        (alert_body(area=BOWTIE), 422, "self-intersection"),
        (
            alert_body(
                area={
                    "type": "Polygon",
                    "coordinates": [[[12, 95], [12.2, 55], [12.2, 55.2], [12, 95]]],
                }
            ),
            422,
            "latitude",
        ),
        (
            alert_body(
                area={
                    "type": "Polygon",
                    "coordinates": [[[190, 55], [12.2, 55], [12.2, 55.2], [190, 55]]],
                }
            ),
            422,
            "longitude",
        ),
        (
            alert_body(
                area={
                    "type": "Polygon",
                    "coordinates": [[["a", 55], [12.2, 55], [12.2, 55.2], ["a", 55]]],
                }
            ),
            422,
            "area.coordinates[0][0][0]: input should be a valid number",
        ),
        (alert_body(area={"type": "Point", "coordinates": [12, 55]}), 422, "area.type"),
        (
            alert_body(area={"type": "Circle", "center": [12.3, 55.9], "radius_m": -5}),
            422,
            "radius_m",
        ),
        (
            alert_body(area={"type": "Circle", "center": [12.3, 155.9], "radius_m": 5}),
            422,
            "latitude",
        ),
        (alert_body(area="Hillerød"), 422, "area"),
        (alert_body(message=""), 422, "message"),
        (alert_body(message="   "), 422, "blank"),
        (alert_body(message=123), 422, "message"),
        (alert_body(message="x" * 307), 422, "segments"),
        (alert_body(message="Æbler 🍎" * 20), 422, "segments"),
        (alert_body(priority="urgent"), 422, "priority"),
        (alert_body(expires_at="tomorrow"), 422, "expires_at"),
        (alert_body(expires_at="2020-01-01T00:00:00Z"), 422, "future"),
        (alert_body(expires_at="2099-01-01T00:00:00"), 422, "timezone"),
        ({"area": HILLEROD_SQUARE}, 422, "message"),
        (alert_body(colour="red"), 422, "colour"),
    ],
)
async def test_bad_alerts_get_problem_json(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, body: Any, status: int, detail: str
) -> None:
    r = await client.post("/v1/alerts", headers=auth(key), json=body)
    assert_problem(r, status, detail)
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0


async def test_two_segment_message_is_accepted(client: httpx.AsyncClient, key: str) -> None:
    r = await client.post("/v1/alerts", headers=auth(key), json=alert_body(message="x" * 306))
    assert r.status_code == 202, r.text


async def test_malformed_json_is_400(client: httpx.AsyncClient, key: str) -> None:
    r = await client.post(
        "/v1/alerts",
        content=b'{"message": "x", "area": ',
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert_problem(r, 400, "not valid json")


async def test_unknown_alert_is_404(client: httpx.AsyncClient, key: str) -> None:
    assert_problem(await client.get("/v1/alerts/999999", headers=auth(key)), 404, "999999")
    assert_problem(await client.get("/nowhere"), 404)


# ---------------------------------------------------------------- callbacks


def receipt(message_id: int, msisdn: int, status: str = "DELIVERED") -> dict[str, Any]:
    return {
        "id": message_id,
        "msisdn": msisdn,
        "time": 1763900000,
        "status": status,
        "error": None,
        "code": None,
        "userref": "1",
    }


async def test_callback_with_bad_signature_is_refused_and_not_recorded(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    payload = receipt(77, 4520000001)
    for headers in (
        {},
        {"X-Gwapi-Signature": jwt.encode(payload, "wrong-secret-0123456789abcdef0123", "HS256")},
        {"X-Gwapi-Signature": "garbage"},
    ):
        r = await client.post(
            "/v1/callbacks/primary",
            content=json.dumps(payload),
            headers={"Content-Type": "application/json", **headers},
        )
        assert_problem(r, 401)
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 0


async def test_callback_for_unknown_gateway_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/callbacks/nope", content=b"{}"), 404, "nope")


async def test_signed_callback_is_recorded_and_applied(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        sub = await conn.fetchval(
            "INSERT INTO subscribers (phone) VALUES ('+4520000001') RETURNING id"
        )
        alert = await conn.fetchval(
            "INSERT INTO alerts (message, area, priority, status) "
            "VALUES ('m', '{}'::jsonb, 2, 'dispatching') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO deliveries (alert_id, subscriber_id, priority, status, gateway, "
            "gateway_message_id) VALUES ($1, $2, 2, 'sent', 'primary', '77')",
            alert,
            sub,
        )
    for status in ("ENROUTE", "DELIVERED", "UNDELIVERABLE"):
        payload = receipt(77, 4520000001, status)
        r = await client.post(
            "/v1/callbacks/primary",
            content=json.dumps(payload),
            headers={"X-Gwapi-Signature": jwt.encode(payload, SECRET, "HS256")},
        )
        assert r.status_code == 200, r.text
    row = await pool.fetchrow("SELECT status, final_at FROM deliveries")
    assert row["status"] == "delivered"  # the later UNDELIVERABLE did not regress it
    assert row["final_at"] == datetime.fromtimestamp(1763900000, UTC)
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts WHERE applied") == 3


async def test_callback_answers_only_after_commit_and_503_while_the_database_is_down(
    client: httpx.AsyncClient, pool: asyncpg.Pool, server_url: str
) -> None:
    name = await pool.fetchval("SELECT current_database()")
    payload = receipt(78, 4520000002)
    post = {
        "content": json.dumps(payload),
        "headers": {"X-Gwapi-Signature": jwt.encode(payload, SECRET, "HS256")},
    }
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        r = await client.post("/v1/callbacks/primary", **post)
        problem = assert_problem(r, 503, "try again")
        assert r.headers["retry-after"] == "1"
        assert problem["instance"] == "/v1/callbacks/primary"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    # The gateway tries again and this time it is stored.
    r = await client.post("/v1/callbacks/primary", **post)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"received": 1}
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 1


async def test_callback_edge_cases_are_problem_json(client: httpx.AsyncClient) -> None:
    payload = receipt(79, 4520000003)
    headers = {"X-Gwapi-Signature": jwt.encode(payload, SECRET, "HS256")}
    too_large = b"{" + b" " * (300 * 1024) + b"}"
    assert_problem(
        await client.post("/v1/callbacks/primary", content=too_large, headers=headers), 413
    )
    assert_problem(await client.post("/v1/callbacks/primary", content=b"[1]", headers=headers), 400)
    assert_problem(await client.get("/v1/callbacks/primary"), 405)
    assert_problem(await client.post("/v1/callbacks/", content=b"{}"), 404)
    assert_problem(await client.post("/v1/callbacks/primary/x", content=b"{}"), 404)
    # Still documented.
    assert "/v1/callbacks/{gateway}" in (await client.get("/openapi.json")).json()["paths"]


# ---------------------------------------------------------------- ops


async def test_health_ready_and_metrics(client: httpx.AsyncClient, key: str) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    await client.post("/v1/alerts", headers=auth(key), json=alert_body(priority="high"))
    text = (await client.get("/metrics")).text
    assert 'broadcaster_alerts_created_total{priority="high",source="json"}' in text
    assert 'broadcaster_queue_depth{priority="high"} 0.0' in text
    assert "broadcaster_gateway_request_seconds" in text


async def test_cancel(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    alert_id = (await client.post("/v1/alerts", headers=auth(key), json=alert_body())).json()["id"]
    async with pool.acquire() as conn:
        sub = await conn.fetchval(
            "INSERT INTO subscribers (phone) VALUES ('+4520000009') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO deliveries (alert_id, subscriber_id, priority) VALUES ($1, $2, 2)",
            alert_id,
            sub,
        )
    r = await client.post(f"/v1/alerts/{alert_id}/cancel", headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["cancelled_at"]
    assert r.json()["deliveries"]["cancelled"] == 1
    again = await client.post(f"/v1/alerts/{alert_id}/cancel", headers=auth(key))
    assert again.status_code == 200
    assert_problem(await client.post("/v1/alerts/424242/cancel", headers=auth(key)), 404)
    await pool.execute("UPDATE alerts SET status = 'completed' WHERE id = $1", alert_id)
    assert_problem(
        await client.post(f"/v1/alerts/{alert_id}/cancel", headers=auth(key)), 409, "completed"
    )
    async with pool.acquire() as conn:
        reader = await create_api_key(conn, "reader2", ["alerts:read"])
    assert_problem(await client.post(f"/v1/alerts/{alert_id}/cancel", headers=auth(reader)), 403)


# ---------------------------------------------------------------- lists


async def test_alerts_are_listed_newest_first_a_page_at_a_time(
    client: httpx.AsyncClient, key: str
) -> None:
    ids = []
    for n in range(5):
        r = await client.post(
            "/v1/alerts", headers=auth(key), json=alert_body(reference=f"case-{n}")
        )
        ids.append(r.json()["id"])
    await client.post(f"/v1/alerts/{ids[1]}/cancel", headers=auth(key))
    first = (await client.get("/v1/alerts?limit=2", headers=auth(key))).json()
    assert [a["id"] for a in first["items"]] == ids[:2:-1][:2]
    assert first["items"][0]["reference"] == "case-4" and "deliveries" not in first["items"][0]
    rest = (
        await client.get(f"/v1/alerts?limit=10&cursor={first['next_cursor']}", headers=auth(key))
    ).json()
    assert [a["id"] for a in rest["items"]] == ids[2::-1] and rest["next_cursor"] is None
    cancelled = (await client.get("/v1/alerts?status=cancelled", headers=auth(key))).json()
    assert [a["id"] for a in cancelled["items"]] == [ids[1]]
    both = await client.get("/v1/alerts?status=cancelled&status=queued", headers=auth(key))
    assert len(both.json()["items"]) == 5
    bad = await client.get("/v1/alerts?cursor=not-a-cursor", headers=auth(key))
    assert_problem(bad, 422, "cursor")


async def test_the_audit_log_is_read_by_admins_filtered_by_time_and_action(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    r = await client.post("/v1/alerts", headers=auth(key), json=alert_body())
    await client.post(f"/v1/alerts/{r.json()['id']}/cancel", headers=auth(key))
    entries = (await client.get("/v1/audit", headers=auth(key))).json()["items"]
    assert [e["action"] for e in entries] == ["alert.cancelled", "alert.created", "api_key.created"]
    cancelled = await client.get("/v1/audit?action=alert.cancelled", headers=auth(key))
    assert [e["action"] for e in cancelled.json()["items"]] == ["alert.cancelled"]
    later = await client.get(
        "/v1/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=auth(key)
    )
    assert later.json() == {"items": [], "next_cursor": None}
    naive = await client.get("/v1/audit", params={"since": "2020-01-01T00:00"}, headers=auth(key))
    assert_problem(naive, 422, "since")
    async with pool.acquire() as conn:
        reader = await create_api_key(conn, "reader", ["alerts:read"])
    assert_problem(await client.get("/v1/audit", headers=auth(reader)), 403, "admin")
