"""Properties of the parsers that read what others send us, for generated input (hypothesis,
derandomized, bounded examples; no database, no server):

- SMS segments against an independent reference written here from GSM 03.38 (3GPP TS 23.038)
  and UTF-16, and against the parts the SMPP adapter actually cuts;
- receipt parsers of every gateway: GatewayAPI (signed JWT + JSON), Twilio (signed form) and SMPP
  (deliver_sm receipt text in the dialects SMSCs write): a signed receipt in, the same id and
  status out; anything else refused with `CallbackRejected`, never another exception;
- GeoJSON areas (`parse_area`) and CAP areas (`cap.parse`): never an exception but the typed
  refusal; a valid rectangle is taken as drawn; a number in an odd format (underscores, digits
  of other scripts, hex) is refused.

The keyword parser's properties are in tests/test_keywords.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from itertools import accumulate
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.test_cap import area_xml, cap_xml, info_xml

from broadcaster.ingest import cap
from broadcaster.ingest.geo import AreaError, PolygonZone, parse_area
from gateway_adapters.base import CallbackRejected, DeliveryState, GatewayConfig
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_adapters.gatewayapi_callbacks import STATUS_MAP as GATEWAYAPI_STATUSES
from gateway_adapters.gsm7 import measure
from gateway_adapters.smpp_receipts import parse_receipt_text, parse_receipt_time
from gateway_adapters.smpp_text import split_message
from gateway_adapters.twilio import TwilioAdapter
from gateway_adapters.twilio_callbacks import STATUS_MAP as TWILIO_STATUSES

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)

# -- SMS segments against an independent reference ------------------------------------------------

# GSM 03.38 default alphabet, row by row as TS 23.038 prints it (column 0x00-0x70 per row);
# None is the escape (0x1B), which is no character.
_ROWS = [
    "@Δ 0¡P¿p",
    "£_!1AQaq",
    '$Φ"2BRbr',
    "¥Γ#3CScs",
    "èΛ¤4DTdt",
    "éΩ%5EUeu",
    "ùΠ&6FVfv",
    "ìΨ'7GWgw",
    "òΣ(8HXhx",
    "ÇΘ)9IYiy",
    "\nΞ*:JZjz",
    "Ø\x00+;KÄkä",  # \x00 placeholder: 0x1B, the escape
    "øÆ,<LÖlö",
    "\ræ-=MÑmñ",
    "Åß.>NÜnü",
    "åÉ/?O§oà",
]
REFERENCE_BASIC = {row[col] for row in _ROWS for col in range(8)} - {"\x00"}
REFERENCE_EXTENSION = set("\f^{}\\[~]|€")


def reference_segments(text: str) -> tuple[str, int, int]:
    """(encoding, units, segments) the way a phone counts them: GSM-7 septets (an extension
    character is escape + character) or UTF-16 code units; 160/153 or 70/67 per part; a part
    takes whole characters only."""
    if all(c in REFERENCE_BASIC or c in REFERENCE_EXTENSION for c in text):
        encoding, single, part = "GSM-7", 160, 153
        widths = [2 if c in REFERENCE_EXTENSION else 1 for c in text]
    else:
        encoding, single, part = "UCS-2", 70, 67
        widths = [len(c.encode("utf-16-be")) // 2 for c in text]
    units = sum(widths)
    if units <= single:
        return encoding, units, 1
    # Take the longest run of whole characters that fits, again and again.
    segments, start = 0, 0
    while start < len(widths):
        ends = list(accumulate(widths[start:]))
        fits = sum(1 for e in ends if e <= part)
        start += fits
        segments += 1
    return encoding, units, segments


sms_chars = st.one_of(
    st.sampled_from(sorted(REFERENCE_BASIC)),
    st.sampled_from(sorted(REFERENCE_EXTENSION)),
    st.sampled_from(list("ÆØÅæøå")),
    st.sampled_from(list("жçñ€😀🚨中")),
    st.characters(exclude_categories=["Cs"]),  # any character a valid text can hold
)
sms_texts = st.one_of(
    st.text(alphabet=sms_chars, max_size=700),
    # Mostly GSM with a few extension or wide characters near part boundaries.
    st.builds(
        lambda n, extra, m: "a" * n + extra + "b" * m,
        st.integers(0, 320),
        st.sampled_from(["€", "[]", "😀", "ж", "€€€", ""]),
        st.integers(0, 320),
    ),
)


@PROPERTY
@given(text=sms_texts)
def test_segment_counts_agree_with_an_independent_reference(text: str) -> None:
    length = measure(text)
    assert (length.encoding, length.units, length.segments) == reference_segments(text)


@PROPERTY
@given(text=sms_texts.filter(bool))
def test_the_smpp_adapter_cuts_as_many_parts_as_the_count_says(text: str) -> None:
    parts = split_message(text, ref=7)
    assert len(parts) == measure(text).segments


# -- GatewayAPI receipts --------------------------------------------------------------------------

SECRET = "webhook-secret-of-at-least-32-bytes"
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def gatewayapi() -> GatewayApiAdapter:
    config = GatewayConfig(
        name="gw1", type="gatewayapi", base_url="http://unused", webhook_secret=SECRET
    )
    return GatewayApiAdapter(config, "https://broadcaster.example/v1/callbacks/gw1")


gatewayapi_receipts = st.fixed_dictionaries(
    {
        "id": st.integers(1, 2**53),
        "msisdn": st.integers(10_000_000, 999_999_999_999_999),
        "status": st.sampled_from(sorted(GATEWAYAPI_STATUSES)) | st.text(min_size=1, max_size=12),
    },
    optional={
        "time": st.integers(0, 2**33) | json_scalars,
        "error": json_scalars,
        "code": json_scalars,
        "userref": st.text(max_size=10) | st.none(),
        "charge_status": st.sampled_from(["NOCHARGE", "AUTHORIZED"]),
    },
)


@PROPERTY
@given(payload=gatewayapi_receipts)
def test_a_signed_gatewayapi_receipt_reads_back_its_id_number_and_status(
    gatewayapi: GatewayApiAdapter, payload: dict[str, Any]
) -> None:
    if not str(payload["status"]).strip():
        payload["status"] = "DELIVERED"
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    [update] = gatewayapi.parse_callback(
        {"X-Gwapi-Signature": token}, json.dumps(payload).encode(), ""
    )
    assert update.gateway_message_id == str(payload["id"])
    assert update.phone == f"+{payload['msisdn']}"
    status = str(payload["status"])
    expected = GATEWAYAPI_STATUSES.get(status.strip().upper(), DeliveryState.SENT)
    assert update.state is expected
    assert update.known_status == (status.strip().upper() in GATEWAYAPI_STATUSES)


@PROPERTY
@given(
    body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=60),
    claims=json_values,
    secret=st.sampled_from([SECRET, "another-secret-of-at-least-32-bytes"]),
    header=st.sampled_from(["X-Gwapi-Signature", "x-gwapi-signature", "Authorization"]),
)
def test_anything_else_sent_as_a_gatewayapi_receipt_is_refused_cleanly(
    gatewayapi: GatewayApiAdapter, body: bytes, claims: Any, secret: str, header: str
) -> None:
    token = jwt.encode(claims if isinstance(claims, dict) else {"v": claims}, secret)
    try:
        updates = gatewayapi.parse_callback({header: token}, body, "")
    except CallbackRejected as exc:
        assert exc.status in (400, 401)
        return
    # Taken only when the body repeats a validly signed receipt.
    assert secret == SECRET and header.lower() == "x-gwapi-signature"
    assert all(u.phone and u.phone[1:].isdigit() for u in updates)


# -- Twilio receipts ------------------------------------------------------------------------------

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "auth-token-0123456789"
TWILIO_URL = "https://broadcaster.example/v1/callbacks/tw1"


@pytest.fixture(scope="module")
def twilio() -> TwilioAdapter:
    config = GatewayConfig(
        name="tw1",
        type="twilio",
        base_url="http://unused",
        token=f"{ACCOUNT_SID}:{AUTH_TOKEN}",
        sender="+4512345678",
    )
    return TwilioAdapter(config, TWILIO_URL)


def twilio_signature(params: dict[str, str], url: str = TWILIO_URL) -> str:
    """Twilio's algorithm, written out here: URL + sorted name/value pairs, HMAC-SHA1, base64."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


form_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=16
)
twilio_receipts = st.fixed_dictionaries(
    {
        "MessageSid": st.from_regex(r"SM[0-9a-f]{32}", fullmatch=True),
        "MessageStatus": st.sampled_from(sorted(TWILIO_STATUSES))
        | st.text(string.ascii_letters, min_size=1, max_size=10),
        "AccountSid": st.just(ACCOUNT_SID),
    },
    optional={
        "To": st.from_regex(r"\+45[0-9]{8}", fullmatch=True),
        "ErrorCode": st.sampled_from(["30003", "21610", "30008"]),
        "ApiVersion": st.just("2010-04-01"),
        "Body": form_text,
    },
)


@PROPERTY
@given(params=twilio_receipts)
def test_a_signed_twilio_receipt_reads_back_its_sid_and_status(
    twilio: TwilioAdapter, params: dict[str, str]
) -> None:
    headers = {"X-Twilio-Signature": twilio_signature(params)}
    [update] = twilio.parse_callback(headers, urlencode(params).encode(), TWILIO_URL)
    assert update.gateway_message_id == params["MessageSid"]
    status = params["MessageStatus"]
    assert update.state is TWILIO_STATUSES.get(status.lower(), DeliveryState.SENT)
    assert update.opted_out == (params.get("ErrorCode") == "21610")


@PROPERTY
@given(
    params=st.dictionaries(form_text, form_text, max_size=5) | twilio_receipts,
    body=st.none() | st.binary(max_size=60),
    signature=st.none() | st.text(max_size=30),
    url=st.sampled_from([TWILIO_URL, TWILIO_URL + "?x=1", "https://elsewhere.example/"]),
)
def test_anything_else_sent_as_a_twilio_receipt_is_refused_cleanly(
    twilio: TwilioAdapter,
    params: dict[str, str],
    body: bytes | None,
    signature: str | None,
    url: str,
) -> None:
    raw = urlencode(params).encode() if body is None else body
    headers = {"X-Twilio-Signature": signature or twilio_signature(params, url)}
    try:
        twilio.parse_callback(headers, raw, TWILIO_URL)
    except CallbackRejected as exc:
        assert exc.status in (400, 401)
        return
    # Taken only when signed with our token for the URL we were called on, over this body.
    assert url == TWILIO_URL and body is None and not signature
    assert params.get("AccountSid") == ACCOUNT_SID


# -- SMPP deliver_sm receipt texts, in the dialects SMSCs write ------------------------------------

STAT_WORDS = [
    "DELIVRD",
    "UNDELIV",
    "EXPIRED",
    "REJECTD",
    "ACCEPTD",
    "ENROUTE",
    "UNKNOWN",
    "DELETED",
]
labels = {
    "id": st.sampled_from(["id", "ID", "Id"]),
    "sub": st.sampled_from(["sub", "SUB"]),
    "dlvrd": st.sampled_from(["dlvrd", "DLVRD"]),
    "submit date": st.sampled_from(["submit date", "submit_date", "submitdate", "Submit Date"]),
    "done date": st.sampled_from(["done date", "done_date", "donedate", "DONE DATE"]),
    "stat": st.sampled_from(["stat", "STAT", "Stat"]),
    "err": st.sampled_from(["err", "ERR"]),
}
values = {
    "id": st.from_regex(r"[0-9A-Fa-f]{1,20}|[0-9a-f]{8}-[0-9a-f]{4}", fullmatch=True),
    "sub": st.from_regex(r"[0-9]{3}", fullmatch=True),
    "dlvrd": st.from_regex(r"[0-9]{3}", fullmatch=True),
    "submit date": st.from_regex(r"[0-9]{10}|[0-9]{12}", fullmatch=True),
    "done date": st.from_regex(r"[0-9]{10}|[0-9]{12}", fullmatch=True),
    "stat": st.sampled_from(STAT_WORDS),
    "err": st.from_regex(r"[0-9]{3}", fullmatch=True),
}


@st.composite
def receipt_texts(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A receipt text in a generated dialect: fields in any order (some left out, id and stat
    always there), labels in any case and spelling, one or more spaces, spaces before the
    colon, and an optional text: field last; and the fields it holds."""
    names = draw(st.permutations(list(labels)))
    kept = [n for n in names if n in ("id", "stat") or draw(st.booleans())]
    fields = {n: draw(values[n]) for n in kept}
    gap = draw(st.sampled_from([" ", "  ", "\t"]))
    colon = draw(st.sampled_from([":", " :"]))
    parts = [f"{draw(labels[n])}{colon}{fields[n]}" for n in kept]
    text = gap.join(parts)
    if draw(st.booleans()):
        body = draw(st.text(alphabet=string.ascii_letters + " æøå.,", max_size=20))
        text += f"{gap}text:{body}"
    return text, fields


@PROPERTY
@given(case=receipt_texts())
def test_smpp_receipt_texts_in_any_dialect_give_their_fields(
    case: tuple[str, dict[str, str]],
) -> None:
    text, fields = case
    read = parse_receipt_text(text)
    for name, value in fields.items():
        assert read.get(name) == value, (text, read)


@PROPERTY
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_an_smpp_receipt_is_read_without_failing(text: str) -> None:
    read = parse_receipt_text(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in read.items())
    for key in ("submit date", "done date"):
        parse_receipt_time(read.get(key))  # a moment or None, never an exception


@PROPERTY
@given(value=st.text(max_size=20) | st.from_regex(r"[0-9]{10,16}[+-R]?", fullmatch=True))
def test_any_receipt_date_is_a_moment_or_none(value: str) -> None:
    moment = parse_receipt_time(value)
    assert moment is None or moment.tzinfo is not None


# -- GeoJSON and CAP areas ------------------------------------------------------------------------

coordinates = st.floats(allow_nan=True, allow_infinity=True) | json_scalars
positions = st.lists(coordinates, max_size=4) | json_values
geometries = st.fixed_dictionaries(
    {"type": st.sampled_from(["Polygon", "MultiPolygon", "Circle", "Point", "polygon"])},
    optional={
        "coordinates": st.lists(st.lists(positions, max_size=6), max_size=3)
        | st.lists(st.lists(st.lists(positions, max_size=5), max_size=2), max_size=2)
        | json_values,
        "center": positions,
        "radius_m": json_scalars | st.floats(),
    },
)


@PROPERTY
@given(area=geometries | json_values)
def test_any_geojson_area_is_a_zone_or_a_clear_refusal(area: Any) -> None:
    try:
        parse_area(area)
    except AreaError as exc:
        assert str(exc)


rectangles = st.tuples(
    st.floats(-179, 178), st.floats(-89, 88), st.floats(0.001, 1), st.floats(0.001, 1)
)


@PROPERTY
@given(box=rectangles)
def test_a_valid_rectangle_is_taken_as_drawn(box: tuple[float, float, float, float]) -> None:
    lon, lat, width, height = box
    ring = [[lon, lat], [lon + width, lat], [lon + width, lat + height], [lon, lat + height]]
    zone = parse_area({"type": "Polygon", "coordinates": [[*ring, ring[0]]]})
    assert isinstance(zone, PolygonZone)
    bounds = zone.shape().bounds
    assert bounds == pytest.approx((lon, lat, lon + width, lat + height))


cap_numbers = st.one_of(
    st.floats(-100, 100).map(lambda f: f"{f:.4f}"),
    st.sampled_from(
        [
            "",
            " ",
            "nan",
            "inf",
            "-0",
            "1e1",
            "0x10",
            "1_0",
            "\u0665\u0665",
            "\uff15\uff15",
            "55,",
            "--1",
        ]
    ),
    st.text(alphabet="0123456789.,-+eE_ ", max_size=8),
)


@st.composite
def cap_polygons(draw: st.DrawFn) -> str:
    pairs = [f"{draw(cap_numbers)},{draw(cap_numbers)}" for _ in range(draw(st.integers(0, 6)))]
    if pairs and draw(st.booleans()):
        pairs.append(pairs[0])  # closed, as a valid polygon is
    return draw(st.sampled_from([" ", "  ", "\n"])).join(pairs)


@PROPERTY
@given(
    polygon=cap_polygons(),
    circle=st.none() | st.builds("{},{} {}".format, cap_numbers, cap_numbers, cap_numbers),
)
def test_any_cap_area_is_read_or_refused_with_a_clear_error(
    polygon: str, circle: str | None
) -> None:
    body = cap_xml([info_xml([area_xml([polygon], [circle] if circle else [])])])
    try:
        message = cap.parse(body)
    except cap.CapError as exc:
        assert exc.status in (400, 422)
        return
    for area in message.infos[0].areas:
        for ring in area.polygons:
            assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)


SQUARE = ["55.90", "12.25", "55.90", "12.35", "55.95", "12.35", "55.95", "12.25", "55.90", "12.25"]


@pytest.mark.parametrize(
    "odd",
    [
        "5_5.90",
        "\u0665\u0665.90",
        "\uff15\uff15.90",
        "0x37",
        "55.90e0",
        "nan",
        "Infinity",
        "55.9.0",
        "55,90",
    ],
)
def test_a_cap_coordinate_in_an_odd_number_format_is_refused(odd: str) -> None:
    numbers = [odd, *SQUARE[1:8], odd, SQUARE[9]]
    polygon = " ".join(f"{numbers[i]},{numbers[i + 1]}" for i in range(0, 10, 2))
    with pytest.raises(cap.CapError) as caught:
        cap.parse(cap_xml([info_xml([area_xml([polygon])])]))
    assert caught.value.status == 422


@pytest.mark.parametrize("radius", ["2_5", "\uff12.5", "0x2", "2.5e0", "inf"])
def test_a_cap_circle_radius_in_an_odd_number_format_is_refused(radius: str) -> None:
    with pytest.raises(cap.CapError) as caught:
        cap.parse(cap_xml([info_xml([area_xml(circles=[f"55.93,12.30 {radius}"])])]))
    assert caught.value.status == 422
