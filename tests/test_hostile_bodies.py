"""Hostile request bodies and parameters beyond single odd values (tests/test_hostile_input.py):
JSON nested a hundred thousand levels deep, bytes that are not UTF-8, raw NUL and control bytes,
a polygon of 10^6 vertices and one just over the positions limit, SQL-looking strings in every
field, path and query, and numbers written in odd ways. Each gets a clear 4xx problem+json (or,
where the value is a valid text, is stored verbatim), never a 5xx, and leaves the database as it
was. In-process (ASGI) against a real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from tests.test_api import HILLEROD_SQUARE, alert_body, assert_problem, auth
from tests.test_api import client as client
from tests.test_api import key as key

from broadcaster.ingest.geo import MAX_POSITIONS

JSON = {"Content-Type": "application/json"}
TABLES = ("alerts", "subscribers", "subscriber_locations", "zones", "templates", "audit_log")


async def snapshot(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows per table that a write route could touch (and that every table still exists)."""
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


WRITE_ROUTES = ["/v1/alerts", "/v1/alerts/preview", "/v1/subscribers", "/v1/zones", "/v1/templates"]


def deep(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


HOSTILE_BODIES: dict[str, bytes] = {
    "nested arrays, 100,000 deep": deep(100_000),
    "nested objects, 100,000 deep": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "nested in a field": b'{"message": "x", "area": ' + deep(50_000) + b"}",
    "unclosed nesting": b"[" * 200_000,
    "invalid UTF-8": b'{"message": "Politiet \xff\xfe efterlyser", "area": {}}',
    "overlong UTF-8 encoding of /": b'{"message": "\xc0\xaf"}',
    "a lone UTF-8 continuation byte": b'{"message": "\x80"}',
    "UTF-16 with a BOM": '{"message": "x"}'.encode("utf-16"),
    "raw NUL byte in a string": b'{"message": "Politiet\x00efterlyser"}',
    "raw NUL byte between tokens": b'{"message":\x00 "x"}',
    "raw control character in a string": b'{"message": "a\x07b\x1bc"}',
    "only NUL bytes": b"\x00" * 1000,
    "empty": b"",
    "a bare number": b"1e999999",
    "trailing garbage": json.dumps(alert_body()).encode() + b"\x00garbage",
    "two documents": json.dumps(alert_body()).encode() * 2,
}


@pytest.mark.parametrize("path", WRITE_ROUTES)
@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
async def test_hostile_bodies_get_a_clear_4xx_and_change_nothing(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, path: str, name: str
) -> None:
    before = await snapshot(pool)
    r = await client.post(path, headers=auth(key) | JSON, content=HOSTILE_BODIES[name])
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json"), r.text[:300]
    assert r.json()["status"] == r.status_code
    assert await snapshot(pool) == before


def ring(vertices: int) -> list[list[float]]:
    """A closed ring of `vertices` positions (first = last) on a small circle-ish zig-zag."""
    points = [
        [12.25 + 0.1 * i / vertices, 55.90 + (0.01 if i % 2 else 0.0)] for i in range(vertices - 1)
    ]
    return [*points, points[0]]


async def test_a_polygon_of_a_million_vertices_is_413_before_it_is_parsed(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)
    body = json.dumps(alert_body(area={"type": "Polygon", "coordinates": [ring(10**6)]}))
    assert len(body) > 20_000_000
    r = await client.post("/v1/alerts", headers=auth(key) | JSON, content=body)
    assert_problem(r, 413)
    assert await snapshot(pool) == before


async def test_a_polygon_over_the_positions_limit_is_422_naming_the_area(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)
    area = {"type": "Polygon", "coordinates": [ring(MAX_POSITIONS + 1)]}
    body = json.dumps(alert_body(area=area), separators=(",", ":"))
    assert len(body) < 4 * 1024 * 1024  # under the body limit: the area check refuses it
    for path in ("/v1/alerts", "/v1/alerts/preview"):
        r = await client.post(path, headers=auth(key) | JSON, content=body)
        problem = assert_problem(r, 422, f"at most {MAX_POSITIONS}")
        assert problem["detail"].startswith("area"), problem
    assert await snapshot(pool) == before


SQL = [
    "'; DROP TABLE subscribers; --",
    "1' OR '1'='1",
    'x"); DELETE FROM alerts; --',
    "$1; TRUNCATE deliveries",
    "1; SELECT pg_sleep(10)",
    "' UNION SELECT phone FROM subscribers --",
    "\\'; COPY subscribers TO PROGRAM 'id'; --",
]


@pytest.mark.parametrize("sql", SQL)
async def test_sql_looking_strings_are_data_stored_verbatim_or_refused(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, sql: str
) -> None:
    """Every value goes to PostgreSQL as a parameter: a valid text is stored as written, an
    invalid one is a 4xx; no statement is ever changed by it."""
    h = auth(key)
    # Valid texts: stored verbatim.
    r = await client.post("/v1/alerts", headers=h, json=alert_body(message=sql, reference=sql))
    assert r.status_code == 202, r.text
    row = await pool.fetchrow("SELECT message, reference FROM alerts WHERE id = $1", r.json()["id"])
    assert (row["message"], row["reference"]) == (sql, sql)
    before = await snapshot(pool)
    # Invalid values: 4xx, nothing stored.
    refused = [
        await client.post("/v1/subscribers", headers=h, json={"phone": sql, "locations": []}),
        await client.post(
            "/v1/subscribers",
            headers=h,
            json={"phone": "+4526123461", "locations": [{"postal_code": sql}]},
        ),
        await client.post("/v1/alerts", headers=h, json=alert_body(area={"postal_codes": [sql]})),
        await client.post("/v1/alerts", headers=h, json=alert_body(area={"zones": [sql]})),
        await client.post("/v1/alerts", headers=h, json=alert_body(priority=sql)),
        await client.post("/v1/alerts", headers=h, json=alert_body(template=sql)),
        await client.post("/v1/alerts/preview", headers=h, json=alert_body(area={"zones": [sql]})),
        await client.get(f"/v1/subscribers/{quote(sql, safe='')}", headers=h),
        await client.delete(f"/v1/subscribers/{quote(sql, safe='')}", headers=h),
        await client.get(f"/v1/templates/{quote(sql, safe='')}", headers=h),
        await client.get(f"/v1/alerts/{quote(sql, safe='')}", headers=h),
        await client.get(f"/v1/zones/{quote(sql, safe='')}", headers=h),
        await client.get("/v1/alerts", headers=h, params={"status": sql}),
        await client.get("/v1/alerts", headers=h, params={"cursor": sql}),
        await client.get("/v1/zones", headers=h, params={"kind": sql}),
        await client.get("/v1/audit", headers=h, params={"limit": sql}),
    ]
    for answer in refused:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.text[:300])
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert await snapshot(pool) == before


ODD_NUMBERS: list[tuple[str, dict[str, Any]]] = [
    # (what, an alert body with one number written oddly) — JSON has one number syntax
    ("radius as a string", {"radius_m": "100"}),
    ("radius with underscores", {"radius_m": "1_000"}),
    ("radius in hex", {"radius_m": "0x64"}),
    ("radius as true", {"radius_m": True}),
    ("radius as a list", {"radius_m": [100]}),
    ("radius zero after underflow", {"radius_m": 1e-400}),
    ("radius negative zero", {"radius_m": -0.0}),
    ("radius in Arabic-Indic digits", {"radius_m": "\u0661\u0660\u0660"}),
    ("radius in full-width digits", {"radius_m": "\uff11\uff10\uff10"}),
    ("centre as strings", {"center": ["12.3", "55.9"]}),
    ("centre in full-width digits", {"center": ["\uff11\uff12", 55.9]}),
]


@pytest.mark.parametrize(("what", "change"), ODD_NUMBERS, ids=[w for w, _ in ODD_NUMBERS])
async def test_numbers_in_odd_formats_are_422_naming_the_field(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, what: str, change: dict[str, Any]
) -> None:
    before = await snapshot(pool)
    area = {"type": "Circle", "center": [12.3, 55.9], "radius_m": 100, **change}
    body = json.dumps(alert_body(area=area))
    r = await client.post("/v1/alerts", headers=auth(key) | JSON, content=body)
    problem = assert_problem(r, 422)
    assert problem["detail"].startswith("area"), (what, problem)
    assert await snapshot(pool) == before


ODD_QUERIES = [
    {"limit": "1_0"},
    {"limit": "0x10"},
    {"limit": "\u0661\u0660"},
    {"limit": "\uff11\uff10"},
    {"limit": "1e1"},
    {"limit": "10.0"},
    {"limit": "-1"},
    {"limit": "9" * 40},
    {"cursor": "1_0"},
    {"cursor": "\u0661"},
]


@pytest.mark.parametrize("params", ODD_QUERIES, ids=[json.dumps(p) for p in ODD_QUERIES])
async def test_odd_numbers_in_queries_and_paths_are_422(
    client: httpx.AsyncClient, key: str, params: dict[str, str]
) -> None:
    for path in ("/v1/alerts", "/v1/audit", "/v1/templates", "/v1/zones"):
        r = await client.get(path, headers=auth(key), params=params)
        assert_problem(r, 422)


@pytest.mark.parametrize("odd", ["1_0", "\u0661", "\uff11", "0x1", "+1", " 1", "1 ", "1.0", "1e0"])
async def test_odd_numbers_in_paths_are_422(client: httpx.AsyncClient, key: str, odd: str) -> None:
    h = auth(key)
    for answer in (
        await client.get(f"/v1/alerts/{quote(odd)}", headers=h),
        await client.post(f"/v1/alerts/{quote(odd)}/cancel", headers=h),
        await client.get(f"/v1/alerts/{quote(odd)}/tips", headers=h),
        await client.get(f"/v1/zones/{quote(odd)}", headers=h),
        await client.get("/v1/templates/x", headers=h, params={"version": odd}),
        await client.get("/v1/stats/signups", headers=h, params={"weeks": odd}),
    ):
        assert_problem(answer, 422)


async def test_the_square_still_works(client: httpx.AsyncClient, key: str) -> None:
    """The refusals above are of the odd values, not of the route."""
    r = await client.post("/v1/alerts", headers=auth(key), json=alert_body(area=HILLEROD_SQUARE))
    assert r.status_code == 202, r.text
