"""Alert zones: validation of GeoJSON (Multi)Polygons and circles, and their rows in alert_zones
(and zone_parts, for named zones).

Semantics follow RFC 7946: positions are [lon, lat], edges are straight lines in lon/lat, rings
are closed. A point on the boundary counts as inside. Circles use great-circle distance on a
sphere of the mean Earth radius.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

import shapely
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.validation import explain_validity

from broadcaster.ingest.pieces import needs_cutting, subdivide

EARTH_RADIUS_M = 6_371_008.8
# Positions are stored in micro-degrees. PostgreSQL's geometric operators compare with a fixed
# absolute tolerance of 1e-6 (also on cross products), which in plain degrees would count points
# up to ~10 m outside an edge as "on the boundary". Scaled, the tolerance is far below 1 mm.
SCALE = 1_000_000.0
# A point this close to a ring (in scaled units: 1e-9 degree, ~0.1 mm) is on the boundary.
BOUNDARY_TOLERANCE = 0.001
MAX_RADIUS_M = 500_000.0
MAX_POSITIONS = 100_000
CIRCLE_VERTICES = 64

Position = tuple[float, float]
Ring = list[Position]


class AreaError(ValueError):
    """The area is not a valid zone; the message says why, for a human."""


@dataclass(frozen=True)
class PolygonPart:
    outer: Ring
    holes: list[Ring]


@dataclass(frozen=True)
class ZoneRow:
    """One row of alert_zones, as parameters (PostgreSQL geometric literals as text)."""

    part: int
    kind: str
    ring: str | None
    boundary: str | None
    center: str | None
    radius_m: float | None
    bbox: str


@dataclass(frozen=True)
class PolygonZone:
    parts: list[PolygonPart]

    kind = "polygon"

    def rows(self) -> list[ZoneRow]:
        """Small polygons without holes as they are; the others cut into cells and pieces
        (pieces.py). Every cell and piece is a part of its own."""
        rows: list[ZoneRow] = []
        for part in self.parts:
            polygon = ShapelyPolygon(part.outer, part.holes)
            if not needs_cutting(polygon):
                rows += _polygon_rows(len(rows), part.outer, part.holes)
                continue
            for piece in subdivide(polygon):
                if piece.ring is None:
                    x0, y0, x1, y1 = piece.box
                    box = f"({_pg_point(x0, y0)},{_pg_point(x1, y1)})"
                    ring = _pg_polygon(piece.outline())
                    rows.append(ZoneRow(len(rows), "cell", ring, None, None, None, box))
                else:
                    rows += _polygon_rows(len(rows), piece.ring, list(piece.holes))
        return rows

    def whole_rows(self, first_part: int = 0) -> list[ZoneRow]:
        """Every polygon as it is, uncut: for testing a few points that have no index (the
        preview's sample), where a large polygon's hundreds of pieces would each be tried."""
        rows: list[ZoneRow] = []
        for i, part in enumerate(self.parts):
            rows += _polygon_rows(first_part + i, part.outer, part.holes)
        return rows

    def shape(self) -> Any:
        """The zone as a shapely (Multi)Polygon, in degrees."""
        polygons = [ShapelyPolygon(p.outer, p.holes) for p in self.parts]
        return polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)


def ring_rows(kind: str, first_part: int, rings: list[Ring]) -> list[ZoneRow]:
    """Rows of `kind` with a ring and its box each, one part per ring (a postal code's core)."""
    return [
        ZoneRow(first_part + i, kind, _pg_polygon(ring), None, None, None, _pg_box(ring))
        for i, ring in enumerate(rings)
    ]


def _polygon_rows(part: int, outer: Ring, holes: list[Ring]) -> list[ZoneRow]:
    rows = [ZoneRow(part, "outer", _pg_polygon(outer), _pg_path(outer), None, None, _pg_box(outer))]
    for hole in holes:
        rows.append(
            ZoneRow(part, "hole", _pg_polygon(hole), _pg_path(hole), None, None, _pg_box(hole))
        )
    return rows


@dataclass(frozen=True)
class CircleZone:
    lon: float
    lat: float
    radius_m: float

    kind = "circle"

    def bbox(self) -> tuple[float, float, float, float]:
        """A lon/lat box that contains the whole circle (an index pre-filter, never exact)."""
        dlat = math.degrees(self.radius_m / EARTH_RADIUS_M) * 1.001
        min_lat, max_lat = self.lat - dlat, self.lat + dlat
        if min_lat <= -90 or max_lat >= 90:
            return (-180.0, max(min_lat, -90.0), 180.0, min(max_lat, 90.0))
        # The widest point of the circle in longitude is nearer the pole than its centre.
        widest = max(abs(min_lat), abs(max_lat))
        dlon = math.degrees(self.radius_m / (EARTH_RADIUS_M * math.cos(math.radians(widest))))
        dlon *= 1.001
        if self.lon - dlon < -180 or self.lon + dlon > 180:
            return (-180.0, min_lat, 180.0, max_lat)
        return (self.lon - dlon, min_lat, self.lon + dlon, max_lat)

    def outline(self) -> Ring:
        """A closed ring around the circle (its circumscribed 64-gon, from points on the
        sphere), for overlap tests; the box where the circle reaches a pole or the antimeridian.
        Never inside the circle by more than rounding, so an overlap it finds may be a few
        metres beyond the circle, never short of it."""
        x0, y0, x1, y1 = self.bbox()
        if x0 == -180.0 and x1 == 180.0:
            return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        # Vertices on a circle of radius r / cos(pi / n) put the polygon's edges outside the
        # circle of radius r.
        reach = self.radius_m / math.cos(math.pi / CIRCLE_VERTICES) / EARTH_RADIUS_M
        lat1, lon1 = math.radians(self.lat), math.radians(self.lon)
        ring = []
        for i in range(CIRCLE_VERTICES):
            bearing = 2 * math.pi * i / CIRCLE_VERTICES
            lat2 = math.asin(
                math.sin(lat1) * math.cos(reach)
                + math.cos(lat1) * math.sin(reach) * math.cos(bearing)
            )
            lon2 = lon1 + math.atan2(
                math.sin(bearing) * math.sin(reach) * math.cos(lat1),
                math.cos(reach) - math.sin(lat1) * math.sin(lat2),
            )
            ring.append((math.degrees(lon2), math.degrees(lat2)))
        return [*ring, ring[0]]

    def rows(self) -> list[ZoneRow]:
        x0, y0, x1, y1 = self.bbox()
        return [
            ZoneRow(
                0,
                "circle",
                _pg_polygon(self.outline()),
                None,
                _pg_point(self.lon, self.lat),
                self.radius_m,
                f"({_pg_point(x0, y0)},{_pg_point(x1, y1)})",
            )
        ]


Zone = PolygonZone | CircleZone


def parse_area(area: Any) -> Zone:
    """Validate a GeoJSON Polygon/MultiPolygon geometry or a Circle; raise AreaError."""
    if not isinstance(area, dict):
        raise AreaError("area must be a GeoJSON Polygon or MultiPolygon geometry or a Circle")
    kind = area.get("type")
    if kind == "Circle":
        return _parse_circle(area)
    coordinates = area.get("coordinates")
    if kind == "Polygon":
        parts = [_parse_polygon(coordinates, "coordinates")]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            raise AreaError("MultiPolygon coordinates must be a non-empty array of polygons")
        parts = [_parse_polygon(p, f"coordinates[{i}]") for i, p in enumerate(coordinates)]
    else:
        raise AreaError(f"area.type must be 'Polygon', 'MultiPolygon' or 'Circle', not {kind!r}")
    total = sum(len(p.outer) + sum(len(h) for h in p.holes) for p in parts)
    if total > MAX_POSITIONS:
        raise AreaError(f"area has {total} positions; at most {MAX_POSITIONS} are accepted")
    _check_valid(parts)
    return PolygonZone(parts)


def _parse_circle(area: dict[str, Any]) -> CircleZone:
    center = area.get("center")
    radius = area.get("radius_m")
    lon, lat = _position(center, "center")
    if not _is_number(radius) or not math.isfinite(radius) or radius <= 0:
        raise AreaError("radius_m must be a positive number of metres")
    assert isinstance(radius, int | float)
    if radius > MAX_RADIUS_M:
        raise AreaError(f"radius_m must be at most {MAX_RADIUS_M:.0f} metres")
    return CircleZone(lon, lat, float(radius))


def _parse_polygon(coordinates: Any, where: str) -> PolygonPart:
    if not isinstance(coordinates, list) or not coordinates:
        raise AreaError(f"{where} must be a non-empty array of linear rings")
    rings = [_parse_ring(r, f"{where}[{i}]") for i, r in enumerate(coordinates)]
    return PolygonPart(rings[0], rings[1:])


def _parse_ring(ring: Any, where: str) -> Ring:
    if not isinstance(ring, list):
        raise AreaError(f"{where} must be an array of positions")
    positions = [_position(p, f"{where}[{i}]") for i, p in enumerate(ring)]
    if len(positions) < 4:
        raise AreaError(f"{where}: a linear ring needs at least 4 positions")
    if positions[0] != positions[-1]:
        raise AreaError(f"{where}: the ring is not closed (first and last positions differ)")
    return positions


def _position(value: Any, where: str) -> Position:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise AreaError(f"{where} must be a [lon, lat] position")
    if not all(_is_number(v) and math.isfinite(v) for v in value):
        raise AreaError(f"{where} must contain numbers")
    lon, lat = float(value[0]), float(value[1])
    if not -180 <= lon <= 180:
        raise AreaError(f"{where}: longitude {lon} is out of range [-180, 180]")
    if not -90 <= lat <= 90:
        raise AreaError(f"{where}: latitude {lat} is out of range [-90, 90]")
    return (lon, lat)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_valid(parts: list[PolygonPart]) -> None:
    polygons = []
    for i, part in enumerate(parts):
        polygon = ShapelyPolygon(part.outer, part.holes)
        if not polygon.is_valid:
            raise AreaError(f"polygon {i} is not valid: {explain_validity(polygon)}")
        if polygon.area == 0:
            raise AreaError(f"polygon {i} has no area")
        polygons.append(polygon)
    if len(polygons) > 1 and not shapely.MultiPolygon(polygons).is_valid:
        raise AreaError("the polygons of the MultiPolygon overlap")


def _pg_point(lon: float, lat: float) -> str:
    return f"({lon * SCALE!r},{lat * SCALE!r})"


def _pg_points(ring: Ring) -> str:
    return ",".join(_pg_point(x, y) for x, y in ring)


def _pg_polygon(ring: Ring) -> str:
    return f"({_pg_points(ring[:-1])})"


def _pg_path(ring: Ring) -> str:
    # A closed path: '(...)' rather than '[...]'.
    return f"({_pg_points(ring[:-1])})"


def _pg_box(ring: Ring) -> str:
    xs = [x for x, _ in ring]
    ys = [y for _, y in ring]
    return f"({_pg_point(min(xs), min(ys))},{_pg_point(max(xs), max(ys))})"


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (the same formula the fan-out SQL uses)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
