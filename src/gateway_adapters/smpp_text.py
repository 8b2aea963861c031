"""SMPP text: GSM 03.38 and UCS-2 encodings, and concatenation (splitting a text into
submit_sm parts, and reading a part's UDH or sar_* TLVs back). Pure functions and dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway_adapters.smpp_codec import (
    DATA_CODING_DEFAULT,
    DATA_CODING_IA5,
    DATA_CODING_UCS2,
    ESM_CLASS_UDHI,
    ESME_RINVESMCLASS,
    ESME_RINVOPTPARAMVAL,
    ESME_RMISSINGOPTPARAM,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    PduError,
)

# -- GSM 03.38 default alphabet and UCS-2 ---------------------------------------------------------

# Index = septet value. 0x1B is the escape to the extension table (kept as "\x1b" placeholder).
GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_ESCAPE = 0x1B
GSM7_EXTENSION_TABLE: dict[str, int] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_BASIC_CODES = {char: code for code, char in enumerate(GSM7_BASIC_TABLE) if code != 0x1B}
_GSM7_EXTENSION_CHARS = {code: char for char, code in GSM7_EXTENSION_TABLE.items()}

GSM7_SINGLE_MAX = 160  # septets in one SMS
GSM7_PART_MAX = 153  # septets per part next to a 6-octet concatenation UDH
UCS2_SINGLE_MAX = 140  # octets (70 UTF-16 units)
UCS2_PART_MAX = 134  # octets (67 UTF-16 units)
MAX_PARTS = 255  # the UDH counts parts in one octet


# The fast paths: one regex search finds a character outside the alphabet, and str.translate
# maps characters to septets (or septets to characters) in C rather than one Python call each.
_NOT_GSM7 = re.compile(
    "[^" + re.escape("".join(_GSM7_BASIC_CODES) + "".join(GSM7_EXTENSION_TABLE)) + "]"
)
_GSM7_ENCODE_MAP: dict[int, str] = {ord(c): chr(code) for c, code in _GSM7_BASIC_CODES.items()}
_GSM7_ENCODE_MAP.update(
    {ord(c): chr(GSM7_ESCAPE) + chr(code) for c, code in GSM7_EXTENSION_TABLE.items()}
)
# Octets without an escape among them: the basic table, and Latin-1 above 0x7F (identity).
_GSM7_DECODE_MAP: dict[int, str] = dict(enumerate(GSM7_BASIC_TABLE))
# The octets that are the same character in GSM 03.38 as in ASCII (space, digits, letters and
# most punctuation): text of only these decodes as ASCII, like most receipts.
_GSM7_AS_ASCII = bytes(
    code for code, char in enumerate(GSM7_BASIC_TABLE) if ord(char) == code and code != GSM7_ESCAPE
)


def fits_gsm7(text: str) -> bool:
    return _NOT_GSM7.search(text) is None


def gsm7_char(char: str) -> bytes:
    """One character as unpacked septets: one octet, or ESC + code for the extension table."""
    code = _GSM7_BASIC_CODES.get(char)
    if code is not None:
        return bytes((code,))
    ext = GSM7_EXTENSION_TABLE.get(char)
    if ext is None:
        raise ValueError(f"character U+{ord(char):04X} is not in the GSM 03.38 alphabet")
    return bytes((GSM7_ESCAPE, ext))


def gsm7_encode(text: str) -> bytes:
    """Unpacked GSM 03.38 septets, one per octet, as SMSCs expect over SMPP."""
    outside = _NOT_GSM7.search(text)
    if outside is not None:
        gsm7_char(outside.group())  # raises the ValueError naming the character
    return text.translate(_GSM7_ENCODE_MAP).encode("latin-1")


def gsm7_decode(data: bytes) -> str:
    """Inverse of `gsm7_encode`, tolerant: octets above 0x7F are read as Latin-1 (some SMSCs send
    Latin-1 under data_coding 0); an escape before an unknown code yields the basic character."""
    if not data.translate(None, _GSM7_AS_ASCII):
        return data.decode("ascii")
    if GSM7_ESCAPE not in data:
        return data.decode("latin-1").translate(_GSM7_DECODE_MAP)
    out: list[str] = []
    i = 0
    while i < len(data):
        octet = data[i]
        i += 1
        if octet == GSM7_ESCAPE and i < len(data) and data[i] < 0x80:
            ext = data[i]
            i += 1
            out.append(_GSM7_EXTENSION_CHARS.get(ext, GSM7_BASIC_TABLE[ext]))
        elif octet == GSM7_ESCAPE:
            out.append(" ")  # a dangling escape: nothing sensible to show
        elif octet < 0x80:
            out.append(GSM7_BASIC_TABLE[octet])
        else:
            out.append(chr(octet))
    return "".join(out)


def ucs2_char(char: str) -> bytes:
    # Astral characters become a surrogate pair (4 octets), which handsets read as UTF-16.
    return char.encode("utf-16-be", errors="replace")


def decode_text(data: bytes, data_coding: int) -> str:
    """User data as text for the data codings we meet; unknown codings are read as Latin-1."""
    if data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == DATA_CODING_DEFAULT:
        return gsm7_decode(data)
    if data_coding == DATA_CODING_IA5:
        return data.decode("ascii", errors="replace")
    return data.decode("latin-1")


# -- concatenation --------------------------------------------------------------------------------


class MessageTooLong(ValueError):
    """The text needs more than 255 concatenated parts."""


@dataclass(frozen=True, slots=True)
class MessagePart:
    """One submit_sm's worth of a text: its data_coding, esm_class and short_message."""

    data_coding: int
    esm_class: int
    short_message: bytes


def concat_udh(ref: int, total: int, seq: int) -> bytes:
    """The 6-octet UDH: length 05, IEI 00 (8-bit reference), IEI length 03, ref, total, seq."""
    return bytes((0x05, 0x00, 0x03, ref & 0xFF, total, seq))


def split_message(text: str, ref: int) -> list[MessagePart]:
    """The text as submit_sm parts: GSM-7 if every character fits, else UCS-2.

    One part up to 160 GSM septets / 70 UTF-16 units; beyond that parts of at most 153 / 67 with a
    concatenation UDH carrying `ref`. Parts break between characters only, so an ESC pair or a
    surrogate pair is never split (such a part is one unit short).
    """
    if fits_gsm7(text):
        coding, chars = DATA_CODING_DEFAULT, [gsm7_char(c) for c in text]
        single, per_part = GSM7_SINGLE_MAX, GSM7_PART_MAX
    else:
        coding, chars = DATA_CODING_UCS2, [ucs2_char(c) for c in text]
        single, per_part = UCS2_SINGLE_MAX, UCS2_PART_MAX
    if sum(len(c) for c in chars) <= single:
        return [MessagePart(coding, 0, b"".join(chars))]

    chunks: list[bytes] = []
    current = bytearray()
    for encoded in chars:
        if len(current) + len(encoded) > per_part:
            chunks.append(bytes(current))
            current.clear()
        current += encoded
    chunks.append(bytes(current))
    if len(chunks) > MAX_PARTS:
        raise MessageTooLong(f"text needs {len(chunks)} parts; at most {MAX_PARTS} are possible")
    total = len(chunks)
    return [
        MessagePart(coding, ESM_CLASS_UDHI, concat_udh(ref, total, seq) + chunk)
        for seq, chunk in enumerate(chunks, start=1)
    ]


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    ref: int
    total: int
    seq: int


def split_udh(user_data: bytes) -> tuple[ConcatInfo | None, bytes]:
    """(concatenation info or None, payload) of user data that starts with a UDH.

    Knows IEI 0x00 (8-bit reference) and 0x08 (16-bit reference); other IEs are skipped.
    """
    if not user_data:
        raise PduError("UDHI set but no user data", status=ESME_RINVESMCLASS)
    udh_len = user_data[0]
    if udh_len + 1 > len(user_data):
        raise PduError("UDH longer than the user data", status=ESME_RINVESMCLASS)
    udh, payload = user_data[1 : udh_len + 1], user_data[udh_len + 1 :]
    info: ConcatInfo | None = None
    i = 0
    while i + 2 <= len(udh):
        iei, size = udh[i], udh[i + 1]
        value = udh[i + 2 : i + 2 + size]
        if len(value) != size:
            raise PduError("truncated UDH information element", status=ESME_RINVESMCLASS)
        if iei == 0x00 and size == 3:
            info = ConcatInfo(value[0], value[1], value[2])
        elif iei == 0x08 and size == 4:
            info = ConcatInfo((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + size
    return info, payload


def sar_info(tlvs: Mapping[int, bytes]) -> ConcatInfo | None:
    """Concatenation by the sar_* TLVs (SMPP 3.4 section 5.3.2.22-24), or None without them.
    Some but not all of the three, or one of the wrong length, is a `PduError`."""
    ref = tlvs.get(TAG_SAR_MSG_REF_NUM)
    total = tlvs.get(TAG_SAR_TOTAL_SEGMENTS)
    seq = tlvs.get(TAG_SAR_SEGMENT_SEQNUM)
    if ref is None and total is None and seq is None:
        return None
    if ref is None or total is None or seq is None:
        raise PduError("sar_* TLVs incomplete", status=ESME_RMISSINGOPTPARAM)
    if len(ref) != 2 or len(total) != 1 or len(seq) != 1 or not 1 <= seq[0] <= total[0]:
        raise PduError("sar_* TLV of the wrong size or value", status=ESME_RINVOPTPARAMVAL)
    return ConcatInfo(int.from_bytes(ref, "big"), total[0], seq[0])
