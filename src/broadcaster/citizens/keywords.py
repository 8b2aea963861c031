"""SMS keywords: what an inbound text asks the service to do, read by one pure function.

The keywords, in Danish and English:

| kind    | words                                  | argument                   |
|---------|----------------------------------------|----------------------------|
| `stop`  | STOP, AFMELD, STOPP, UNSUBSCRIBE       | none                       |
| `start` | START                                  | none                       |
| `help`  | HJÆLP (also written HJAELP), HELP      | none                       |
| `join`  | TILMELD, JOIN                          | a four-digit postal code, or none |

A text is a keyword only when the whole text is one: `stop`, ` Stop. `, `STOP!` and `hjælp` are;
`stop sending me this` and `help, I saw him` are not (those are tips). Reading tolerates:
- case (`Stop`, `sToP`) and width (full-width letters);
- blanks and line breaks around and between the words (`TILMELD   3400`, also `TILMELD3400`);
- accents and marks (`STÓP`), and Æ written as AE (`HJAELP`);
- trailing punctuation: any run of `. ! ? , ; :` and blanks at the end (`Stop.`, `HELP?!`,
  `Stop . !`), and quotes around the text.

Anything else is not a keyword: `parse` returns None, and the text is a tip (inbound.py). So is
any text of more than 60 characters (blanks aside) or of more than three parts between blanks
(`TILMELD 3400 .` is three): no keyword comes close, and most tips are decided without folding.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Normalised word -> (kind, language the word is in; None where it is both).
WORDS: dict[str, tuple[str, str | None]] = {
    "STOP": ("stop", None),
    "AFMELD": ("stop", "da"),
    "STOPP": ("stop", "da"),
    "UNSUBSCRIBE": ("stop", "en"),
    "START": ("start", None),
    "HJAELP": ("help", "da"),
    "HELP": ("help", "en"),
    "TILMELD": ("join", "da"),
    "JOIN": ("join", "en"),
}
KINDS = frozenset(kind for kind, _ in WORDS.values())
# Letters with no decomposition that a Danish keyword may hold, written as their transliteration.
_TRANSLITERATE = str.maketrans({"Æ": "AE", "æ": "AE", "Ø": "OE", "ø": "OE", "Å": "AA", "å": "AA"})
_TRAILING = re.compile(r"[\s.!?,;:]+$")
_QUOTES = "\"'`\u201c\u201d\u201e\u00ab\u00bb\u2018\u2019"  # straight, curly, guillemets
# A word, then for JOIN/TILMELD optionally a postal code of four digits.
_SHAPE = re.compile(r"([A-Z]+)(?: ?([0-9]{4}))?")


@dataclass(frozen=True, slots=True)
class Keyword:
    """A keyword read from a text: its kind, the language of the word (None for STOP and START,
    which both languages use), and the postal code of a JOIN/TILMELD (None without one)."""

    kind: str
    language: str | None = None
    postal_code: str | None = None


MAX_CHARS = 60  # blanks aside
MAX_PARTS = 3  # between blanks


def normalise(text: str) -> str:
    """The text as keywords are compared: compatibility forms folded (full width), Æ/Ø/Å
    transliterated, accents dropped, upper case, blanks collapsed to one space, quotes and
    trailing punctuation removed."""
    if not text.isascii():  # ASCII has nothing to fold (most texts: a fast path)
        folded = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
        text = "".join(c for c in folded if not unicodedata.combining(c))
        text = text.translate(_TRANSLITERATE)
    words = " ".join(text.upper().split()).strip(_QUOTES + " ")
    return _TRAILING.sub("", words).strip(_QUOTES + " ")


def parse(text: str) -> Keyword | None:
    """The keyword `text` is, or None when it is not one (see the module docstring)."""
    if len(text) > MAX_CHARS and len("".join(text.split())) > MAX_CHARS:
        return None
    if len(text.split(maxsplit=MAX_PARTS)) > MAX_PARTS:
        return None
    shape = _SHAPE.fullmatch(normalise(text))
    if shape is None:
        return None
    word, postal_code = shape.groups()
    known = WORDS.get(word)
    if known is None:
        return None
    kind, language = known
    if postal_code is not None and kind != "join":
        return None
    return Keyword(kind, language, postal_code)
