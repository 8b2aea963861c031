"""Cursor pagination, newest first: a page ends with `next_cursor`, an opaque token for the
rest (the last row's id), or null on the last page. Rows added meanwhile never shift a page."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from broadcaster.api.fields import BIGINT_MAX, Digits
from broadcaster.api.problems import Problem

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=200, description="Rows per page"), Digits]
Cursor = Annotated[
    str | None,
    Query(max_length=40, description="`next_cursor` of the page before; omit for the first"),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int:
    """The id below which the page starts (a bigint above every id for the first page)."""
    if cursor is None:
        return BIGINT_MAX
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        last_id = int(value)
        if version != "v1" or not 1 <= last_id <= BIGINT_MAX:
            raise ValueError(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(422, "Invalid request", "cursor: not a cursor this API gave") from None
    return last_id


def page(items: list[T], ids: list[int], limit: int) -> dict[str, object]:
    """A page from up to limit + 1 rows fetched (the extra one says whether there are more)."""
    more = len(items) > limit
    return {
        "items": items[:limit],
        "next_cursor": encode(ids[limit - 1]) if more else None,
    }
