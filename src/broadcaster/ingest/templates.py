"""Message templates: standard texts with named placeholders (`{area}`), one text per language.

- A template's texts are parsed once, when it is stored: `{name}` is a placeholder (a letter or
  `_`, then letters, digits or `_`, at most 40), `{{` and `}}` are literal braces, any other
  brace is an error naming its position. Every language's text must use the same placeholders
  (a translation that leaves one out would tell some subscribers less), and Danish (`da`) is
  required: it is what a subscriber in any other language gets.
- Each text must fit the segment limit with every placeholder counted as its longest value:
  `value_lengths[name]` characters of the GSM-7 default alphabet (DEFAULT_VALUE_LENGTH when not
  given). Values longer than that are refused when an alert uses the template; a value outside
  the default alphabet can still make the rendered text longer, which the alert's own check
  (the rendered text against max_segments) catches.
- Storing a name again makes its next version; every version is kept. An alert is rendered
  from the current version when it is created and keeps the texts it was rendered to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from broadcaster.ingest.sms import segment_count

DEFAULT_LANGUAGE = "da"
DEFAULT_VALUE_LENGTH = 40
MAX_VALUE_LENGTH = 500
PLACEHOLDER_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,39}"
# A literal brace, a placeholder, or a brace that is neither (an error).
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + PLACEHOLDER_NAME + r")\}|[{}]")


class TemplateError(ValueError):
    """A template or the values given for it are not usable; the message names what, and for
    values `missing` and `extra` list the names."""

    def __init__(
        self, message: str, missing: list[str] | None = None, extra: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.extra = extra or []


class UnknownTemplate(LookupError):
    """No template of that name."""


@dataclass(frozen=True)
class Text:
    """One language's text, parsed: literal pieces and placeholder names, alternating
    (`pieces[0] names[0] pieces[1] ...`)."""

    pieces: tuple[str, ...]
    names: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> str:
        out = [self.pieces[0]]
        for name, piece in zip(self.names, self.pieces[1:], strict=True):
            out += [values[name], piece]
        return "".join(out)


def parse(text: str, where: str) -> Text:
    """Split a template text into pieces and placeholders; TemplateError naming `where` and the
    position of a stray brace."""
    pieces: list[str] = []
    names: list[str] = []
    current: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        current.append(text[position : match.start()])
        position = match.end()
        token = match.group()
        if match.group(1) is not None:
            pieces.append("".join(current))
            names.append(match.group(1))
            current = []
        elif token in ("{{", "}}"):
            current.append(token[0])
        else:
            raise TemplateError(
                f"{where}: the brace at position {match.start() + 1} is neither a placeholder "
                f"({{name}}: a letter or _, then letters, digits or _) nor doubled ({token * 2} "
                "for the character itself)"
            )
    current.append(text[position:])
    pieces.append("".join(current))
    return Text(tuple(pieces), tuple(names))


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    texts: Mapping[str, Text]
    sources: Mapping[str, str]  # the texts as written
    value_lengths: Mapping[str, int]

    @property
    def placeholders(self) -> list[str]:
        """The placeholder names, in order of first use in the Danish text."""
        return list(dict.fromkeys(self.texts[DEFAULT_LANGUAGE].names))

    def value_length(self, name: str) -> int:
        return self.value_lengths.get(name, DEFAULT_VALUE_LENGTH)

    def render(self, values: Mapping[str, str]) -> dict[str, str]:
        """The text in every language with `values` put in; TemplateError naming the values
        missing, those the template has no placeholder for, and those too long."""
        wanted = set(self.placeholders)
        missing = [n for n in self.placeholders if n not in values]
        extra = sorted(set(values) - wanted)
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if extra:
            problems.append(f"not in the template: {', '.join(extra)}")
        long = [
            n for n in self.placeholders if n in values and len(values[n]) > self.value_length(n)
        ]
        problems += [f"{n} is longer than {self.value_length(n)} characters" for n in long]
        if problems:
            raise TemplateError(
                f"values: {'; '.join(problems)} (template {self.name!r})", missing, extra
            )
        return {language: text.render(values) for language, text in self.texts.items()}


def build(
    name: str,
    sources: Mapping[str, str],
    value_lengths: Mapping[str, int],
    max_segments: int,
    version: int = 0,
) -> Template:
    """Parse and check a template (see the module docstring); TemplateError naming the text."""
    if DEFAULT_LANGUAGE not in sources:
        raise TemplateError(
            f"texts: a Danish text ({DEFAULT_LANGUAGE!r}) is required: subscribers in a language "
            "the template lacks get it"
        )
    texts = {language: parse(text, f"texts.{language}") for language, text in sources.items()}
    expected = set(texts[DEFAULT_LANGUAGE].names)
    for language, text in texts.items():
        if set(text.names) != expected:
            lacks = sorted(expected - set(text.names))
            adds = sorted(set(text.names) - expected)
            said = ([f"lacks {', '.join(lacks)}"] if lacks else []) + (
                [f"adds {', '.join(adds)}"] if adds else []
            )
            raise TemplateError(
                f"texts.{language}: every language must use the Danish text's placeholders; "
                f"this one {' and '.join(said)}"
            )
    unused = sorted(set(value_lengths) - expected)
    if unused:
        raise TemplateError(f"value_lengths: no placeholder named {', '.join(unused)}")
    template = Template(name, version, texts, dict(sources), dict(value_lengths))
    longest = {n: "x" * template.value_length(n) for n in expected}
    for language, text in texts.items():
        segments = segment_count(text.render(longest))
        if segments > max_segments:
            raise TemplateError(
                f"texts.{language} needs {segments} SMS segments with each placeholder at its "
                f"longest (value_lengths, default {DEFAULT_VALUE_LENGTH} characters); at most "
                f"{max_segments} are allowed"
            )
    return template


# One statement: the name's row (its version moved on when it exists, locking it so that two
# writers of one name take turns) and the version's texts.
STORE = """
WITH t AS (
    INSERT INTO templates (name) VALUES ($1)
    ON CONFLICT (name) DO UPDATE SET version = templates.version + 1, updated_at = now()
    RETURNING id, version
)
INSERT INTO template_versions (template_id, version, texts, value_lengths, created_by)
SELECT t.id, t.version, $2, $3, $4 FROM t
RETURNING template_id, version, created_at
"""

_SELECT = """
SELECT t.id, t.name, v.version, v.texts, v.value_lengths, v.created_at, v.created_by,
       t.created_at AS first_created_at
FROM templates t
JOIN template_versions v ON v.template_id = t.id
"""
CURRENT = _SELECT + "WHERE t.name = $1 AND v.version = coalesce($2, t.version)"
LIST = _SELECT + "WHERE v.version = t.version AND t.id < $1 ORDER BY t.id DESC LIMIT $2"


async def store(conn: asyncpg.Connection, template: Template, created_by: str) -> dict[str, Any]:
    """Store the template as its name's next version; returns it as `describe` does."""
    row = await conn.fetchrow(
        STORE, template.name, dict(template.sources), dict(template.value_lengths), created_by
    )
    return await get(conn, template.name, row["version"])


async def load(conn: asyncpg.Connection, name: str, version: int | None = None) -> Template:
    """The current version of a template (or the given one); UnknownTemplate if none."""
    row = await conn.fetchrow(CURRENT, name, version)
    if row is None:
        raise UnknownTemplate(name)
    return Template(
        row["name"],
        row["version"],
        {lang: parse(text, f"texts.{lang}") for lang, text in row["texts"].items()},
        row["texts"],
        row["value_lengths"],
    )


async def get(conn: asyncpg.Connection, name: str, version: int | None = None) -> dict[str, Any]:
    """A template as the API shows it; UnknownTemplate if there is none (of that version)."""
    row = await conn.fetchrow(CURRENT, name, version)
    if row is None:
        raise UnknownTemplate(name)
    return describe(row)


async def list_current(conn: asyncpg.Connection, before_id: int, limit: int) -> list[dict]:
    """The current version of each template, newest template first, below `before_id`."""
    return [describe(row) for row in await conn.fetch(LIST, before_id, limit)]


def describe(row: Any) -> dict[str, Any]:
    texts = row["texts"]
    names = parse(texts[DEFAULT_LANGUAGE], "texts.da").names
    return {
        "id": row["id"],
        "name": row["name"],
        "version": row["version"],
        "texts": texts,
        "placeholders": list(dict.fromkeys(names)),
        "value_lengths": {
            n: row["value_lengths"].get(n, DEFAULT_VALUE_LENGTH) for n in dict.fromkeys(names)
        },
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
    }
