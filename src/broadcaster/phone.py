"""Phone numbers: parsed and normalised to E.164 with the phonenumbers library."""

from __future__ import annotations

import re
from collections.abc import Callable

import phonenumbers

DEFAULT_REGION = "DK"


class PhoneError(ValueError):
    pass


def normalise(raw: str, region: str = DEFAULT_REGION) -> str:
    """E.164 ('+4520123456') for a valid number; numbers without a country code are Danish."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str) -> str:
    """A loggable form: country code and last two digits only."""
    return e164[:3] + "*" * max(0, len(e164) - 5) + e164[-2:]


# -- many numbers at once (the importer) --------------------------------------------------------
# Parsing phone numbers with phonenumbers costs ~20 us each, most of an import's CPU time. Plain
# Danish numbers (8 digits, or +45 and 8 digits) therefore take a fast path that checks them with
# the patterns of phonenumbers' own Danish metadata; everything else, and every number the fast
# path would refuse, goes through `normalise`, so the results are identical (tested).

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # the CHECK constraint of subscribers.phone


def _danish_fast_path() -> Callable[[str], str | None] | None:
    """A function giving E.164 for a plain, valid Danish number ('20123456', '+4520123456') and
    None for anything else, built from phonenumbers' metadata for the default region; None if the
    metadata does not have the shape it relies on (then everything goes through phonenumbers)."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(DEFAULT_REGION)
    if (
        DEFAULT_REGION != "DK"
        or meta is None
        or meta.country_code != 45
        or meta.national_prefix_for_parsing
        or meta.national_prefix
    ):
        return None
    general = meta.general_desc
    if general is None or not general.national_number_pattern:
        return None
    if general.possible_length and 8 not in general.possible_length:
        return None
    # phonenumbers calls a number valid when it matches the general description and one of the
    # number types (each with its own possible lengths); all our candidates have 8 digits.
    kinds = [
        meta.premium_rate,
        meta.toll_free,
        meta.shared_cost,
        meta.voip,
        meta.personal_number,
        meta.pager,
        meta.uan,
        meta.voicemail,
        meta.fixed_line,
        meta.mobile,
    ]
    patterns = [
        d.national_number_pattern
        for d in kinds
        if d is not None
        and d.national_number_pattern
        and (not d.possible_length or 8 in d.possible_length)
    ]
    if not patterns:
        return None
    general_rx = re.compile(general.national_number_pattern)
    kinds_rx = re.compile("|".join(f"(?:{p})" for p in patterns))
    plain = re.compile(r"(?:\+45)?([0-9]{8})")

    def fast(raw: str) -> str | None:
        m = plain.fullmatch(raw)
        if m is None:
            return None
        digits = m.group(1)
        if general_rx.fullmatch(digits) and kinds_rx.fullmatch(digits):
            return "+45" + digits
        return None

    return fast


_FAST = _danish_fast_path()


def normalise_phone(raw: str) -> str:
    """The same as `broadcaster.phone.normalise(raw)` (E.164 or PhoneError), faster for plain
    Danish numbers."""
    if _FAST is not None:
        e164 = _FAST(raw.strip())
        if e164 is not None:
            return e164
    e164 = normalise(raw)
    if not _E164.fullmatch(e164):
        raise PhoneError("not a valid phone number")
    return e164
