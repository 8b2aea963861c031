"""Named zones as the API and `broadcaster import-zones` accept them: a GeoJSON Feature or
FeatureCollection (RFC 7946) whose features have a Polygon or MultiPolygon geometry and the
properties `name`, `kind` and, where the zone has one, `code`. Other properties are ignored
(files exported from GIS tools carry many); other members of a Feature are refused. A `crs`
member (written by older GDAL versions) is accepted only when it names WGS 84 longitude and
latitude, the only coordinates RFC 7946 allows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broadcaster.api.area_schema import HILLEROD, BBox, MultiPolygonArea, PolygonArea
from broadcaster.api.fields import BIGINT_MAX, CleanStr, ZoneCode, ZoneName
from broadcaster.ingest.zones import ZoneInput

Kind = Literal["police_district", "municipality", "postal_code", "custom"]
NumberCode = Annotated[int, Field(strict=True, ge=0, le=BIGINT_MAX)]
# The names of WGS 84 longitude/latitude a `crs` member may carry.
WGS84 = frozenset(
    {"urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "EPSG:4326", "CRS84"}
)


class ZoneProperties(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: ZoneName
    kind: Kind
    code: ZoneCode | NumberCode | None = None

    @model_validator(mode="after")
    def _postal_codes_have_codes(self) -> ZoneProperties:
        if self.kind == "postal_code" and self.code is None:
            raise ValueError("a postal_code zone needs its code in 'code'")
        return self


Geometry = Annotated[PolygonArea | MultiPolygonArea, Field(discriminator="type")]


class ZoneFeature(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "type": "Feature",
                    "properties": {"name": "Hillerød centrum", "kind": "custom"},
                    "geometry": {"type": "Polygon", "coordinates": [HILLEROD]},
                }
            ]
        },
    )
    type: Literal["Feature"]
    id: Annotated[CleanStr, Field(max_length=200)] | NumberCode | None = None
    geometry: Geometry
    properties: ZoneProperties
    bbox: BBox | None = None

    def to_input(self) -> ZoneInput:
        p = self.properties
        code = None if p.code is None else str(p.code)
        return ZoneInput(p.kind, p.name, code, self.geometry.zone_input())


class CrsName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(max_length=100)]


class Crs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["name"]
    properties: CrsName

    @model_validator(mode="after")
    def _wgs84(self) -> Crs:
        if self.properties.name not in WGS84:
            raise ValueError(
                "coordinates must be WGS 84 longitude and latitude (RFC 7946); "
                f"reproject from {self.properties.name!r} first"
            )
        return self


class ZoneFeatureCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["FeatureCollection"]
    features: Annotated[list[ZoneFeature], Field(min_length=1)]
    bbox: BBox | None = None
    # Written by GDAL: the layer's name (ignored) and its coordinate reference system.
    name: Annotated[CleanStr, Field(max_length=200)] | None = None
    crs: Crs | None = None


Zones = Annotated[ZoneFeature | ZoneFeatureCollection, Field(discriminator="type")]


def zone_inputs(body: ZoneFeature | ZoneFeatureCollection) -> tuple[list[ZoneInput], str | None]:
    """The zones of a request and where its features are ("features", None for one Feature)."""
    if isinstance(body, ZoneFeature):
        return [body.to_input()], None
    return [f.to_input() for f in body.features], "features"
