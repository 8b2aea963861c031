"""SMPP message ids: the form in which an SMSC's ids are stored, so that receipts find them."""

from __future__ import annotations

import re

_DIGITS = {10: re.compile(r"[0-9]+"), 16: re.compile(r"(?:0[xX])?[0-9A-Fa-f]+")}


def _as_number(raw: str, base: int) -> str | None:
    pattern = _DIGITS.get(base)
    if pattern is None or not pattern.fullmatch(raw):
        return None
    return str(int(raw, base))


def canonical_message_id(raw: str, submit_base: int) -> str:
    """The form in which we store an SMSC message id, so a receipt can find it again.

    Rule: strip surrounding whitespace; if the id consists only of digits of `submit_base` (10 or
    16; '0x' is allowed for 16) it is that number rendered in decimal without leading zeros
    ('0000A1F' -> '2591'); otherwise (base 0, or letters outside the base) it is the stripped id in
    lower case. SMSCs that write ids in a different base (or case, or padding) in receipts than in
    submit_sm_resp are thereby matched, as long as each side's base is configured.
    """
    value = raw.strip()
    return _as_number(value, submit_base) or value.lower()


def canonical_receipt_id(raw: str, receipt_base: int, submit_base: int) -> str:
    """The canonical form of an id read from a receipt: as a number in the configured receipt
    base, else in the submit base (an SMSC that writes hex in both), else the stripped lower-case
    string. Equal to `canonical_message_id` of the same message's submit_sm_resp id."""
    value = raw.strip()
    return _as_number(value, receipt_base) or _as_number(value, submit_base) or value.lower()
