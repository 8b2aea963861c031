"""The `area` of an alert as the API accepts it: a GeoJSON Polygon or MultiPolygon geometry
(RFC 7946: positions are [longitude, latitude]), a circle, named zones ({"zones": [...]}) or
postal codes ({"postal_codes": [...]}). Typed, so the OpenAPI document says what is accepted and
nothing arrives that is not a finite number where a coordinate belongs; the geometry itself
(closed rings, validity, ranges) is checked by `geo.parse_area`, which names the position at
fault, and names and codes by the database. Unknown members are refused; a GeoJSON `bbox` is
accepted and dropped."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from broadcaster.api.fields import Coordinate, PostalCode, ZoneName

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


# An alert names at most this many zones or postal codes.
MAX_TARGETS = 1000


class ZonesArea(_Geometry):
    """Everyone in the named zones (GET /v1/zones lists them; names compare case-insensitively)
    and everyone registered by a postal code whose zone they overlap."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"zones": ["Hillerød Kommune", "3480 Fredensborg"]}]},
    )
    zones: Annotated[list[ZoneName], Field(min_length=1, max_length=MAX_TARGETS)]


class PostalCodesArea(_Geometry):
    """Everyone registered by one of the postal codes and everyone whose point lies in one."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"postal_codes": ["3400", "3480"]}]}
    )
    postal_codes: Annotated[list[PostalCode], Field(min_length=1, max_length=MAX_TARGETS)]


def _area_kind(value: Any) -> str | None:
    """The union's tag: a geometry's type, or which list of names it carries."""
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            return kind
        if "type" not in value:
            for key, tag in (("zones", "Zones"), ("postal_codes", "PostalCodes")):
                if key in value:
                    return tag
        return None
    return _TAGS.get(type(value))


_TAGS: dict[type, str] = {
    PolygonArea: "Polygon",
    MultiPolygonArea: "MultiPolygon",
    CircleArea: "Circle",
    ZonesArea: "Zones",
    PostalCodesArea: "PostalCodes",
}
AREA_KINDS = (
    "area must be a GeoJSON Polygon or MultiPolygon geometry, a Circle, "
    '{"zones": [names]} or {"postal_codes": [codes]}'
)
Area = Annotated[
    Annotated[PolygonArea, Tag("Polygon")]
    | Annotated[MultiPolygonArea, Tag("MultiPolygon")]
    | Annotated[CircleArea, Tag("Circle")]
    | Annotated[ZonesArea, Tag("Zones")]
    | Annotated[PostalCodesArea, Tag("PostalCodes")],
    Discriminator(_area_kind, custom_error_type="area_kind", custom_error_message=AREA_KINDS),
]
# The tags pydantic puts in an error's location inside a discriminated union; problems.py leaves
# them out, so a location reads "area.coordinates[0][1]".
UNION_TAGS = frozenset(
    {
        "Polygon",
        "MultiPolygon",
        "Circle",
        "Zones",
        "PostalCodes",
        "Feature",
        "FeatureCollection",
        "Point",
        "PostalCode",
    }
)
