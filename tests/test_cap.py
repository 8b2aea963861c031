"""CAP 1.2 reading and mapping (ingest/cap.py), without the API: samples in, the alert out;
hostile XML (XXE, billion laughs, external DTDs) refused before anything is expanded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from shapely.geometry import Point

from broadcaster.ingest import cap
from broadcaster.ingest.geo import CircleZone, PolygonZone

HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'


def area_xml(
    polygons: list[str] = (),  # type: ignore[assignment]
    circles: list[str] = (),  # type: ignore[assignment]
    postal_codes: list[str] = (),  # type: ignore[assignment]
    desc: str = "Hillerød",
) -> str:
    parts = [f"<areaDesc>{desc}</areaDesc>"]
    parts += [f"<polygon>{p}</polygon>" for p in polygons]
    parts += [f"<circle>{c}</circle>" for c in circles]
    parts += [
        f"<geocode><valueName>postalCode</valueName><value>{code}</value></geocode>"
        for code in postal_codes
    ]
    return "<area>" + "".join(parts) + "</area>"


def info_xml(
    areas: list[str],
    language: str | None = "da-DK",
    headline: str = "Politiet: indbrud i området",
    description: str = "Flere indbrud i villaer i aften.",
    instruction: str = "Se noget? Ring 114.",
    urgency: str = "Immediate",
    severity: str = "Moderate",
    expires: str | None = None,
) -> str:
    parts = [f"<language>{language}</language>"] if language else []
    parts += [
        "<category>Security</category><event>Indbrud</event>",
        f"<urgency>{urgency}</urgency><severity>{severity}</severity>",
        "<certainty>Observed</certainty>",
    ]
    if expires:
        parts.append(f"<expires>{expires}</expires>")
    for name, value in (
        ("headline", headline),
        ("description", description),
        ("instruction", instruction),
    ):
        if value:
            parts.append(f"<{name}>{value}</{name}>")
    return "<info>" + "".join(parts) + "".join(areas) + "</info>"


def cap_xml(
    infos: list[str],
    identifier: str = "NSJP-2026-4711",
    sender: str = "nsjp@politi.dk",
    status: str = "Actual",
    msg_type: str = "Alert",
    references: str | None = None,
    namespace: str = cap.NAMESPACE,
    prolog: str = HEADER,
) -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    return (
        f'{prolog}<alert xmlns="{namespace}"><identifier>{identifier}</identifier>'
        f"<sender>{sender}</sender><sent>2026-12-07T20:00:00+01:00</sent>"
        f"<status>{status}</status><msgType>{msg_type}</msgType><scope>Public</scope>"
        f"{refs}{''.join(infos)}</alert>"
    ).encode()


SQUARE = "55.90,12.25 55.90,12.35 55.95,12.35 55.95,12.25 55.90,12.25"


def test_a_polygon_alert_maps_onto_an_alert() -> None:
    message = cap.parse(
        cap_xml([info_xml([area_xml([SQUARE])], expires="2026-12-08T06:00:00+01:00")])
    )
    assert (message.identifier, message.sender, message.status) == (
        "NSJP-2026-4711",
        "nsjp@politi.dk",
        "Actual",
    )
    assert message.idempotency_key == "cap:nsjp@politi.dk,NSJP-2026-4711"
    main, others, _ = cap.texts(message)
    assert main == (
        "Politiet: indbrud i området\nFlere indbrud i villaer i aften.\nSe noget? Ring 114."
    )
    assert others == {}
    assert cap.priority(message.infos) == "high"
    assert cap.expires(message) == datetime(2026, 12, 8, 5, 0, tzinfo=UTC)
    target = cap.target(message)
    assert isinstance(target.zone, PolygonZone) and target.postal_codes == []
    shape = target.zone.shape()
    # latitude first in CAP: the square spans lon 12.25-12.35, lat 55.90-55.95
    assert shape.bounds == pytest.approx((12.25, 55.90, 12.35, 55.95))
    assert shape.contains(Point(12.30, 55.93)) and not shape.contains(Point(55.93, 12.30))


def test_a_single_circle_stays_a_circle_in_metres() -> None:
    message = cap.parse(cap_xml([info_xml([area_xml(circles=["55.93,12.30 2.5"])])]))
    target = cap.target(message)
    assert target.zone == CircleZone(12.30, 55.93, 2500.0)
    assert target.area["type"] == "Circle"


def test_several_areas_are_one_union_with_postal_codes() -> None:
    other = "55.80,12.40 55.80,12.45 55.85,12.45 55.85,12.40 55.80,12.40"
    message = cap.parse(
        cap_xml(
            [
                info_xml(
                    [
                        area_xml([SQUARE], circles=["55.95,12.35 1"]),
                        area_xml([other], postal_codes=["3400", "3480"]),
                        area_xml(postal_codes=["3400"]),
                    ]
                )
            ]
        )
    )
    target = cap.target(message)
    assert target.postal_codes == ["3400", "3480"]
    assert isinstance(target.zone, PolygonZone)
    shape = target.zone.shape()
    for lon, lat in [(12.30, 55.93), (12.42, 55.82), (12.355, 55.955)]:  # square, other, circle
        assert shape.contains(Point(lon, lat))
    assert not shape.contains(Point(12.38, 55.88))


@pytest.mark.parametrize(
    ("urgency", "severity", "expected"),
    [
        ("Immediate", "Extreme", "emergency"),
        ("Immediate", "Severe", "emergency"),
        ("Immediate", "Moderate", "high"),
        ("Immediate", "Minor", "high"),
        ("Expected", "Extreme", "high"),
        ("Expected", "Severe", "high"),
        ("Expected", "Moderate", "normal"),
        ("Future", "Extreme", "normal"),
        ("Past", "Severe", "normal"),
        ("Unknown", "Unknown", "normal"),
    ],
)
def test_priority_table(urgency: str, severity: str, expected: str) -> None:
    info = info_xml([area_xml([SQUARE])], urgency=urgency, severity=severity)
    assert cap.priority(cap.parse(cap_xml([info])).infos) == expected


def test_languages_become_texts_by_language() -> None:
    message = cap.parse(
        cap_xml(
            [
                info_xml([area_xml([SQUARE])], language="en-US", headline="Police: burglaries"),
                info_xml([area_xml([SQUARE])], language=None, headline="Politiet: indbrud"),
                info_xml([area_xml([SQUARE])], language="de", headline="Polizei: Einbrüche"),
            ]
        )
    )
    main, others, where = cap.texts(message)
    assert main.startswith("Politiet: indbrud")  # no language: da-DK
    assert set(others) == {"en", "de"} and others["en"].startswith("Police: burglaries")
    assert where == {"message": "info[1]", "en": "info[0]", "de": "info[2]"}


def test_without_danish_the_first_info_is_the_message() -> None:
    message = cap.parse(
        cap_xml(
            [
                info_xml([area_xml([SQUARE])], language="en", headline="Police"),
                info_xml([area_xml([SQUARE])], language="de", headline="Polizei"),
            ]
        )
    )
    main, others, _ = cap.texts(message)
    assert main.startswith("Police") and list(others) == ["de"]


def _error(body: bytes) -> cap.CapError:
    with pytest.raises(cap.CapError) as caught:
        message = cap.parse(body)
        cap.texts(message)
        cap.target(message)
    return caught.value


@pytest.mark.parametrize(
    ("area", "where", "words"),
    [
        (area_xml(["55.90,12.25 55.90,12.35 55.95,12.35"]), "info[0].area[0].polygon", "4"),
        (
            area_xml([SQUARE.rsplit(" ", 1)[0] + " 55.91,12.25"]),
            "info[0].area[0].polygon",
            "closed",
        ),
        (area_xml([SQUARE.replace("55.95,12.35", "95.5,12.35")]), "polygon[2]", "latitude"),
        (area_xml([SQUARE.replace("55.95,12.35", "55.95;12.35")]), "polygon[2]", "pair"),
        (
            area_xml(["55.90,12.25 55.95,12.35 55.90,12.35 55.95,12.25 55.90,12.25"]),
            "info[0].area[0].polygon",
            "not valid",
        ),
        (area_xml(circles=["55.93,12.30"]), "info[0].area[0].circle", "radius"),
        (area_xml(circles=["55.93,12.30 -1"]), "info[0].area[0].circle", "radius"),
        (area_xml(circles=["55.93,12.30 900"]), "info[0].area[0].circle", "500 km"),
        (area_xml(), "info[0].area[0]", "polygon"),
    ],
)
def test_area_errors_name_the_element(area: str, where: str, words: str) -> None:
    error = _error(cap_xml([info_xml([area_xml([SQUARE]), area])]))
    assert error.status == 422
    assert where.replace("area[0]", "area[1]") in str(error) and words in str(error), str(error)


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        (b"<alert><identifier>", 400, "body"),
        (
            cap_xml(
                [info_xml([area_xml([SQUARE])])], namespace="urn:oasis:names:tc:emergency:cap:1.1"
            ),
            422,
            "alert",
        ),
        (cap_xml([info_xml([area_xml([SQUARE])])], status="Rehearsal"), 422, "status"),
        (cap_xml([info_xml([area_xml([SQUARE])])], msg_type="Ack"), 422, "msgType"),
        (
            cap_xml([info_xml([area_xml([SQUARE])])]).replace(b">Public<", b">Restricted<"),
            422,
            "scope",
        ),
        (cap_xml([info_xml([area_xml([SQUARE])])], msg_type="Cancel"), 422, "references"),
        (cap_xml([info_xml([area_xml([SQUARE])])], identifier="a b"), 422, "identifier"),
        (cap_xml([]), 422, "info"),
        (cap_xml([info_xml([])]), 422, "info[0].area"),
        (cap_xml([info_xml([area_xml([SQUARE])], urgency="Soon")]), 422, "info[0].urgency"),
        (cap_xml([info_xml([area_xml([SQUARE])], expires="tomorrow")]), 422, "info[0].expires"),
        (cap_xml([info_xml([area_xml([SQUARE])], language="dansk!")]), 422, "info[0].language"),
        (
            cap_xml([info_xml([area_xml([SQUARE])]), info_xml([area_xml([SQUARE])])]),
            422,
            "info[1].language",
        ),
        (
            cap_xml([info_xml([area_xml([SQUARE])], headline="", description="", instruction="")]),
            422,
            "info[0]",
        ),
    ],
)
def test_document_errors_name_the_element(body: bytes, status: int, where: str) -> None:
    error = _error(body)
    assert (error.status, error.where) == (status, where), str(error)


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&xxe;</identifier></alert>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol3;</identifier></alert>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</identifier></alert>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote;]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>"""


@pytest.mark.parametrize("body", [XXE, BILLION_LAUGHS, EXTERNAL_DTD, PARAMETER_ENTITY])
def test_dtds_and_entities_are_refused(body: bytes) -> None:
    error = _error(body)
    assert error.status == 400 and error.title == "XML not accepted", str(error)


def test_the_documented_example_is_an_alert() -> None:
    message = cap.parse(cap.EXAMPLE.encode())
    target = cap.target(message)
    assert target.postal_codes == ["3480"] and isinstance(target.zone, PolygonZone)
    assert cap.priority(message.infos) == "high"


def test_the_union_is_bounded_before_it_is_computed() -> None:
    circles = [f"55.9,12.{i:04d} 1" for i in range(1600)]  # 1,600 x 65 positions
    error = _error(cap_xml([info_xml([area_xml(circles=circles)])]))
    assert error.where == "info.area" and "positions" in str(error)
    codes = [str(1000 + i) for i in range(1001)]
    error = _error(cap_xml([info_xml([area_xml(postal_codes=codes)])]))
    assert error.where == "info.area" and "postal codes" in str(error)
