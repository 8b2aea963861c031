"""Alerts for named zones and postal codes, and subscribers registered by postal code, on a real
PostgreSQL with the shipped boundaries; recipients checked against shapely.

The rule under test (README, "Postal codes"): a subscriber registered by a postal code is reached
by an alert that names the postal code, or whose area reaches more than CORE_MARGIN_M (100 m)
into it. The expectation here is computed independently: the area and the postal code are
projected to metres with a fixed reference latitude (not the zone's centroid, as the service
does) and the postal code shrunk with a band of 90 m and of 110 m; where the answers differ the
case is too close to call and is not asserted."""

from __future__ import annotations

import json
import math
import random
from importlib import resources
from typing import Any

import asyncpg
import httpx
import shapely
from shapely.geometry import Point, shape
from tests.test_api import alert_body, assert_problem, auth
from tests.test_api import client as client
from tests.test_api import key as key
from tests.test_fanout import add_subscribers, recipients

from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import haversine_m, parse_area
from broadcaster.ingest.zones import CORE_MARGIN_M, resolve_names, resolve_postal_codes

LAT0 = 56.0
M_PER_DEG = (111_320.0 * math.cos(math.radians(LAT0)), 110_574.0)


def features(name: str) -> dict[str, Any]:
    text = resources.files("broadcaster.data").joinpath(name).read_text(encoding="utf-8")
    return {str(f["properties"].get("code")): f for f in json.loads(text)["features"]}


POSTAL = {
    c: shape(f["geometry"]) for c, f in features("nordsjaelland_postal_codes.geojson").items()
}
MUNICIPALITIES = {
    f["properties"]["name"]: shape(f["geometry"])
    for f in features("nordsjaelland_municipalities.geojson").values()
}


def metres(geometry: Any) -> Any:
    return shapely.transform(geometry, lambda c: c * M_PER_DEG)


def registrants_expected(area_deg: Any, named: set[str]) -> tuple[set[str], set[str]]:
    """(postal codes whose registrants must be reached, codes whose must not)."""
    area = metres(area_deg)
    must, must_not = set(named), set()
    for code, zone in POSTAL.items():
        if code in named:
            continue
        zone_m = metres(zone)
        if area.intersects(zone_m.buffer(-(CORE_MARGIN_M + 10))):
            must.add(code)
        elif not area.intersects(zone_m.buffer(-(CORE_MARGIN_M - 10))):
            must_not.add(code)
    return must, must_not


def circle_deg(lon: float, lat: float, radius: float) -> Any:
    """The circle as a polygon in degrees (a planar circle in the local metric projection)."""
    x, y = lon * M_PER_DEG[0], lat * M_PER_DEG[1]
    return shapely.transform(Point(x, y).buffer(radius, quad_segs=64), lambda c: c / M_PER_DEG)


async def register_by_postal_code(
    conn: asyncpg.Connection, codes: list[str], status: str = "active"
) -> dict[str, int]:
    """One subscriber per postal code, registered by that code only: {code: subscriber id}."""
    ids = await resolve_postal_codes(conn, codes)
    out = {}
    for code in codes:
        sid = await conn.fetchval(
            "INSERT INTO subscribers (phone, status) VALUES "
            "('+453' || lpad(nextval('subscribers_id_seq')::text, 7, '0'), $1) RETURNING id",
            status,
        )
        await conn.execute(
            "INSERT INTO subscriber_zones (subscriber_id, zone_id) VALUES ($1, $2)", sid, ids[code]
        )
        out[code] = sid
    return out


async def alert_for(conn: asyncpg.Connection, area: dict) -> int:
    if "zones" in area:
        new = NewAlert(
            "t", area, None, "normal", None, None, tuple(await resolve_names(conn, area["zones"]))
        )
    elif "postal_codes" in area:
        codes = await resolve_postal_codes(conn, area["postal_codes"])
        new = NewAlert(
            "t", area, None, "normal", None, None, tuple(codes[c] for c in area["postal_codes"])
        )
    else:
        new = NewAlert("t", area, parse_area(area), "normal", None, None)
    alert_id, _ = await create_alert(conn, new, None, None)
    result = await fan_out_next(conn)
    assert result is not None and result.alert_id == alert_id
    return alert_id


async def test_recipients_of_every_kind_of_alert_match_shapely(pool: asyncpg.Pool) -> None:
    rng = random.Random(13)
    district = MUNICIPALITIES["Nordsjællands Politi"]
    minx, miny, maxx, maxy = district.bounds
    points = [(rng.uniform(minx, maxx), rng.uniform(miny, maxy)) for _ in range(3000)]
    async with pool.acquire() as conn:
        by_code = await register_by_postal_code(conn, sorted(POSTAL))
        opted_out = await register_by_postal_code(conn, ["3400"], status="opted_out")
        point_ids = await add_subscribers(conn, [[p] for p in points])
        # Registered by 3480 and living at a point in 3400: one delivery whatever reaches them.
        both_point = POSTAL["3400"].representative_point().coords[0]
        both = (await add_subscribers(conn, [[both_point]]))[0]
        await conn.execute(
            "INSERT INTO subscriber_zones (subscriber_id, zone_id) "
            "SELECT $1, id FROM zones WHERE code = '3480'",
            both,
        )
        cases: list[tuple[dict, Any, set[str]]] = [
            (
                {"postal_codes": ["3400", "3480"]},
                POSTAL["3400"].union(POSTAL["3480"]),
                {"3400", "3480"},
            ),
            ({"zones": ["Hillerød Kommune"]}, MUNICIPALITIES["Hillerød Kommune"], set()),
            (
                {"zones": ["3000 Helsingør", "Halsnæs Kommune"]},
                POSTAL["3000"].union(MUNICIPALITIES["Halsnæs Kommune"]),
                {"3000"},
            ),
        ]
        for _ in range(12):
            lon, lat = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            radius = rng.choice([150.0, 400.0, 1500.0, 5000.0])
            cases.append(
                ({"type": "Circle", "center": [lon, lat], "radius_m": radius}, None, set())
            )
        for _ in range(6):
            cx, cy = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            hull = shapely.MultiPoint(
                [(cx + rng.uniform(-0.05, 0.05), cy + rng.uniform(-0.03, 0.03)) for _ in range(7)]
            ).convex_hull
            cases.append(
                (
                    {"type": "Polygon", "coordinates": [list(map(list, hull.exterior.coords))]},
                    hull,
                    set(),
                )
            )
        checked = reached_codes = 0
        for area, geometry, named in cases:
            alert_id = await alert_for(conn, area)
            got = await recipients(conn, alert_id)
            if area.get("type") == "Circle":
                (lon, lat), radius = area["center"], area["radius_m"]
                geometry = circle_deg(lon, lat, radius)
                inside = {
                    sid
                    for sid, p in zip(point_ids, points, strict=True)
                    if abs(haversine_m(*p, lon, lat) - radius) > 1
                    and haversine_m(*p, lon, lat) < radius
                }
                near = {
                    sid
                    for sid, p in zip(point_ids, points, strict=True)
                    if abs(haversine_m(*p, lon, lat) - radius) <= 1
                }
            else:
                inside = {
                    sid
                    for sid, p in zip(point_ids, points, strict=True)
                    if geometry.covers(Point(p))
                }
                near = {
                    sid
                    for sid, p in zip(point_ids, points, strict=True)
                    if geometry.boundary.distance(Point(p)) < 1e-6
                }
            must, must_not = registrants_expected(geometry, named)
            assert {by_code[c] for c in must} <= got, (area, must)
            assert not {by_code[c] for c in must_not} & got, (
                area,
                must_not & {c for c in by_code if by_code[c] in got},
            )
            assert (got & set(point_ids)) - near == inside - near, area
            assert opted_out["3400"] not in got
            checked += len(must) + len(must_not)
            reached_codes += len(must)
            # One delivery at most; reached through the point or through 3480.
            count = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE alert_id = $1 AND subscriber_id = $2",
                alert_id,
                both,
            )
            point_inside = geometry.covers(Point(both_point))
            if "3480" in must or point_inside:
                assert count == 1, area
            elif "3480" in must_not:
                assert count == 0, area
        # The cases decide most postal codes one way or the other, and reach some.
        assert checked > 0.9 * len(cases) * len(POSTAL) and reached_codes > 20


async def test_a_circle_reaches_a_postal_code_only_when_it_reaches_well_into_it(
    pool: asyncpg.Pool,
) -> None:
    """Circles centred a kilometre outside 3400, on the line from its nearest border point: one
    that reaches 40 m into 3400 does not reach those registered by 3400, one reaching 250 m does.
    (Without the band both would, and every alert drawn along a border would reach the postal
    codes beyond it.)"""
    zone_m = metres(POSTAL["3400"])
    # A border point of 3400 that borders nothing but 3400 for 2 km around it.
    centre_m = None
    for x, y in shapely.get_coordinates(
        zone_m.exterior if hasattr(zone_m, "exterior") else zone_m.geoms[0].exterior
    ):
        border = Point(x, y)
        inner = zone_m.buffer(-1).boundary.interpolate(zone_m.buffer(-1).boundary.project(border))
        dx, dy = x - inner.x, y - inner.y
        length = math.hypot(dx, dy)
        if length == 0:
            continue
        outside = Point(x + dx / length * 1000, y + dy / length * 1000)
        if zone_m.distance(outside) > 990 and outside.buffer(1300).difference(zone_m).area > 0:
            centre_m = outside
            break
    assert centre_m is not None
    lon, lat = centre_m.x / M_PER_DEG[0], centre_m.y / M_PER_DEG[1]
    distance = zone_m.distance(centre_m)
    async with pool.acquire() as conn:
        by_code = await register_by_postal_code(conn, ["3400"])
        shallow = await alert_for(
            conn, {"type": "Circle", "center": [lon, lat], "radius_m": distance + 40}
        )
        deep = await alert_for(
            conn, {"type": "Circle", "center": [lon, lat], "radius_m": distance + 250}
        )
        assert by_code["3400"] not in await recipients(conn, shallow)
        assert by_code["3400"] in await recipients(conn, deep)


async def test_alerts_by_zone_and_postal_code_over_the_api(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    r = await client.post(
        "/v1/alerts", headers=auth(key), json=alert_body(area={"postal_codes": [" 3400", "3480"]})
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert [(z["kind"], z["code"]) for z in body["zones"]] == [
        ("postal_code", "3400"),
        ("postal_code", "3480"),
    ]
    assert await pool.fetchval("SELECT area FROM alerts WHERE id = $1", body["id"]) == {
        "postal_codes": ["3400", "3480"]
    }
    assert (
        await pool.fetchval("SELECT count(*) FROM alert_zones WHERE alert_id = $1", body["id"]) > 2
    )
    r = await client.post(
        "/v1/alerts",
        headers=auth(key),
        json=alert_body(area={"zones": ["hillerød kommune", "Nordsjællands Politi"]}),
    )
    assert r.status_code == 202, r.text
    assert [z["name"] for z in r.json()["zones"]] == ["Hillerød Kommune", "Nordsjællands Politi"]
    problem = assert_problem(
        await client.post(
            "/v1/alerts",
            headers=auth(key),
            json=alert_body(area={"postal_codes": ["3400", "9999", "0000"]}),
        ),
        422,
        "area.postal_codes: unknown postal code(s): '9999', '0000'",
    )
    assert problem["unknown"] == ["9999", "0000"]
    assert_problem(
        await client.post(
            "/v1/alerts", headers=auth(key), json=alert_body(area={"zones": ["Atlantis"]})
        ),
        422,
        "area.zones: unknown zone(s): 'Atlantis'",
    )
    for area, detail in [
        ({"zones": []}, "area.zones"),
        ({"zones": ["x"], "postal_codes": ["3400"]}, "area.postal_codes"),
        ({"postal_codes": ["34 00!"]}, "area.postal_codes[0]"),
        ({"postal_codes": "3400"}, "area.postal_codes"),
        ({}, "area must be a GeoJSON"),
        ({"type": "Point"}, "area.type"),
    ]:
        assert_problem(
            await client.post("/v1/alerts", headers=auth(key), json=alert_body(area=area)),
            422,
            detail,
        )
    assert await pool.fetchval("SELECT count(*) FROM alerts") == 2


async def test_subscribers_register_by_postal_code_over_the_api(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    r = await client.post(
        "/v1/subscribers",
        headers=auth(key),
        json={
            "phone": "20 12 34 56",
            "locations": [
                {"lat": 55.93, "lon": 12.30, "label": "home"},
                {"postal_code": "3480", "label": "parents"},
                {"postal_code": "3480"},
            ],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["locations"][1] == {"postal_code": "3480", "label": "parents"}
    rows = await pool.fetch(
        "SELECT z.code, s.label FROM subscriber_zones s JOIN zones z ON z.id = s.zone_id"
    )
    assert [(r["code"], r["label"]) for r in rows] == [("3480", "parents")]
    assert await pool.fetchval("SELECT count(*) FROM subscriber_locations") == 1
    problem = assert_problem(
        await client.post(
            "/v1/subscribers",
            headers=auth(key),
            json={
                "phone": "20 12 34 57",
                "locations": [{"lat": 55.9, "lon": 12.3}, {"postal_code": "9999"}],
            },
        ),
        422,
        "locations[1].postal_code: unknown postal code(s): '9999'",
    )
    assert problem["unknown"] == ["9999"]
    for location, detail in [
        ({"postal_code": "3480", "lat": 55.9}, "locations[0].lat"),
        ({"postal_code": 3480}, "locations[0].postal_code"),
        ({"postal_code": ""}, "locations[0].postal_code"),
        ({"lat": 55.9}, "locations[0].lon"),
    ]:
        assert_problem(
            await client.post(
                "/v1/subscribers",
                headers=auth(key),
                json={"phone": "20 12 34 58", "locations": [location]},
            ),
            422,
            detail,
        )
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 1
