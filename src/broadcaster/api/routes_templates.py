"""Message templates: store one (each store of a name is its next version), list, read."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from broadcaster.api import pagination
from broadcaster.api.alert_schema import Language, Message
from broadcaster.api.deps import DbDep, RequestId, SettingsDep, require
from broadcaster.api.fields import Digits
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest import templates
from broadcaster.ops import audit

log = logging.getLogger(__name__)

router = APIRouter(tags=["templates"])

# Those who write alerts write their standard texts; those who read alerts read them.
TEMPLATES_WRITE_SCOPE = "alerts:write"
TEMPLATES_READ_SCOPE = "alerts:read"

TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
TemplateName = Annotated[
    str,
    Field(
        pattern=TEMPLATE_NAME_PATTERN,
        description="Lower-case letters, digits, `_`, `.` and `-`; at most 100",
        examples=["burglary_warning"],
    ),
]
PlaceholderName = Annotated[str, Field(pattern="^" + templates.PLACEHOLDER_NAME + "$")]
ValueLength = Annotated[int, Field(ge=1, le=templates.MAX_VALUE_LENGTH)]


class TemplateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "burglary_warning",
                    "texts": {
                        "da": "Politiet: indbrud i {area}. Se noget? Ring 114.",
                        "en": "Police: burglaries in {area}. Seen anything? Call 114.",
                    },
                    "value_lengths": {"area": 30},
                }
            ]
        },
    )
    name: TemplateName
    texts: Annotated[
        dict[Language, Message],
        Field(
            min_length=1,
            max_length=20,
            description="One text per language (`da` required: subscribers in a language the "
            "template lacks get it). `{name}` is a placeholder, `{{` and `}}` are literal "
            "braces; every text must use the same placeholders.",
        ),
    ]
    value_lengths: Annotated[
        dict[PlaceholderName, ValueLength],
        Field(
            max_length=50,
            description="The longest value of each placeholder (default "
            f"{templates.DEFAULT_VALUE_LENGTH} characters): each text must fit "
            "BROADCASTER_MAX_SEGMENTS with its placeholders that long, and longer values are "
            "refused when an alert uses the template",
        ),
    ] = {}

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, value: dict[str, str]) -> dict[str, str]:
        for language, text in value.items():
            if not text.strip():
                raise ValueError(f"the {language} text must not be blank")
        return value


class TemplateOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "name": "burglary_warning",
                    "version": 2,
                    "texts": {
                        "da": "Politiet: indbrud i {area}. Se noget? Ring 114.",
                        "en": "Police: burglaries in {area}. Seen anything? Call 114.",
                    },
                    "placeholders": ["area"],
                    "value_lengths": {"area": 30},
                    "created_at": "2026-12-07T10:00:00+00:00",
                    "created_by": "command-centre",
                }
            ]
        }
    )
    id: int
    name: str
    version: int = Field(description="1 for a new name, one more for each store of it")
    texts: dict[str, str]
    placeholders: list[str] = Field(description="In order of first use in the Danish text")
    value_lengths: dict[str, int]
    created_at: datetime = Field(description="When this version was stored")
    created_by: str | None = Field(description="The name of the API key that stored it")


@router.post(
    "/v1/templates",
    status_code=201,
    response_model=TemplateOut,
    responses={201: {"description": "Stored, as the name's next version"}, **errors(400, 413, 422)},
)
async def post_template(
    body: TemplateIn,
    db: DbDep,
    settings: SettingsDep,
    request_id: RequestId,
    key: ApiKey = require(TEMPLATES_WRITE_SCOPE),
) -> JSONResponse:
    """Store a template: a new name is version 1, an existing one gets its next version, which
    alerts use from then on (alerts already created keep their texts)."""
    try:
        template = templates.build(body.name, body.texts, body.value_lengths, settings.max_segments)
    except templates.TemplateError as exc:
        raise Problem(422, "Invalid template", str(exc)) from None
    async with db.connection() as conn, conn.transaction():
        stored = await templates.store(conn, template, key.name)
        await audit.record(
            conn,
            key.name,
            audit.TEMPLATE_STORED,
            f"template:{stored['id']}",
            request_id,
            {"name": body.name, "version": stored["version"]},
        )
    log.info("template stored", extra={"template": body.name, "version": stored["version"]})
    return JSONResponse(stored, status_code=201, headers={"Location": f"/v1/templates/{body.name}"})


@router.get("/v1/templates", response_model=pagination.Page[TemplateOut], responses=errors(422))
async def get_templates(
    db: DbDep,
    _key: ApiKey = require(TEMPLATES_READ_SCOPE),
    limit: pagination.Limit = 50,
    cursor: pagination.Cursor = None,
) -> dict[str, Any]:
    """The current version of every template, newest name first, a page at a time."""
    before = pagination.decode(cursor)
    async with db.connection() as conn:
        rows = await templates.list_current(conn, before, limit + 1)
    return pagination.page(rows, [r["id"] for r in rows], limit)


@router.get("/v1/templates/{name}", response_model=TemplateOut, responses=errors(404, 422))
async def get_template(
    name: Annotated[str, Path(pattern=TEMPLATE_NAME_PATTERN)],
    db: DbDep,
    _key: ApiKey = require(TEMPLATES_READ_SCOPE),
    version: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="An earlier version; the current one when omitted"),
        Digits,
    ] = None,
) -> dict[str, Any]:
    """A template: its current version, or the version asked for."""
    try:
        async with db.connection() as conn:
            return await templates.get(conn, name, version)
    except templates.UnknownTemplate:
        which = f"version {version} of " if version is not None else ""
        raise Problem(404, "Not found", f"no {which}template named {name!r}") from None
