"""Statistics against a real PostgreSQL: active subscribers per zone and per postal code
(points inside, holes and boundaries as the fan-out has them, registrants by code, each once;
pending and opted-out ones not counted), and confirmed sign-ups per week with their reasons."""

from __future__ import annotations

import asyncpg
import httpx
from shapely.geometry import Point, shape
from tests.test_api import auth
from tests.test_api import client as client
from tests.test_api import key as key

from broadcaster.citizens import places


async def subscriber(pool: asyncpg.Pool, phone: str, status: str, where: list[dict]) -> None:
    async with pool.acquire() as conn:
        sid = await conn.fetchval(
            "INSERT INTO subscribers (phone, status) VALUES ($1, $2) RETURNING id", phone, status
        )
        await places.add(conn, sid, where)


async def test_active_subscribers_per_postal_code_match_shapely(
    client: httpx.AsyncClient,
    key: str,
    pool: asyncpg.Pool,
) -> None:
    zone = await pool.fetchrow(
        "SELECT id, geometry FROM zones WHERE kind = 'postal_code' AND code = '3400'"
    )
    area = shape(zone["geometry"])
    inside = area.representative_point()
    outside = Point(area.bounds[0] - 0.05, area.bounds[1] - 0.05)
    here = {"lat": inside.y, "lon": inside.x}
    await subscriber(pool, "+4520000001", "active", [here])
    await subscriber(pool, "+4520000002", "active", [here, {"postal_code": "3400"}])  # once
    await subscriber(pool, "+4520000003", "active", [{"postal_code": "3400"}])
    await subscriber(pool, "+4520000004", "pending", [here])  # not counted
    await subscriber(pool, "+4520000005", "opted_out", [{"postal_code": "3400"}])  # not counted
    await subscriber(pool, "+4520000006", "active", [{"lat": outside.y, "lon": outside.x}])
    r = await client.get("/v1/stats/subscribers?by=postal_code", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["by"] == "postal_code" and len(body["zones"]) == 52
    counts = {z["code"]: z["active"] for z in body["zones"]}
    assert counts["3400"] == 3
    assert sum(counts.values()) == 3 + (
        1
        if any(
            shape(g["geometry"]).covers(outside)
            for g in await pool.fetch("SELECT geometry FROM zones WHERE kind = 'postal_code'")
        )
        else 0
    )
    municipalities = await client.get(
        "/v1/stats/subscribers?by=zone&kind=municipality", headers=auth(key)
    )
    assert {z["kind"] for z in municipalities.json()["zones"]} == {"municipality"}
    hillerod = next(z for z in municipalities.json()["zones"] if "Hillerød" in z["name"])
    assert hillerod["active"] == 2  # the two points; postal-code registrants count for the code


async def test_confirmed_sign_ups_per_week_and_their_reasons(
    client: httpx.AsyncClient,
    key: str,
    pool: asyncpg.Pool,
) -> None:
    sid = await pool.fetchval("INSERT INTO subscribers (phone) VALUES ('+4520000001') RETURNING id")
    for reason, confirmed in [
        ("curious", "now()"),
        ("curious", "now()"),
        ("help_police", "now() - interval '7 days'"),
        (None, "now() - interval '8 days'"),
        ("other", "NULL"),  # never confirmed: not counted
        ("curious", "now() - interval '100 days'"),  # before the weeks asked for
    ]:
        await pool.execute(
            "INSERT INTO signups (subscriber_id, locations, language, reason, source, code_hash, "
            f"expires_at, confirmed_at) VALUES ($1, '[]', 'da', $2, 'web', '\\x00', now(), "
            f"{confirmed})",
            sid,
            reason,
        )
    r = await client.get("/v1/stats/signups?weeks=4", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert sum(w["confirmed"] for w in body["per_week"]) == 4
    assert body["reasons"] == {"curious": 2, "help_police": 1, "not_given": 1}
    assert all(w["week"] <= body["per_week"][-1]["week"] for w in body["per_week"])
