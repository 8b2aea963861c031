"""SMS encoding and segment counts against GSM 03.38, hand-computed: Danish letters are GSM-7
(160 / 153 per part), extension-table characters count two septets and their escape is never
split from them, UCS-2 only when a character is in neither table (70 / 67 per part), a
character outside the BMP is a surrogate pair of two units, never split either."""

from __future__ import annotations

import pytest

from gateway_adapters.gsm7 import measure, segment_count

DANISH = "Æble øl Åse æøå ÆØÅ"  # 19 characters, all in the basic table

CASES = [
    # (text, encoding, units, segments)
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),  # 153 * 2
    ("a" * 307, "GSM-7", 307, 3),
    ("æøåÆØÅ" * 26 + "æøåÆ", "GSM-7", 160, 1),  # a Danish text of 160 characters is one SMS
    ("æøåÆØÅ" * 26 + "æøåÆØ", "GSM-7", 161, 2),
    ("Ø" * 306, "GSM-7", 306, 2),
    ("Å" * 307, "GSM-7", 307, 3),
    (DANISH, "GSM-7", 19, 1),
    # Extension table: two septets each.
    ("€" * 80, "GSM-7", 160, 1),
    ("€" * 81, "GSM-7", 162, 2),  # 76 per part (152 septets): 76 + 5
    ("[]{}^~\\|€" * 17 + "a" * 7, "GSM-7", 313, 3),
    ("a" * 159 + "€", "GSM-7", 161, 2),  # one septet too many for a single SMS
    ("a" * 158 + "€", "GSM-7", 160, 1),
    # An escape pair at the end of part one moves whole to part two: 152 + (2 + 151) + 1.
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
    ("a" * 151 + "€" + "a" * 153, "GSM-7", 306, 2),  # 151 + 2 = 153: it fits
    # UCS-2.
    ("ж" * 70, "UCS-2", 70, 1),
    ("ж" * 71, "UCS-2", 71, 2),
    ("ж" * 134, "UCS-2", 134, 2),  # 67 * 2
    ("ж" * 135, "UCS-2", 135, 3),
    ("😀" * 35, "UCS-2", 70, 1),  # surrogate pairs: two units each
    ("😀" * 36, "UCS-2", 72, 2),  # 33 per part (66 units): 33 + 3
    ("ж" * 66 + "😀" + "ж" * 66, "UCS-2", 134, 3),  # the pair never straddles parts
    ("ж" * 65 + "😀" + "ж" * 67, "UCS-2", 134, 2),
    # One character outside both tables makes the whole text UCS-2, Danish letters and all.
    ("Politiet: indbrud i Hillerød 🚨", "UCS-2", 31, 1),
    (DANISH * 4 + "ç", "UCS-2", 77, 2),  # ç is not GSM-7 (only Ç is)
    ("a" * 69 + "€" + "ж", "UCS-2", 71, 2),  # € in UCS-2 is one unit
]


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), CASES)
def test_segments(text: str, encoding: str, units: int, segments: int) -> None:
    length = measure(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)
    assert segment_count(text) == segments


def test_every_danish_letter_is_gsm7() -> None:
    for letter in "ÆæØøÅå":
        assert measure(letter * 160) == measure("a" * 160)
