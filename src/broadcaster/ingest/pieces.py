"""Pieces of a zone for the fan-out: large polygons cut into cells and small pieces.

PostgreSQL tests a point against a polygon by walking all of its edges, so a municipality of a
thousand vertices costs a thousand edge tests per subscriber, and a 500,000-recipient fan-out
over the 1,207-vertex district cost seven to ten times as much per recipient as over a square.
A polygon with holes or with more than MAX_WHOLE vertices is therefore cut, like PostGIS's
ST_Subdivide, by a quadtree over its bounding box into

- *cells*: boxes that lie wholly inside the polygon, where the GiST index's box test is the
  whole test (no edge is walked), and
- *pieces*: the polygon clipped to a box, with at most MAX_VERTICES vertices and no holes (a
  hole is cut through, so that "inside a piece" needs no hole test, and an overlap test against
  a piece is exact).

The union of cells and pieces is the polygon, closed: a point on an edge of the polygon is on an
edge of a piece, and a point on a cut lies on the edges of the pieces on both sides. So "inside
one of the pieces or on its boundary" is "inside the polygon or on its boundary", as before.
Small polygons without holes (at most MAX_WHOLE vertices) stay whole, stored as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

# Polygons up to this many vertices and without holes stay whole.
MAX_WHOLE = 8
# Cutting goes on for at least MIN_DEPTH levels (quadrants an eighth of the polygon's width) and
# until pieces have at most MAX_VERTICES vertices. Most of the area is then in cells, and the
# points near the boundary meet a few edges each; the pieces stay few (tens to hundreds per
# zone; each costs the fan-out one index probe, and the cutting 0.2 s for the district). One
# level deeper with 8 vertices was within the measurement's noise on 200,000 recipients and made
# two to three times as many pieces.
MIN_DEPTH = 3
MAX_VERTICES = 12
# A guard against pathological input (a spiral): pieces at this depth are kept as they are.
MAX_DEPTH = 24

Box = tuple[float, float, float, float]  # min lon, min lat, max lon, max lat


@dataclass(frozen=True)
class Piece:
    """A cell (ring is None: the box is the piece) or a polygon piece. Pieces have no holes,
    except where a pathological polygon ran into MAX_DEPTH."""

    box: Box
    ring: list[tuple[float, float]] | None  # closed ring of a polygon piece, [lon, lat]
    holes: tuple[list[tuple[float, float]], ...] = ()

    @property
    def is_cell(self) -> bool:
        return self.ring is None

    def outline(self) -> list[tuple[float, float]]:
        """The closed ring of the piece; a cell's is its box."""
        if self.ring is not None:
            return self.ring
        x0, y0, x1, y1 = self.box
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def needs_cutting(polygon: Polygon) -> bool:
    """Whether a polygon of a zone is cut into pieces (else it stays whole)."""
    return bool(polygon.interiors) or len(polygon.exterior.coords) - 1 > MAX_WHOLE


def _needs_more(polygon: Polygon, depth: int, min_depth: int) -> bool:
    return (
        depth < min_depth
        or bool(polygon.interiors)
        or len(polygon.exterior.coords) - 1 > MAX_VERTICES
    )


def subdivide(polygon: Polygon, min_depth: int = MIN_DEPTH) -> list[Piece]:
    """Cells and hole-free pieces whose union is `polygon` (which must be valid). With
    `min_depth` 0 it is cut only as far as holes and MAX_VERTICES require (for overlap tests,
    where a point's cost does not matter)."""
    return list(_cut(polygon, 0, min_depth))


def _cut(geometry: BaseGeometry, depth: int, min_depth: int) -> Iterator[Piece]:
    for polygon in _polygons(geometry):
        if not _needs_more(polygon, depth, min_depth) or depth >= MAX_DEPTH:
            holes = tuple(list(h.coords) for h in polygon.interiors)
            yield Piece(polygon.bounds, list(polygon.exterior.coords), holes)
            continue
        for quadrant in _split(polygon):
            clipped = polygon.intersection(box(*quadrant))
            if clipped.is_empty:
                continue
            if _fills(clipped, quadrant):
                yield Piece(quadrant, None)
            else:
                yield from _cut(clipped, depth + 1, min_depth)


def _split(polygon: Polygon) -> list[Box]:
    """The four quadrants of the polygon's bounding box or, when it has holes, the two halves
    either side of a vertical line through the middle of its median hole: the line cuts that
    hole (a vertical line strictly between a ring's leftmost and rightmost points crosses its
    inside), and each half has at most half of the others."""
    x0, y0, x1, y1 = polygon.bounds
    if polygon.interiors:
        middles = sorted(sum(h.bounds[0::2]) / 2 for h in polygon.interiors)
        mx = middles[len(middles) // 2]
        return [(x0, y0, mx, y1), (mx, y0, x1, y1)]
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    return [(x0, y0, mx, my), (mx, y0, x1, my), (x0, my, mx, y1), (mx, my, x1, y1)]


def _fills(clipped: BaseGeometry, quadrant: Box) -> bool:
    """Whether the clipped polygon is the whole quadrant (then the box test is exact)."""
    if not isinstance(clipped, Polygon) or clipped.interiors:
        return False
    area = (quadrant[2] - quadrant[0]) * (quadrant[3] - quadrant[1])
    # Exact for an axis-aligned rectangle: intersection points on the box's edges are the box's
    # corners, so nothing but the box has its area within rounding.
    return area > 0 and math.isclose(clipped.area, area, rel_tol=1e-12) and _is_box(clipped)


def _is_box(polygon: Polygon) -> bool:
    x0, y0, x1, y1 = polygon.bounds
    return all(x in (x0, x1) and y in (y0, y1) for x, y in polygon.exterior.coords)


def _polygons(geometry: BaseGeometry) -> Iterator[Polygon]:
    """The polygons of an intersection's result (lines and points where it only touches are
    dropped)."""
    if isinstance(geometry, Polygon):
        if not geometry.is_empty and geometry.area > 0:
            yield geometry
        return
    for part in getattr(geometry, "geoms", ()):
        yield from _polygons(part)
