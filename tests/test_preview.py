"""POST /v1/alerts/preview against a real PostgreSQL: the recipient count is the fan-out's (the
alert created afterwards reaches exactly that many), nothing is written, texts are measured as
GSM 03.38 says, cost and sending time follow the gateway settings, and the start follows send_at
and the quiet hours."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from tests.test_api import HILLEROD_SQUARE, alert_body, assert_problem, auth

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.ingest import preview as preview_module
from broadcaster.ingest.geo import SCALE
from broadcaster.settings import GatewaySettings, Settings, load_settings

CPH = ZoneInfo("Europe/Copenhagen")
PHONES = itertools.count()
CIRCLE = {"type": "Circle", "center": [12.30, 55.925], "radius_m": 2000}


def gateway(name: str, rate: float, price: float | None) -> GatewaySettings:
    return GatewaySettings(
        name=name,
        type="gatewayapi",
        base_url="http://127.0.0.1:9",
        token="t",
        webhook_secret="s" * 32,
        rate_per_second=rate,
        price_per_segment=price,
    )


def settings_for(db_url: str, **overrides: Any) -> Settings:
    return load_settings(
        database_url=db_url,
        max_segments=3,
        gateways=[gateway("primary", 100.0, 0.25), gateway("backup", 50.0, None)],
        **overrides,
    )


async def app_client(settings: Settings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def client(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    # Noon in Copenhagen, whatever the time is: no quiet hours in the way unless asked for.
    async for c in app_client(_daytime(db_url), db_url):
        yield c


def _daytime(db_url: str, **overrides: Any) -> Settings:
    return settings_for(
        db_url,
        quiet_hours_start="22:00",
        quiet_hours_end="07:00",
        clock_offset_seconds=offset_to(12, 0),
        **overrides,
    )


def offset_to(hour: int, minute: int, second: int = 0) -> float:
    """Seconds to add to the system clock to stand at the next hour:minute in Copenhagen."""
    now = datetime.now(CPH)
    target = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return await create_api_key(conn, "tests")


async def seed(pool: asyncpg.Pool, points: list[tuple[float, float, str, str]]) -> None:
    """Subscribers at (lon, lat) with a language and a status."""
    async with pool.acquire() as conn:
        for lon, lat, language, status in points:
            sid = await conn.fetchval(
                "INSERT INTO subscribers (phone, language, status) VALUES ($1, $2, $3) "
                "RETURNING id",
                f"+4520{next(PHONES):06d}",
                language,
                status,
            )
            await conn.execute(
                "INSERT INTO subscriber_locations (subscriber_id, position) VALUES ($1, $2)",
                sid,
                (lon * SCALE, lat * SCALE),
            )


def grid(
    n: int, language: str = "da", status: str = "active"
) -> list[tuple[float, float, str, str]]:
    """n points spread over 12.26-12.34 x 55.91-55.94 (inside HILLEROD_SQUARE)."""
    return [
        (12.26 + 0.08 * (i % 37) / 37, 55.91 + 0.03 * (i // 37) / (n // 37 + 1), language, status)
        for i in range(n)
    ]


async def written(pool: asyncpg.Pool) -> tuple[Any, ...]:
    return tuple(
        [
            await pool.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("alerts", "alert_zones", "alert_targets", "alert_texts", "audit_log")
        ]
        + [await pool.fetchval("SELECT last_value FROM alerts_id_seq")]
    )


async def test_the_count_is_what_the_fan_out_reaches_and_nothing_is_written(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await seed(pool, grid(300) + grid(40, "en") + grid(25, "da", "opted_out"))
    await seed(pool, [(12.60, 55.70, "da", "active")] * 1)  # outside
    before = await written(pool)
    for area in (HILLEROD_SQUARE, CIRCLE):
        body = alert_body(area=area, texts={"en": "Police: keep watch"})
        r = await client.post("/v1/alerts/preview", headers=auth(key), json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert await written(pool) == before
        created = await client.post("/v1/alerts", headers=auth(key), json=body)
        assert created.status_code == 202
        async with pool.acquire() as conn:
            result = await fan_out_next(conn)
        assert result is not None
        assert got["recipients"] == {"count": result.recipients, "exact": True, "margin": 0}
        by_text = {t["field"]: t["recipients"] for t in got["texts"]}
        english = await pool.fetchval(
            "SELECT count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.alert_id = $1 AND s.language = 'en'",
            result.alert_id,
        )
        assert by_text == {"message": result.recipients - english, "texts.en": english}
        before = await written(pool)
    assert got["recipients"]["count"] < 340  # the circle holds part of the grid only


async def test_texts_are_measured_and_priced(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await seed(pool, grid(60) + grid(10, "en") + grid(5, "de"))
    danish = "Æ" * 161  # GSM-7, two segments
    english = "a" * 152 + "€" + "b" * 10  # the € starts part two: two segments
    german = "😀" * 35  # UCS-2, 70 units, one segment
    body = alert_body(message=danish, texts={"en": english, "de": german})
    r = await client.post("/v1/alerts/preview", headers=auth(key), json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["texts"] == [
        {
            "field": "message",
            "language": None,
            "encoding": "GSM-7",
            "characters": 161,
            "units": 161,
            "segments": 2,
            "recipients": 60,
        },
        {
            "field": "texts.en",
            "language": "en",
            "encoding": "GSM-7",
            "characters": 163,
            "units": 164,
            "segments": 2,
            "recipients": 10,
        },
        {
            "field": "texts.de",
            "language": "de",
            "encoding": "UCS-2",
            "characters": 35,
            "units": 70,
            "segments": 1,
            "recipients": 5,
        },
    ]
    assert got["total_segments"] == 60 * 2 + 10 * 2 + 5
    assert got["max_segments"] == 3
    assert got["costs"] == [
        {"gateway": "primary", "price_per_segment": 0.25, "currency": "DKK", "cost": 36.25},
        {"gateway": "backup", "price_per_segment": None, "currency": "DKK", "cost": None},
    ]
    schedule = got["schedule"]
    assert schedule["reason"] == "now" and not schedule["in_quiet_hours"]
    assert schedule["estimated_seconds"] == 0.75  # 75 messages at 100/s
    start = datetime.fromisoformat(schedule["starts_at"])
    end = datetime.fromisoformat(schedule["estimated_completion"])
    assert end - start == timedelta(seconds=0.75)


async def test_preview_refuses_what_creating_refuses(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    for path in ("/v1/alerts/preview", "/v1/alerts"):
        r = await client.post(path, headers=auth(key), json=alert_body(texts={"en": "€" * 240}))
        problem = assert_problem(r, 422, "texts.en needs 4 SMS segments; at most 3")
        assert problem["segments"] == 4
        r = await client.post(path, headers=auth(key), json=alert_body(message="😀" * 101))
        assert_problem(r, 422, "message needs 4 SMS segments")
        r = await client.post(
            path, headers=auth(key), json=alert_body(send_at="2020-01-01T00:00:00Z")
        )
        assert_problem(r, 422, "send_at: must be in the future")
        far = (datetime.now(UTC) + timedelta(days=40)).isoformat()
        r = await client.post(path, headers=auth(key), json=alert_body(send_at=far))
        assert_problem(r, 422, "send_at: must be within 30 days")
        r = await client.post(
            path, headers=auth(key), json=alert_body(send_at="2030-01-01T00:00:00")
        )
        assert_problem(r, 422, "send_at")  # no time zone
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 0


async def test_the_start_follows_send_at_and_the_quiet_hours(
    db_url: str, key: str, pool: asyncpg.Pool
) -> None:
    await seed(pool, grid(10))
    night = settings_for(
        db_url,
        quiet_hours_start="22:00",
        quiet_hours_end="07:00",
        clock_offset_seconds=offset_to(23, 0),
    )
    async for c in app_client(night, db_url):
        now = night.now()
        r = await c.post("/v1/alerts/preview", headers=auth(key), json=alert_body())
        schedule = r.json()["schedule"]
        morning = datetime.fromisoformat(schedule["starts_at"]).astimezone(CPH)
        assert (morning.hour, morning.minute) == (7, 0)
        assert timedelta(hours=7, minutes=59) < morning - now <= timedelta(hours=8)
        assert schedule["reason"] == "quiet_hours" and schedule["in_quiet_hours"]
        r = await c.post(
            "/v1/alerts/preview", headers=auth(key), json=alert_body(priority="emergency")
        )
        assert r.json()["schedule"]["reason"] == "now"
        soon = (now + timedelta(hours=2)).isoformat()
        r = await c.post("/v1/alerts/preview", headers=auth(key), json=alert_body(expires_at=soon))
        assert r.json()["schedule"]["expires_first"] is True
        later = (now + timedelta(hours=13)).isoformat()  # noon tomorrow
        r = await c.post("/v1/alerts/preview", headers=auth(key), json=alert_body(send_at=later))
        schedule = r.json()["schedule"]
        assert schedule["reason"] == "send_at" and not schedule["in_quiet_hours"]
        assert datetime.fromisoformat(schedule["starts_at"]) == datetime.fromisoformat(later)
        # Created, it waits: 'scheduled', with the morning as its start.
        r = await c.post("/v1/alerts", headers=auth(key), json=alert_body())
        assert r.status_code == 202
        status = r.json()
        assert status["status"] == "scheduled"
        assert datetime.fromisoformat(status["not_before"]).astimezone(CPH).hour == 7
        listed = await c.get("/v1/alerts?status=scheduled", headers=auth(key))
        assert [a["id"] for a in listed.json()["items"]] == [status["id"]]
        assert (await c.get("/v1/alerts?status=queued", headers=auth(key))).json()["items"] == []
        # A scheduled alert can be cancelled; it is then never fanned out.
        r = await c.post("/v1/alerts", headers=auth(key), json=alert_body(message="withdrawn"))
        withdrawn = r.json()["id"]
        r = await c.post(f"/v1/alerts/{withdrawn}/cancel", headers=auth(key))
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        async with pool.acquire() as conn:
            assert await fan_out_next(conn, now) is None  # not before the morning
            woken = await fan_out_next(conn, morning + timedelta(seconds=1))
            assert woken is not None and woken.alert_id == status["id"]
            assert await fan_out_next(conn, morning + timedelta(seconds=1)) is None


async def test_a_large_zone_is_estimated_within_its_margin(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(pool, grid(1500))
    await pool.execute("ANALYZE subscriber_locations")
    monkeypatch.setattr(preview_module, "EXACT_LIMIT", 200)
    monkeypatch.setattr(preview_module, "SAMPLE_IDS", 1000)
    r = await client.post("/v1/alerts/preview", headers=auth(key), json=alert_body())
    got = r.json()["recipients"]
    assert got["exact"] is False and got["margin"] > 0
    assert abs(got["count"] - 1500) <= got["margin"] * 2, got  # a 95 % margin, doubled
    # By language, the estimate is split the same way (all Danish here: the message).
    body = alert_body(texts={"en": "Police: keep watch"})
    r = await client.post("/v1/alerts/preview", headers=auth(key), json=body)
    got = r.json()
    assert got["recipients"]["exact"] is False
    by_text = {t["field"]: t["recipients"] for t in got["texts"]}
    assert by_text == {"message": got["recipients"]["count"], "texts.en": 0}


async def test_a_zone_in_a_table_written_town_by_town_is_estimated_within_a_tight_margin(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More than EXACT_LIMIT subscribers imported one town after another (ids and table pages
    # in town order), half of them in towns inside the zone: neighbouring rows are alike, and a
    # sample of whole pages would be a few dozen samples, its margin about 12 % either way.
    towns = [(12.27, True), (12.45, False), (12.47, False), (12.30, True)]
    towns += [(12.33, True), (12.49, False), (12.32, True), (12.51, False)]
    per_town = (3 * preview_module.EXACT_LIMIT + 4000) // len(towns)
    await pool.execute(
        "INSERT INTO subscribers (phone) SELECT '+4540' || lpad(g::text, 6, '0') "
        "FROM generate_series(0, $1::int - 1) g ORDER BY g",
        per_town * len(towns),
    )
    await pool.execute(
        "INSERT INTO subscriber_locations (subscriber_id, position) "
        "SELECT s.id, point(($2::float8[])[g / $1 + 1] + 0.0002 * (g % 89 - 44), "
        "55.925 + 0.0002 * (g % 97 - 48)) * point($3::float8, 0) "
        "FROM subscribers s, LATERAL (SELECT substr(s.phone, 6)::int AS g) t ORDER BY s.id",
        per_town,
        [lon for lon, _ in towns],
        SCALE,
    )
    await pool.execute("ANALYZE subscriber_locations")
    exact = per_town * sum(inside for _, inside in towns)
    r = await client.post("/v1/alerts/preview", headers=auth(key), json=alert_body())
    got = r.json()["recipients"]
    assert got["exact"] is False, got
    assert abs(got["count"] - exact) <= got["margin"] <= 0.05 * exact, (got, exact)
    # A circle around one town, an eighth of everyone: the sample of subscribers says so, and
    # a larger sample of rows (not pages) gives the answer.
    body = alert_body(area={"type": "Circle", "center": [12.27, 55.925], "radius_m": 1000})
    with monkeypatch.context() as m:
        m.setattr(preview_module, "EXACT_LIMIT", 10**9)
        r = await client.post("/v1/alerts/preview", headers=auth(key), json=body)
    exact = r.json()["recipients"]["count"]
    assert per_town // 2 < exact <= per_town
    monkeypatch.setattr(preview_module, "EXACT_LIMIT", per_town // 4)
    r = await client.post("/v1/alerts/preview", headers=auth(key), json=body)
    got = r.json()["recipients"]
    assert got["exact"] is False, got
    assert abs(got["count"] - exact) <= got["margin"] <= 0.08 * exact, (got, exact)


def test_the_preview_is_documented_with_examples() -> None:
    doc = create_app(load_settings(), "postgresql://unused").openapi()
    route = doc["paths"]["/v1/alerts/preview"]["post"]
    assert {"200", "400", "401", "403", "413", "422", "429", "503"} <= set(route["responses"])
    ok = route["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/Preview")
    example = doc["components"]["schemas"]["Preview"]["examples"][0]
    assert example["recipients"]["count"] > 0
    assert example["texts"][0]["language"] is None
    body = route["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/AlertIn")
    assert doc["components"]["schemas"]["AlertIn"]["properties"]["send_at"]["examples"]


async def test_postal_codes_and_cut_polygons_are_estimated_from_their_whole_shape(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(pool, grid(1500))
    await pool.execute("ANALYZE subscriber_locations")
    # And 30 registered by postal code 3400 only: counted in full, estimate or not.
    await pool.execute(
        "WITH s AS (INSERT INTO subscribers (phone) SELECT '+4531' || lpad(g::text, 6, '0') "
        "FROM generate_series(1, 30) g RETURNING id) "
        "INSERT INTO subscriber_zones (subscriber_id, zone_id) "
        "SELECT s.id, z.id FROM s, zones z WHERE z.kind = 'postal_code' AND z.code = '3400'"
    )
    # A polygon of 40 vertices (cut into pieces for the fan-out) around the grid's middle.
    ring = [
        [
            12.30 + 0.03 * math.cos(2 * math.pi * i / 40),
            55.925 + 0.012 * math.sin(2 * math.pi * i / 40),
        ]
        for i in range(40)
    ]
    round_zone = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    for area in ({"postal_codes": ["3400"]}, round_zone):
        r = await client.post("/v1/alerts/preview", headers=auth(key), json=alert_body(area=area))
        exact = r.json()["recipients"]
        assert exact["exact"] and exact["count"] > 300, exact
        with monkeypatch.context() as m:
            m.setattr(preview_module, "EXACT_LIMIT", 100)
            m.setattr(preview_module, "SAMPLE_IDS", 1000)
            r = await client.post(
                "/v1/alerts/preview", headers=auth(key), json=alert_body(area=area)
            )
        got = r.json()["recipients"]
        assert got["exact"] is False, got
        assert abs(got["count"] - exact["count"]) <= 2 * got["margin"], (got, exact)
        if "postal_codes" in area:
            registrants = exact["count"] - await pool.fetchval(
                "SELECT count(*) FROM subscriber_locations l JOIN subscribers s "
                "ON s.id = l.subscriber_id AND s.status = 'active' "
                "JOIN zones z ON z.code = '3400' AND z.kind = 'postal_code' "
                "JOIN zone_parts p ON p.zone_id = z.id AND p.kind <> 'core' "
                "AND l.position <@ p.bbox AND (p.kind = 'cell' OR l.position <@ p.ring "
                "OR (l.position <-> p.boundary) <= 0.001)"
            )
            assert registrants == 30
