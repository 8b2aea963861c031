"""The `area` of an alert as the API accepts it: a GeoJSON Polygon or MultiPolygon geometry
(RFC 7946: positions are [longitude, latitude]) or a circle. Typed, so the OpenAPI document says
what is accepted and nothing arrives that is not a finite number where a coordinate belongs; the
geometry itself (closed rings, validity, ranges) is checked by `geo.parse_area`, which names the
position at fault. Unknown members are refused; a GeoJSON `bbox` is accepted and dropped."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from broadcaster.api.fields import Coordinate

Position = Annotated[list[Coordinate], Field(min_length=2, max_length=3)]
Ring = Annotated[list[Position], Field(min_length=4)]
BBox = Annotated[list[Coordinate], Field(min_length=4, max_length=6)]

HILLEROD: list[Any] = [
    [12.25, 55.90],
    [12.35, 55.90],
    [12.35, 55.95],
    [12.25, 55.95],
    [12.25, 55.90],
]


class _Geometry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def zone_input(self) -> dict[str, Any]:
        """The canonical form that is parsed, hashed for idempotency and stored."""
        return self.model_dump(exclude={"bbox"})


class PolygonArea(_Geometry):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"type": "Polygon", "coordinates": [HILLEROD]}]},
    )
    type: Literal["Polygon"]
    coordinates: Annotated[list[Ring], Field(min_length=1)]
    bbox: BBox | None = None


class MultiPolygonArea(_Geometry):
    type: Literal["MultiPolygon"]
    coordinates: Annotated[list[Annotated[list[Ring], Field(min_length=1)]], Field(min_length=1)]
    bbox: BBox | None = None


class CircleArea(_Geometry):
    """Everyone within `radius_m` metres (great-circle distance) of `center` [lon, lat]."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"type": "Circle", "center": [12.3111, 55.9267], "radius_m": 2500}]
        },
    )
    type: Literal["Circle"]
    center: Position
    radius_m: Annotated[Coordinate, Field(gt=0, le=500_000)]


Area = Annotated[PolygonArea | MultiPolygonArea | CircleArea, Field(discriminator="type")]
# The tags pydantic puts in an error's location inside a discriminated union; problems.py leaves
# them out, so a location reads "area.coordinates[0][1]".
UNION_TAGS = frozenset({"Polygon", "MultiPolygon", "Circle"})
