"""The pages' forms: read from the posted body and checked field by field. Each check gives the
field's value as typed (to show it again) and, when it fails, the key of its message in
texts.WORDS, so a page shows every error next to its field in its own language."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import phonenumbers

from broadcaster.phone import PhoneError, normalise
from broadcaster.web.texts import REASONS

MAX_PLACES = 10  # as POST /v1/signups
MAX_FIELD = 200  # characters kept of any field (the body itself is limited by the Guard)
CODE = re.compile(r"[0-9]{6}")
# Types of number that can receive an SMS (Danish numbers are all FIXED_LINE_OR_MOBILE).
SMS_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.UNKNOWN,
    }
)


class Fields:
    """A posted form: name -> values, as typed."""

    def __init__(self, body: bytes) -> None:
        text = body.decode("utf-8", errors="replace")
        self.values: dict[str, list[str]] = {
            k: [v[:MAX_FIELD] for v in vs]
            for k, vs in parse_qs(text, keep_blank_values=True, max_num_fields=200).items()
        }

    def one(self, name: str) -> str:
        found = self.values.get(name)
        return found[0].strip() if found else ""

    def all(self, name: str) -> list[str]:
        return [v.strip() for v in self.values.get(name, []) if v.strip()]


@dataclass
class Checked:
    """What a form holds: `values` as typed (to show again), `errors` field -> (text key,
    values for the text), and the normalised values once there are no errors."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    phone: str = ""
    locations: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, name: str, key: str, **values: Any) -> None:
        self.errors.setdefault(name, (key, values))


def check_phone(checked: Checked, raw: str) -> None:
    checked.values["phone"] = raw
    if not raw:
        checked.fail("phone", "err_phone_missing")
        return
    try:
        phone = normalise(raw)
    except PhoneError:
        checked.fail("phone", "err_phone_invalid")
        return
    if phonenumbers.number_type(phonenumbers.parse(phone)) not in SMS_TYPES:
        checked.fail("phone", "err_phone_not_mobile")
        return
    checked.phone = phone


def _coordinate(raw: str, limit: float) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and abs(value) <= limit else None


def check_signup(fields: Fields, page_language: str) -> Checked:
    """The sign-up form: phone, postal codes and/or a position, language, reason, consent."""
    checked = Checked()
    check_phone(checked, fields.one("phone"))
    codes = list(dict.fromkeys(fields.all("postal_code")))
    lat, lon = fields.one("lat"), fields.one("lon")
    checked.values.update(postal_codes=codes, lat=lat, lon=lon)
    locations: list[dict[str, Any]] = [{"postal_code": c} for c in codes]
    if lat or lon:
        lat_value, lon_value = _coordinate(lat, 90), _coordinate(lon, 180)
        if lat_value is None or lon_value is None:
            checked.fail("places", "err_location_invalid")
        else:
            locations.append({"lat": round(lat_value, 5), "lon": round(lon_value, 5)})
    if any(not re.fullmatch(r"[0-9]{4}", c) for c in codes):
        checked.fail("places", "err_places_unknown", codes=", ".join(codes))
    if not locations:
        checked.fail("places", "err_places_missing")
    elif len(locations) > MAX_PLACES:
        checked.fail("places", "err_places_too_many", max=MAX_PLACES)
    checked.locations = locations
    language = fields.one("language")
    checked.values["language"] = language if language in ("da", "en") else page_language
    reason = fields.one("reason")
    checked.values["reason"] = reason
    if reason and reason not in REASONS:
        checked.fail("reason", "err_reason_invalid")
    checked.values["consent"] = fields.one("consent") == "yes"
    if not checked.values["consent"]:
        checked.fail("consent", "err_consent_missing")
    return checked


def check_code(fields: Fields) -> Checked:
    """A code page: the number (carried from the page before) and the six digits."""
    checked = Checked()
    check_phone(checked, fields.one("phone"))
    code = "".join(fields.one("code").split())
    checked.values["code"] = fields.one("code")
    if not code:
        checked.fail("code", "err_code_missing")
    elif not CODE.fullmatch(code):
        checked.fail("code", "err_code_format")
    checked.values["digits"] = code
    return checked


def shown_phone(e164: str) -> str:
    """A number as its owner writes it (national format for Danish numbers), kept on one line."""
    number = phonenumbers.parse(e164)
    style = phonenumbers.PhoneNumberFormat.INTERNATIONAL
    if number.country_code == 45:
        style = phonenumbers.PhoneNumberFormat.NATIONAL
    return phonenumbers.format_number(number, style).replace(" ", "\u00a0")
