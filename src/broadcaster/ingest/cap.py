"""CAP 1.2 (OASIS Common Alerting Protocol): reading an alert message and mapping it onto an
alert as the JSON body describes one (docs/cap.md has the mapping and its tables).

The XML is parsed by defusedxml with DTDs, entity declarations and external references
forbidden: a document that has any is refused as a whole, before anything is expanded or
fetched, so nothing is read from disk or network and no entity can multiply (billion laughs).
Every error names the element at fault, `info[0].area[1].polygon` style.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import shapely
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from shapely.geometry import Polygon as ShapelyPolygon

from broadcaster.ingest.geo import (
    CIRCLE_VERTICES,
    MAX_POSITIONS,
    MAX_RADIUS_M,
    AreaError,
    CircleZone,
    Ring,
    Zone,
    parse_area,
)

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
MEDIA_TYPE = "application/cap+xml"
DEFAULT_LANGUAGE = "da-DK"
STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
POSTAL_CODE = "postalCode"  # the geocode valueName that names a postal-code zone
MAX_INFOS = 20
MAX_AREAS = 1_000
MAX_TARGETS = 1_000  # postal codes per alert, as for a JSON alert (api/area_schema.py)

# urgency x severity -> priority. Anything not listed is normal. An alert with several info
# blocks takes the most urgent of theirs.
PRIORITY: dict[tuple[str, str], str] = {
    ("Immediate", "Extreme"): "emergency",
    ("Immediate", "Severe"): "emergency",
    ("Immediate", "Moderate"): "high",
    ("Immediate", "Minor"): "high",
    ("Immediate", "Unknown"): "high",
    ("Expected", "Extreme"): "high",
    ("Expected", "Severe"): "high",
}
_RANK = {"emergency": 0, "high": 1, "normal": 2}

# CAP's dateTime: 2026-12-07T21:00:00+01:00, always with an offset ("-00:00" is UTC).
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LANGUAGE = re.compile(r"([A-Za-z]{2})(-[A-Za-z0-9]{1,8})*")


EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>NSJP-2026-4711</identifier>
  <sender>nsjp@politi.dk</sender>
  <sent>2026-12-07T20:00:00+01:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>da-DK</language>
    <category>Security</category>
    <event>Indbrud</event>
    <urgency>Immediate</urgency>
    <severity>Moderate</severity>
    <certainty>Observed</certainty>
    <headline>Politiet: indbrud i området</headline>
    <instruction>Se noget? Ring 114.</instruction>
    <area>
      <areaDesc>Hillerød</areaDesc>
      <polygon>55.90,12.25 55.90,12.35 55.95,12.35 55.95,12.25 55.90,12.25</polygon>
      <geocode><valueName>postalCode</valueName><value>3480</value></geocode>
    </area>
  </info>
</alert>
"""


class CapError(ValueError):
    """The document is not an alert we can take; `where` names the element."""

    def __init__(self, status: int, title: str, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.status = status
        self.title = title
        self.where = where


def _invalid(where: str, message: str) -> CapError:
    return CapError(422, "Invalid CAP alert", where, message)


@dataclass(frozen=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True)
class CapArea:
    where: str
    description: str
    polygons: list[Ring]  # (lon, lat) positions, as geo.py has them
    circles: list[Circle]
    postal_codes: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "areaDesc": self.description,
            "polygons": [[[lat, lon] for lon, lat in ring] for ring in self.polygons],
            "circles": [[c.lat, c.lon, c.radius_km] for c in self.circles],
            "postal_codes": self.postal_codes,
        }


@dataclass(frozen=True)
class CapInfo:
    where: str
    language: str  # as the document has it, e.g. "da-DK"
    urgency: str
    severity: str
    headline: str
    description: str
    instruction: str
    expires: datetime | None
    areas: list[CapArea]


@dataclass(frozen=True)
class Reference:
    sender: str
    identifier: str
    sent: str


@dataclass(frozen=True)
class CapMessage:
    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    references: list[Reference]
    infos: list[CapInfo] = field(default_factory=list)

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.sender, self.identifier)


def idempotency_key(sender: str, identifier: str) -> str:
    """The key a CAP alert is stored under: its sender and identifier (CAP's own unique pair)."""
    return f"cap:{sender},{identifier}"


# ---------------------------------------------------------------- reading


def parse(body: bytes) -> CapMessage:
    """Read a CAP 1.2 <alert>; raise CapError (400 for XML that is not accepted as such, 422 for
    an alert that is not valid)."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CapError(
            400,
            "XML not accepted",
            "body",
            f"DTDs, entity declarations and external references are not accepted ({exc})",
        ) from None
    except (ParseError, ValueError) as exc:
        raise CapError(400, "Malformed XML", "body", f"not well-formed XML ({exc})") from None
    if root.tag != _q("alert"):
        raise _invalid("alert", f"the root element must be <alert> in the namespace {NAMESPACE}")
    status = _choice(root, "status", "status", STATUSES)
    msg_type = _choice(root, "msgType", "msgType", MSG_TYPES)
    scope = _choice(root, "scope", "scope", ("Public", "Restricted", "Private"))
    if scope != "Public":
        raise _invalid("scope", f"only Public alerts go to citizens, not {scope}")
    if msg_type in ("Ack", "Error"):
        raise _invalid("msgType", f"an {msg_type} message acknowledges a message; it is no alert")
    references = _references(root)
    if msg_type in ("Cancel", "Update") and not references:
        raise _invalid("references", f"a {msg_type} must name the message(s) it refers to")
    infos = root.findall(_q("info"))
    if len(infos) > MAX_INFOS:
        raise _invalid("info", f"at most {MAX_INFOS} info blocks are accepted")
    if msg_type != "Cancel" and not infos:
        raise _invalid("info", f"an {msg_type} needs at least one <info> with an <area>")
    _check_positions(root)
    return CapMessage(
        identifier=_token(root, "identifier"),
        sender=_token(root, "sender"),
        sent=_datetime(_required(root, "sent", "sent"), "sent"),
        status=status,
        msg_type=msg_type,
        references=references,
        infos=[_info(e, f"info[{i}]", msg_type) for i, e in enumerate(infos)],
    )


def _check_positions(root: Element) -> None:
    """At most MAX_POSITIONS over every polygon and circle (a circle counts the positions of its
    polygon), counted before any is read, validated or joined into the union."""
    pairs = sum(len((e.text or "").split()) for e in root.iter(_q("polygon")))
    positions = pairs + (CIRCLE_VERTICES + 1) * sum(1 for _ in root.iter(_q("circle")))
    if positions > MAX_POSITIONS:
        raise _invalid(
            "info.area",
            f"the areas have {positions} positions (a circle counts {CIRCLE_VERTICES + 1}); at "
            f"most {MAX_POSITIONS} are accepted",
        )


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _text(parent: Element, name: str, where: str) -> str | None:
    element = parent.find(_q(name))
    if element is None:
        return None
    if len(element):
        raise _invalid(where, "must be text, not elements")
    text = (element.text or "").strip()
    found = _CONTROL.search(text)
    if found:
        raise _invalid(where, f"must not contain the control character U+{ord(found.group()):04X}")
    return text


def _required(parent: Element, name: str, where: str) -> str:
    text = _text(parent, name, where)
    if not text:
        raise _invalid(where, "is required")
    return text


def _choice(parent: Element, name: str, where: str, allowed: tuple[str, ...]) -> str:
    text = _required(parent, name, where)
    if text not in allowed:
        raise _invalid(where, f"must be one of {', '.join(allowed)}, not {text!r}")
    return text


def _token(parent: Element, name: str) -> str:
    text = _required(parent, name, name)
    if len(text) > 200 or re.search(r"[\s,<&]", text):
        raise _invalid(name, "must be at most 200 characters without spaces, commas, < or &")
    return text


def _datetime(text: str, where: str) -> datetime:
    if not _DATETIME.fullmatch(text):
        raise _invalid(
            where, "must be a CAP date-time with an offset, e.g. 2026-12-07T21:00:00+01:00"
        )
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid(where, str(exc)) from None


def _references(root: Element) -> list[Reference]:
    text = _text(root, "references", "references") or ""
    references = []
    for i, triple in enumerate(text.split()):
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            raise _invalid(f"references[{i}]", "must be sender,identifier,sent")
        references.append(Reference(*parts))
    return references


def _info(element: Element, where: str, msg_type: str) -> CapInfo:
    expires = _text(element, "expires", f"{where}.expires")
    areas = element.findall(_q("area"))
    if msg_type != "Cancel" and not areas:
        raise _invalid(f"{where}.area", "at least one <area> is required")
    if len(areas) > MAX_AREAS:
        raise _invalid(f"{where}.area", f"at most {MAX_AREAS} areas are accepted")
    language = _text(element, "language", f"{where}.language") or DEFAULT_LANGUAGE
    if not _LANGUAGE.fullmatch(language):
        raise _invalid(f"{where}.language", f"{language!r} is not a language such as da-DK or en")
    return CapInfo(
        where=where,
        language=language,
        urgency=_choice(element, "urgency", f"{where}.urgency", URGENCIES),
        severity=_choice(element, "severity", f"{where}.severity", SEVERITIES),
        headline=_text(element, "headline", f"{where}.headline") or "",
        description=_text(element, "description", f"{where}.description") or "",
        instruction=_text(element, "instruction", f"{where}.instruction") or "",
        expires=_datetime(expires, f"{where}.expires") if expires else None,
        areas=[_area(a, f"{where}.area[{i}]") for i, a in enumerate(areas)],
    )


def _area(element: Element, where: str) -> CapArea:
    polygons = element.findall(_q("polygon"))
    circles = element.findall(_q("circle"))

    def at(name: str, i: int, n: int) -> str:
        return f"{where}.{name}" if n == 1 else f"{where}.{name}[{i}]"

    postal_codes = []
    for i, geocode in enumerate(element.findall(_q("geocode"))):
        name = _required(geocode, "valueName", f"{where}.geocode[{i}].valueName")
        if name == POSTAL_CODE:
            code = _required(geocode, "value", f"{where}.geocode[{i}].value")
            if len(code) > 20:
                raise _invalid(f"{where}.geocode[{i}].value", "is not a postal code")
            postal_codes.append(code)
    area = CapArea(
        where=where,
        description=_text(element, "areaDesc", f"{where}.areaDesc") or "",
        polygons=[_polygon(e, at("polygon", i, len(polygons))) for i, e in enumerate(polygons)],
        circles=[_circle(e, at("circle", i, len(circles))) for i, e in enumerate(circles)],
        postal_codes=postal_codes,
    )
    if not (area.polygons or area.circles or area.postal_codes):
        raise _invalid(where, f"needs a <polygon>, a <circle> or a <geocode> {POSTAL_CODE}")
    return area


# A CAP number: decimal degrees (or kilometres) in ASCII digits. Python's float() would also
# take "5_5", "1e1", " 5" and digits of other scripts (Arabic-Indic, full-width): none is CAP.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _decimal(text: str) -> float:
    """The number a CAP decimal writes, or NaN for anything else."""
    return float(text) if _DECIMAL.fullmatch(text) else math.nan


def _pair(text: str, where: str) -> tuple[float, float]:
    """A CAP WGS 84 pair "lat,lon" as (lon, lat)."""
    parts = text.split(",")
    lat, lon = (_decimal(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise _invalid(where, f"{text[:40]!r} is not a latitude,longitude pair")
    if not -90 <= lat <= 90:
        raise _invalid(where, f"latitude {lat} is out of range [-90, 90] (CAP puts it first)")
    if not -180 <= lon <= 180:
        raise _invalid(where, f"longitude {lon} is out of range [-180, 180]")
    return (lon, lat)


def _polygon(element: Element, where: str) -> Ring:
    pairs = (element.text or "").split()
    if len(pairs) > MAX_POSITIONS:
        raise _invalid(where, f"has {len(pairs)} points; at most {MAX_POSITIONS} are accepted")
    ring = [_pair(p, f"{where}[{i}]") for i, p in enumerate(pairs)]
    if len(ring) < 4:
        raise _invalid(
            where, "a polygon needs at least 4 lat,lon pairs, the last equal to the first"
        )
    if ring[0] != ring[-1]:
        raise _invalid(where, "the polygon is not closed (the first and last pairs differ)")
    try:
        parse_area({"type": "Polygon", "coordinates": [[list(p) for p in ring]]})
    except AreaError as exc:
        raise _invalid(where, str(exc).replace("polygon 0 ", "the polygon ")) from None
    return ring


def _circle(element: Element, where: str) -> Circle:
    text = (element.text or "").strip()
    center, _, radius = text.partition(" ")
    lon, lat = _pair(center, where)
    km = _decimal(radius.strip())
    if not math.isfinite(km) or km <= 0:
        raise _invalid(where, "must be 'lat,lon radius' with a positive radius in kilometres")
    if km * 1000 > MAX_RADIUS_M:
        raise _invalid(where, f"the radius must be at most {MAX_RADIUS_M / 1000:.0f} km")
    return Circle(lat, lon, km)


# ---------------------------------------------------------------- mapping


def priority(infos: list[CapInfo]) -> str:
    """The most urgent of the infos' priorities (PRIORITY); normal without infos."""
    found = [PRIORITY.get((i.urgency, i.severity), "normal") for i in infos]
    return min(found, key=_RANK.__getitem__, default="normal")


def subscriber_language(info: CapInfo) -> str:
    """The language code subscribers have ("da") for a CAP language ("da-DK")."""
    return info.language.split("-")[0].lower()


def text(info: CapInfo) -> str:
    """The SMS of an info: its headline, description and instruction, each on a line."""
    return "\n".join(t for t in (info.headline, info.description, info.instruction) if t)


def texts(message: CapMessage) -> tuple[str, dict[str, str], dict[str, str]]:
    """(message, texts by language, where each text came from): the Danish info's text is the
    alert's message (everyone without a text in their language gets it), or the first info's
    when none is Danish; the others are texts by language."""
    by_language: dict[str, str] = {}
    where: dict[str, str] = {}
    for info in message.infos:
        language = subscriber_language(info)
        if language in by_language:
            raise _invalid(
                f"{info.where}.language",
                f"a second info in {language!r}; give one info per language",
            )
        body = text(info)
        if not body.strip():
            raise _invalid(info.where, "needs a headline, description or instruction")
        by_language[language] = body
        where[language] = info.where
    first = "da" if "da" in by_language else subscriber_language(message.infos[0])
    main = by_language.pop(first)
    where["message"] = where.pop(first)
    return main, by_language, where


def expires(message: CapMessage) -> datetime | None:
    """The earliest of the infos' expiry times."""
    found = [i.expires for i in message.infos if i.expires is not None]
    return min(found, default=None)


@dataclass(frozen=True)
class Target:
    """Where an alert goes: its stored description, its own zone (None when it names only
    postal codes), and the postal codes it names."""

    area: dict[str, Any]
    zone: Zone | None
    postal_codes: list[str]


def target(message: CapMessage) -> Target:
    """The union of every area of every info. A single circle stays a circle (exact
    great-circle distance); otherwise polygons and circles (as their circumscribed 64-gon, never
    short of the circle) are merged into one (Multi)Polygon, and postal codes are added to it."""
    areas = [a for info in message.infos for a in info.areas]
    codes = list(dict.fromkeys(c for a in areas for c in a.postal_codes))
    stored = {"type": "CAP", "areas": [a.as_json() for a in areas]}
    circles = [c for a in areas for c in a.circles]
    polygons = [ring for a in areas for ring in a.polygons]
    if len(codes) > MAX_TARGETS:
        raise _invalid("info.area", f"at most {MAX_TARGETS} postal codes are accepted")
    if len(circles) == 1 and not polygons and not codes:
        c = circles[0]
        circle = {"type": "Circle", "center": [c.lon, c.lat], "radius_m": c.radius_km * 1000}
        return Target({**circle, "areas": stored["areas"]}, parse_area(circle), [])
    shapes = [ShapelyPolygon(ring) for ring in polygons]
    shapes += [
        ShapelyPolygon(CircleZone(c.lon, c.lat, c.radius_km * 1000).outline()) for c in circles
    ]
    if not shapes:
        return Target(stored, None, codes)
    union = shapely.unary_union(shapes)
    parts = list(union.geoms) if hasattr(union, "geoms") else [union]
    coordinates = [
        [[list(p) for p in part.exterior.coords]]
        + [[list(p) for p in h.coords] for h in part.interiors]
        for part in parts
    ]
    try:
        zone = parse_area({"type": "MultiPolygon", "coordinates": coordinates})
    except AreaError as exc:
        raise _invalid("info.area", f"the union of the areas is not usable: {exc}") from None
    return Target(stored, zone, codes)
