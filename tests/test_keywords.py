"""SMS keywords, read by one pure function: a table of what is and is not a keyword (both
languages, odd spacing, case, accents, punctuation), and hypothesis properties: reading never
fails on any text, only the documented keywords are ever found, and every documented keyword is
found however it is cased, spaced and punctuated."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.citizens.keywords import Keyword, parse

# The keywords as the module's docstring documents them, written out here independently.
DOCUMENTED = {
    "stop": ["STOP", "AFMELD", "STOPP", "UNSUBSCRIBE"],
    "start": ["START"],
    "help": ["HJÆLP", "HJAELP", "HELP"],
    "join": ["TILMELD", "JOIN"],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # STOP in both languages
        ("STOP", Keyword("stop")),
        (" stop ", Keyword("stop")),
        ("Stop.", Keyword("stop")),
        ("sToP!!", Keyword("stop")),
        ("\tSTOP\n", Keyword("stop")),
        ("“Stop”", Keyword("stop")),
        ("'stop'", Keyword("stop")),
        ("STÓP", Keyword("stop")),
        ("ＳＴＯＰ", Keyword("stop")),  # noqa: RUF001 (full-width letters on purpose)
        ("afmeld", Keyword("stop", "da")),
        (" Afmeld. ", Keyword("stop", "da")),
        ("STOPP", Keyword("stop", "da")),
        ("stopp?!", Keyword("stop", "da")),
        ("Unsubscribe", Keyword("stop", "en")),
        ("UNSUBSCRIBE ;", Keyword("stop", "en")),
        # START
        ("START", Keyword("start")),
        ("  start  ", Keyword("start")),
        ("Start!", Keyword("start")),
        # HELP in both languages, accent-tolerant
        ("HJÆLP", Keyword("help", "da")),
        ("HJAELP", Keyword("help", "da")),
        ("hjælp", Keyword("help", "da")),
        ("Hjælp?", Keyword("help", "da")),
        ("hjaelp", Keyword("help", "da")),
        ("HELP", Keyword("help", "en")),
        ("help ?", Keyword("help", "en")),
        # JOIN / TILMELD, with or without a postal code
        ("TILMELD 3400", Keyword("join", "da", "3400")),
        ("tilmeld   3400", Keyword("join", "da", "3400")),
        ("Tilmeld\n3400.", Keyword("join", "da", "3400")),
        ("TILMELD3400", Keyword("join", "da", "3400")),
        ("JOIN 3400", Keyword("join", "en", "3400")),
        ("join 2800!", Keyword("join", "en", "2800")),
        ("TILMELD", Keyword("join", "da")),
        ("join", Keyword("join", "en")),
        # Not keywords: tips, or nothing
        ("stop it", None),
        ("STOP STOP", None),
        ("please stop", None),
        ("help, I saw him by the station", None),
        ("Jeg så ham ved stationen", None),
        ("STOP 3400", None),
        ("START 3400", None),
        ("JOIN 34000", None),
        ("JOIN 340", None),
        ("JOIN 34 00", None),
        ("TILMELD Hillerød", None),
        ("HJÄLP", None),  # Swedish, not documented
        ("HJELP", None),  # Norwegian, not documented
        ("STOPPP", None),
        ("...STOP", None),
        ("", None),
        ("   ", None),
        ("?!", None),
        ("S T O P", None),
        ("Stop . !", Keyword("stop")),  # three parts between blanks
        ("TILMELD 3400 .", Keyword("join", "da", "3400")),
        ("STOP . ! ?", None),  # four: documented as never a keyword
        ("STOP" + "!" * 57, None),  # more than 60 characters
        ("STOP" + "!" * 56, Keyword("stop")),
        ("   STOP   " * 1 + " " * 500, Keyword("stop")),  # blanks do not count
    ],
)
def test_keyword_table(text: str, expected: Keyword | None) -> None:
    assert parse(text) == expected


def _loose(text: str) -> str:
    """An independent, looser reading: letters and digits only, accents and case dropped."""
    folded = unicodedata.normalize("NFKD", text.replace("Æ", "AE").replace("æ", "ae"))
    return "".join(c for c in folded if c.isascii() and c.isalnum()).upper()


LOOSE_KEYWORDS = {_loose(word) for words in DOCUMENTED.values() for word in words}


@given(st.text())
def test_any_text_is_read_without_failing_and_only_documented_keywords_match(text: str) -> None:
    found = parse(text)
    if found is None:
        return
    assert found.kind in DOCUMENTED
    loose = _loose(text)
    if found.postal_code is not None:
        assert found.kind == "join" and loose.endswith(found.postal_code)
        loose = loose[: -len(found.postal_code)]
    assert loose in LOOSE_KEYWORDS
    assert any(_loose(word) == loose for word in DOCUMENTED[found.kind])


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_texts_around_a_keyword_make_it_a_tip(text: str) -> None:
    # A keyword inside a longer sentence (letters or digits around it) is not a keyword.
    if re.search(r"[^\W_]", text):
        assert parse(f"STOP {text}x") is None
        assert parse(f"x{text} HELP") is None


@st.composite
def decorated(draw: st.DrawFn) -> tuple[str, str, str | None]:
    kind = draw(st.sampled_from(sorted(DOCUMENTED)))
    word = draw(st.sampled_from(DOCUMENTED[kind]))
    word = "".join(c.lower() if draw(st.booleans()) else c for c in word)
    code = None
    if kind == "join" and draw(st.booleans()):
        code = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
        word += draw(st.sampled_from(["", " ", "  ", "\t", "\n"])) + code
    blanks = st.text(alphabet=" \t\r\n", max_size=5)
    punctuation = st.text(alphabet=".!?,;:", max_size=4)
    return draw(blanks) + word + draw(punctuation) + draw(blanks), kind, code


@given(decorated())
def test_every_keyword_is_found_however_it_is_cased_spaced_and_punctuated(
    case: tuple[str, str, str | None],
) -> None:
    text, kind, code = case
    found = parse(text)
    assert found is not None, text
    assert (found.kind, found.postal_code) == (kind, code)
