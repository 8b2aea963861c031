"""Field types for request bodies: every value is bounded and typed at the edge, so nothing that
PostgreSQL cannot store (a NUL, a lone UTF-16 surrogate, a number beyond float range, a date
beyond its calendar) gets past validation to come back as a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StringConstraints

# C0 controls other than tab, line feed and carriage return; DEL. NUL is what PostgreSQL refuses
# outright, the others have no business in an SMS or a reference either.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# How far ahead an expiry may lie: beyond, a date can leave PostgreSQL's range after time-zone
# conversion (year 9999 at -14:00), and no alert is meant to wait a year.
MAX_EXPIRY_AHEAD = timedelta(days=366)
BIGINT_MAX = 2**63 - 1


def _clean_text(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"must not contain the control character U+{ord(found.group()):04X}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain lone UTF-16 surrogates") from None
    return value


# A string without control characters (tab and line breaks aside) or lone surrogates; give it a
# length with Annotated[CleanStr, Field(max_length=...)].
CleanStr = Annotated[str, AfterValidator(_clean_text)]


def _digits_only(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be written in the digits 0-9 alone")
    return value


# An integer in a path or a query string, written in ASCII digits: pydantic alone also takes
# "1_0", "+1", " 1", "1.0" for it. Annotated[int, Path(...), Digits].
Digits = BeforeValidator(_digits_only)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _near_future(value: datetime) -> datetime:
    if value - datetime.now(UTC) > MAX_EXPIRY_AHEAD:
        raise ValueError(f"must be within {MAX_EXPIRY_AHEAD.days} days from now")
    return value


# A phone number as people write it: digits with an optional leading + (or "(+45)"), spaced with
# blanks, dashes or parentheses. Anything else (an extension, letters, a NUL) is refused rather
# than dropped; phone.normalise then decides whether it is a valid number.
PHONE_SHAPE = re.compile(r"\(?\+?[0-9 ()\-]*[0-9][0-9 ()\-]*")


def _phone_shaped(value: str) -> str:
    if not PHONE_SHAPE.fullmatch(value):
        raise ValueError(
            "must be a phone number: digits with an optional leading +, spaced with blanks, "
            "dashes or parentheses"
        )
    return value


PhoneInput = Annotated[str, Field(min_length=4, max_length=32), AfterValidator(_phone_shaped)]
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_text(value: object) -> object:
    """Times are RFC 3339 text, as the schema says (pydantic would also read a number as a Unix
    time, which the document does not promise and nobody sends on purpose)."""
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an RFC 3339 date-time such as 2026-12-07T18:00:00+01:00")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
Expiry = Annotated[Timestamp, AfterValidator(_near_future)]
# A JSON number (not a numeric string, not a boolean), finite.
Coordinate = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
# A zone's code (a postal code, a municipality's number): letters and digits, with blanks, dots
# and dashes inside; white space around it is dropped. Whether it exists is the database's to say.
ZoneCode = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=20, pattern=r"^[0-9A-Za-z][0-9A-Za-z ._-]*$"
    ),
]
PostalCode = ZoneCode
# The name of a zone: text of 1 to 200 characters, not blank.
ZoneName = Annotated[CleanStr, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
