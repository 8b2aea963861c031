"""Large polygons cut into cells and pieces: the pieces cover the polygon exactly, and the fan-out
over them reaches the same subscribers as shapely finds in the polygon, on cuts and edges too."""

from __future__ import annotations

import json
import random
from importlib import resources

import asyncpg
import pytest
import shapely
from shapely.geometry import Point, Polygon, shape
from tests.test_fanout import add_subscribers, queue_alert, recipients

from broadcaster.dispatch.fanout import fan_out_next
from broadcaster.ingest import pieces
from broadcaster.ingest.geo import parse_area


def shipped_features() -> list[dict]:
    features = []
    for name in ("nordsjaelland_municipalities.geojson", "nordsjaelland_postal_codes.geojson"):
        text = resources.files("broadcaster.data").joinpath(name).read_text(encoding="utf-8")
        features += json.loads(text)["features"]
    return features


def swiss_cheese(rng: random.Random, holes: int) -> Polygon:
    """A square with many small square holes (a polygon that must be cut through its holes)."""
    squares: list[Polygon] = []
    while len(squares) < holes:
        x, y = rng.uniform(12.01, 12.38), rng.uniform(55.01, 55.38)
        s = shapely.box(x, y, x + rng.uniform(0.002, 0.01), y + rng.uniform(0.002, 0.01))
        if not any(s.intersects(o.buffer(0.001)) for o in squares):
            squares.append(s)
    return Polygon(
        [(12.0, 55.0), (12.4, 55.0), (12.4, 55.4), (12.0, 55.4)],
        [list(s.exterior.coords)[::-1] for s in squares],
    )


def pieces_union(polygon: Polygon) -> shapely.Geometry:
    return shapely.union_all([Polygon(p.outline(), p.holes) for p in pieces.subdivide(polygon)])


@pytest.mark.parametrize("feature", shipped_features(), ids=lambda f: f["properties"]["name"])
def test_pieces_of_every_shipped_zone_cover_it_exactly(feature: dict) -> None:
    geometry = shape(feature["geometry"])
    for polygon in geometry.geoms:
        if not pieces.needs_cutting(polygon):
            continue
        cut = pieces.subdivide(polygon)
        assert all(not p.holes for p in cut)
        assert all(len(p.ring) - 1 <= pieces.MAX_VERTICES for p in cut if p.ring is not None)
        union = pieces_union(polygon)
        assert union.symmetric_difference(polygon).area <= 1e-12 * polygon.area
        # Cells lie inside the polygon, and together the pieces are not much more than it.
        for cell in (shapely.box(*p.box) for p in cut if p.is_cell):
            assert cell.difference(polygon).area <= 1e-12 * cell.area
        assert sum(Polygon(p.outline()).area for p in cut) <= polygon.area * (1 + 1e-9)


def test_holes_are_cut_through_and_no_piece_keeps_one() -> None:
    polygon = swiss_cheese(random.Random(7), 60)
    cut = pieces.subdivide(polygon)
    assert all(not p.holes for p in cut)
    assert pieces_union(polygon).symmetric_difference(polygon).area <= 1e-12 * polygon.area


def test_small_polygons_stay_whole() -> None:
    square = Polygon([(12.0, 55.0), (12.4, 55.0), (12.4, 55.4), (12.0, 55.4)])
    assert not pieces.needs_cutting(square)
    ring = [list(xy) for xy in square.exterior.coords]
    zone = parse_area({"type": "Polygon", "coordinates": [ring]})
    assert [r.kind for r in zone.rows()] == ["outer"]


async def test_fanout_over_cut_polygons_matches_shapely_on_cuts_and_edges(
    pool: asyncpg.Pool,
) -> None:
    """Random points, and points on every piece's vertices: cut lines, cell corners and the
    polygon's own vertices, all inside or on the polygon, so all reached; and points a metre
    outside the polygon's edges, never reached."""
    rng = random.Random(11)
    hillerod = next(f for f in shipped_features() if f["properties"]["name"] == "Hillerød Kommune")
    cheese = swiss_cheese(rng, 25)
    for geometry in (shape(hillerod["geometry"]), cheese):
        area = json.loads(json.dumps(shapely.geometry.mapping(geometry)))
        minx, miny, maxx, maxy = geometry.bounds
        points = []
        while len(points) < 1500:
            lon, lat = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            if geometry.boundary.distance(Point(lon, lat)) > 1e-5:
                points.append((lon, lat))
        on_pieces = []
        for polygon in getattr(geometry, "geoms", [geometry]):
            for piece in pieces.subdivide(polygon):
                on_pieces += rng.sample(piece.outline(), min(3, len(piece.outline())))
        outside = []
        for x, y in shapely.get_coordinates(geometry.boundary):
            for dx, dy in ((1.5e-5, 0), (-1.5e-5, 0), (0, 1.5e-5), (0, -1.5e-5)):
                if geometry.distance(Point(x + dx, y + dy)) > 1e-5:
                    outside.append((x + dx, y + dy))
                    break
        everyone = list(dict.fromkeys(points + on_pieces + outside))
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE subscribers CASCADE; TRUNCATE deliveries")
            ids = await add_subscribers(conn, [[p] for p in everyone])
            alert_id = await queue_alert(conn, area)
            kinds = await conn.fetch(
                "SELECT kind, count(*) FROM alert_zones WHERE alert_id = $1 GROUP BY kind",
                alert_id,
            )
            await fan_out_next(conn)
            got = await recipients(conn, alert_id)
        assert {r["kind"] for r in kinds} == {"outer", "cell"}
        by_point = dict(zip(everyone, ids, strict=True))
        expected = {by_point[p] for p in points if geometry.covers(Point(p))}
        expected |= {by_point[p] for p in on_pieces}
        assert 0 < len(expected) < len(everyone)
        assert not {by_point[p] for p in outside} & got
        assert got == expected
