"""Fan-out on a real PostgreSQL: the set of deliveries equals the set of active subscribers inside
the zone, computed independently here (shapely for polygons, haversine for circles)."""

from __future__ import annotations

import random

import asyncpg
import pytest
import shapely
from shapely.geometry import Point, shape

from broadcaster.dispatch.fanout import FANOUT_POLYGON, fan_out_next
from broadcaster.ingest.alerts import NewAlert, create_alert
from broadcaster.ingest.geo import haversine_m, parse_area
from broadcaster.seed import municipality_geojson

# A square with a square hole, as a GeoJSON Polygon.
DONUT = {
    "type": "Polygon",
    "coordinates": [
        [[12.0, 55.0], [12.4, 55.0], [12.4, 55.4], [12.0, 55.4], [12.0, 55.0]],
        [[12.1, 55.1], [12.1, 55.3], [12.3, 55.3], [12.3, 55.1], [12.1, 55.1]],
    ],
}


async def add_subscribers(
    conn: asyncpg.Connection, points: list[list[tuple[float, float]]], status: str = "active"
) -> list[int]:
    """One subscriber per entry, with one location per point; returns their ids."""
    ids = []
    for locations in points:
        sid = await conn.fetchval(
            "INSERT INTO subscribers (phone, status) VALUES "
            "('+452' || lpad(nextval('subscribers_id_seq')::text, 7, '0'), $1) RETURNING id",
            status,
        )
        await conn.executemany(
            "INSERT INTO subscriber_locations (subscriber_id, position) "
            "VALUES ($1, point($2 * 1e6, $3 * 1e6))",
            [(sid, lon, lat) for lon, lat in locations],
        )
        ids.append(sid)
    return ids


async def queue_alert(conn: asyncpg.Connection, area: dict, priority: str = "normal") -> int:
    alert = NewAlert("test", area, parse_area(area), priority, None, None)
    alert_id, _ = await create_alert(conn, alert, None, None)
    return alert_id


async def recipients(conn: asyncpg.Connection, alert_id: int) -> set[int]:
    rows = await conn.fetch("SELECT subscriber_id FROM deliveries WHERE alert_id = $1", alert_id)
    return {r["subscriber_id"] for r in rows}


def far_from_boundary(geom, lon: float, lat: float, margin: float = 1e-5) -> bool:
    return geom.boundary.distance(Point(lon, lat)) > margin


async def test_polygon_with_hole_matches_an_independent_computation(pool: asyncpg.Pool) -> None:
    rng = random.Random(1)
    geom = shape(DONUT)
    points = []
    while len(points) < 3000:
        lon, lat = rng.uniform(11.95, 12.45), rng.uniform(54.95, 55.45)
        if far_from_boundary(geom, lon, lat):
            points.append([(lon, lat)])
    # On the boundary counts as inside: outer vertex, outer edge, hole vertex, hole edge.
    boundary = [[(12.0, 55.0)], [(12.2, 55.4)], [(12.1, 55.1)], [(12.3, 55.2)]]
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, points + boundary)
        alert_id = await queue_alert(conn, DONUT)
        result = await fan_out_next(conn)
        got = await recipients(conn, alert_id)
        status = await conn.fetchrow(
            "SELECT status, recipients FROM alerts WHERE id = $1", alert_id
        )
    expected = {
        sid
        for sid, locs in zip(ids, points + boundary, strict=True)
        if geom.covers(Point(*locs[0]))
    }
    assert set(ids[-4:]) <= expected
    assert got == expected
    assert result is not None and result.recipients == len(expected)
    assert (status["status"], status["recipients"]) == ("dispatching", len(expected))


async def test_zone_rows_with_holes_still_leave_the_holes_out(pool: asyncpg.Pool) -> None:
    """Polygons with holes are cut into hole-free pieces when an alert is created, and its
    fan-out then skips the holes' test; an alert whose rows do have holes (stored whole, as
    before polygons were cut) is fanned out with the test."""
    rng = random.Random(3)
    geom = shape(DONUT)
    points = []
    while len(points) < 2000:
        lon, lat = rng.uniform(11.95, 12.45), rng.uniform(54.95, 55.45)
        if far_from_boundary(geom, lon, lat):
            points.append([(lon, lat)])
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, points)
        alert_id = await queue_alert(conn, DONUT)
        whole = parse_area(DONUT).whole_rows()
        assert [r.kind for r in whole] == ["outer", "hole"]
        await conn.execute("DELETE FROM alert_zones WHERE alert_id = $1", alert_id)
        await conn.executemany(
            "INSERT INTO alert_zones (alert_id, part, kind, ring, boundary, bbox) "
            "VALUES ($1, $2, $3, $4::text::polygon, $5::text::path, $6::text::box)",
            [(alert_id, r.part, r.kind, r.ring, r.boundary, r.bbox) for r in whole],
        )
        result = await fan_out_next(conn)
        got = await recipients(conn, alert_id)
    expected = {sid for sid, locs in zip(ids, points, strict=True) if geom.covers(Point(*locs[0]))}
    assert got == expected
    assert result is not None and result.recipients == len(expected)


async def test_municipality_multipolygon_matches_shapely(pool: asyncpg.Pool) -> None:
    area = municipality_geojson(219)  # Hillerød
    geom = shape(area)
    minx, miny, maxx, maxy = geom.bounds
    rng = random.Random(2)
    points = []
    while len(points) < 2000:
        lon, lat = rng.uniform(minx - 0.05, maxx + 0.05), rng.uniform(miny - 0.05, maxy + 0.05)
        if far_from_boundary(geom, lon, lat):
            points.append([(lon, lat)])
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, points)
        alert_id = await queue_alert(conn, area)
        await fan_out_next(conn)
        got = await recipients(conn, alert_id)
    expected = {sid for sid, locs in zip(ids, points, strict=True) if geom.covers(Point(*locs[0]))}
    assert 0 < len(expected) < len(points)
    assert got == expected


async def test_circle_uses_great_circle_distance(pool: asyncpg.Pool) -> None:
    center, radius = (12.3111, 55.9267), 5000.0
    rng = random.Random(3)
    points = []
    while len(points) < 2000:
        lon, lat = rng.uniform(12.18, 12.44), rng.uniform(55.87, 55.98)
        if abs(haversine_m(lon, lat, *center) - radius) > 1.0:
            points.append([(lon, lat)])
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, points)
        alert_id = await queue_alert(
            conn, {"type": "Circle", "center": list(center), "radius_m": radius}
        )
        await fan_out_next(conn)
        got = await recipients(conn, alert_id)
    expected = {
        sid
        for sid, locs in zip(ids, points, strict=True)
        if haversine_m(*locs[0], *center) <= radius
    }
    assert 0 < len(expected) < len(points)
    assert got == expected


async def test_one_delivery_per_subscriber_and_only_active_ones(pool: asyncpg.Pool) -> None:
    inside, inside2, outside = (12.05, 55.05), (12.35, 55.35), (13.0, 56.0)
    async with pool.acquire() as conn:
        two_inside = await add_subscribers(conn, [[inside, inside2]])
        one_inside = await add_subscribers(conn, [[outside, inside]])
        await add_subscribers(conn, [[inside]], status="opted_out")
        await add_subscribers(conn, [[inside]], status="pending")
        await add_subscribers(conn, [[outside]])
        alert_id = await queue_alert(conn, DONUT)
        await fan_out_next(conn)
        got = await recipients(conn, alert_id)
        total = await conn.fetchval("SELECT count(*) FROM deliveries")
    assert got == set(two_inside + one_inside)
    assert total == 2


async def test_priority_order_and_empty_zone(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)]])
        normal = await queue_alert(conn, DONUT, "normal")
        emergency = await queue_alert(conn, DONUT, "emergency")
        empty = await queue_alert(conn, {"type": "Circle", "center": [10.0, 57.0], "radius_m": 100})
        order = [(await fan_out_next(conn)).alert_id for _ in range(3)]  # type: ignore[union-attr]
        assert await fan_out_next(conn) is None
        status = await conn.fetchval("SELECT status FROM alerts WHERE id = $1", empty)
    assert order == [emergency, normal, empty]
    assert status == "completed"


async def test_fanout_uses_the_gist_index(pool: asyncpg.Pool) -> None:
    rng = random.Random(4)
    async with pool.acquire() as conn:
        await add_subscribers(
            conn, [[(rng.uniform(8, 15), rng.uniform(54, 58))] for _ in range(3000)]
        )
        alert_id = await queue_alert(conn, DONUT)
        await conn.execute("ANALYZE")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + FANOUT_POLYGON, alert_id, 2))
    assert "subscriber_locations_position" in plan, plan


@pytest.mark.parametrize("radius", [10.0, 250_000.0])
def test_circle_bbox_contains_the_circle(radius: float) -> None:
    zone = parse_area({"type": "Circle", "center": [12.3, 55.9], "radius_m": radius})
    assert zone.kind == "circle"
    x0, y0, x1, y1 = zone.bbox()  # type: ignore[union-attr]
    box = shapely.box(x0, y0, x1, y1)
    for bearing in range(0, 360, 5):
        # Points on the circle, by the destination formula on the same sphere.
        import math

        d = radius / 6_371_008.8
        b = math.radians(bearing)
        lat1, lon1 = math.radians(55.9), math.radians(12.3)
        lat2 = math.asin(math.sin(lat1) * math.cos(d) + math.cos(lat1) * math.sin(d) * math.cos(b))
        lon2 = lon1 + math.atan2(
            math.sin(b) * math.sin(d) * math.cos(lat1),
            math.cos(d) - math.sin(lat1) * math.sin(lat2),
        )
        assert box.covers(Point(math.degrees(lon2), math.degrees(lat2)))


async def test_slanted_edges_are_exact_to_well_under_a_metre(pool: asyncpg.Pool) -> None:
    """A point on a slanted edge is inside; one 0.5 m (~5e-6 degree) outside it is not. In plain
    degrees PostgreSQL's 1e-6 tolerance on cross products would count the latter as inside."""
    triangle = {
        "type": "Polygon",
        "coordinates": [[[12.0, 55.0], [12.4, 55.0], [12.4, 55.4], [12.0, 55.0]]],
    }
    on_edge, outside = (12.2, 55.2), (12.2, 55.2 + 5e-6)
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[on_edge], [outside]])
        alert_id = await queue_alert(conn, triangle)
        await fan_out_next(conn)
        got = await recipients(conn, alert_id)
    assert got == {ids[0]}


async def test_deleting_a_subscriber_deletes_their_deliveries(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)], [(12.06, 55.06)]])
        for _ in range(2):
            await queue_alert(conn, DONUT)
            await fan_out_next(conn)
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 4
        await conn.execute("DELETE FROM subscribers WHERE id = $1", ids[0])
        left = await conn.fetch("SELECT DISTINCT subscriber_id FROM deliveries")
    assert [r["subscriber_id"] for r in left] == [ids[1]]


async def test_circle_leaves_out_subscribers_who_are_not_active(pool: asyncpg.Pool) -> None:
    center = (12.30, 55.90)
    async with pool.acquire() as conn:
        active = await add_subscribers(conn, [[center], [center]])
        await add_subscribers(conn, [[center]], status="opted_out")
        pending = await add_subscribers(conn, [[center]], status="pending")
        area = {"type": "Circle", "center": list(center), "radius_m": 500}
        first = await queue_alert(conn, area)
        await fan_out_next(conn)
        # Confirming the pending one and opting out an active one change the next alert's list.
        await conn.execute("UPDATE subscribers SET status = 'active' WHERE id = $1", pending[0])
        await conn.execute("UPDATE subscribers SET status = 'opted_out' WHERE id = $1", active[0])
        second = await queue_alert(conn, area)
        await fan_out_next(conn)
        assert await recipients(conn, first) == set(active)
        assert await recipients(conn, second) == {active[1], pending[0]}


async def test_status_is_read_from_the_small_index_of_inactive_subscribers(
    pool: asyncpg.Pool,
) -> None:
    rng = random.Random(5)
    async with pool.acquire() as conn:
        await add_subscribers(
            conn, [[(rng.uniform(11.9, 12.5), rng.uniform(54.9, 55.6))] for _ in range(3000)]
        )
        await add_subscribers(conn, [[(12.05, 55.05)]] * 20, status="opted_out")
        alert_id = await queue_alert(conn, DONUT)
        await conn.execute("ANALYZE")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + FANOUT_POLYGON, alert_id, 2))
    assert "subscribers_not_active" in plan, plan
    assert "subscribers_pkey" not in plan, plan
