"""Phone numbers: parsed and normalised to E.164 with the phonenumbers library."""

from __future__ import annotations

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
