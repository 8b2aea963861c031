"""The GSM 03.38 7-bit default alphabet: which texts fit it, and how many SMS segments a text
needs (160/153 septets for GSM-7, 70/67 UTF-16 units for UCS-2). Adapters choose their encoding
from it; the API counts segments with it."""

from __future__ import annotations

# Basic character set and the extension table (each extension char costs two septets).
BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = frozenset("^{}\\[~]|€\f")


def is_gsm7(text: str) -> bool:
    return all(c in BASIC or c in EXTENSION for c in text)


def segment_count(text: str) -> int:
    if is_gsm7(text):
        units = sum(2 if c in EXTENSION else 1 for c in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if units <= single:
        return 1
    return -(-units // multi)
