"""SMPP message ids: stored forms, and receipts finding them."""

from __future__ import annotations

import pytest

from gateway_adapters.smpp_ids import canonical_message_id, canonical_receipt_id

CANONICAL_CASES = [
    # (raw id, submit base, canonical)
    ("0A000001", 16, "167772161"),
    ("0a000001", 16, "167772161"),
    ("A000001", 16, "167772161"),
    ("0x0A000001", 16, "167772161"),
    ("  1f\n", 16, "31"),
    ("0167772161", 10, "167772161"),
    ("167772161", 10, "167772161"),
    ("000", 10, "0"),
    ("1f", 10, "1f"),  # not decimal: kept as a string
    ("1_0", 10, "1_0"),  # Python's int() would accept the underscore; we do not
    ("ABC-123", 16, "abc-123"),
    ("0A000001", 0, "0a000001"),  # base 0: opaque ids, only case and whitespace normalised
    ("", 16, ""),
]


@pytest.mark.parametrize(("raw", "base", "canonical"), CANONICAL_CASES)
def test_canonical_message_id(raw: str, base: int, canonical: str) -> None:
    assert canonical_message_id(raw, base) == canonical


MATCH_CASES = [
    # (submit_sm_resp id, submit base, receipt id, receipt base): must give the same canonical id
    ("0A000001", 16, "0167772161", 10),  # hex out, decimal back (the simulator's way)
    ("0a000001", 16, "167772161", 10),
    ("167772161", 10, "a000001", 16),  # the reverse
    ("167772161", 10, "0A000001", 16),
    ("0A000001", 16, "0A000001", 10),  # configured decimal but the SMSC writes hex in both
    ("Msg-ABC", 16, "msg-abc", 10),  # opaque ids differing in case
]


@pytest.mark.parametrize(("submitted", "submit_base", "received", "receipt_base"), MATCH_CASES)
def test_receipt_ids_match_submitted_ids(
    submitted: str, submit_base: int, received: str, receipt_base: int
) -> None:
    assert canonical_receipt_id(received, receipt_base, submit_base) == canonical_message_id(
        submitted, submit_base
    )


def test_receipt_base_is_tried_first() -> None:
    # "12" is valid in both bases: the receipt base decides.
    assert canonical_receipt_id("12", 10, 16) == "12"
    assert canonical_receipt_id("12", 16, 10) == "18"
