"""The GSM 03.38 7-bit default alphabet: which texts fit it, and how many SMS segments a text
needs. Adapters choose their encoding from it; the API counts segments with it.

GSM-7: 160 septets in one SMS, 153 per part of a concatenated one (the user data header takes
the rest). Characters of the extension table (€ [ ] { } ^ ~ \\ | and form feed) are an escape
plus a character, two septets, and a part never ends between the two: the pair moves to the
next part, which the count follows. Danish Æ æ Ø ø Å å are in the basic table.

UCS-2 (UTF-16 on the wire), only when some character is in neither table: 70 code units in one
SMS, 67 per part; a character outside the Basic Multilingual Plane (most emoji) is a surrogate
pair, two units, never split across parts either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Basic character set and the extension table (each extension char costs two septets).
BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SmsLength:
    """How a text goes out: its encoding, its length in that encoding's units (septets or
    UTF-16 code units) and the SMS segments it takes."""

    encoding: Encoding
    units: int
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in BASIC or c in EXTENSION for c in text)


def measure(text: str) -> SmsLength:
    """The encoding, length and segment count of `text`, parts packed as a phone reassembles
    them (an escape pair or a surrogate pair is never split)."""
    if is_gsm7(text):
        widths = [2 if c in EXTENSION else 1 for c in text]
        return SmsLength("GSM-7", sum(widths), _segments(widths, GSM7_SINGLE, GSM7_PART))
    widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SmsLength("UCS-2", sum(widths), _segments(widths, UCS2_SINGLE, UCS2_PART))


def segment_count(text: str) -> int:
    return measure(text).segments


def _segments(widths: list[int], single: int, part: int) -> int:
    total = sum(widths)
    if total <= single:
        return 1
    if all(w == 1 for w in widths):
        return -(-total // part)
    segments, used = 1, 0
    for w in widths:
        if used + w > part:  # the pair does not fit: it starts the next part
            segments, used = segments + 1, 0
        used += w
    return segments
