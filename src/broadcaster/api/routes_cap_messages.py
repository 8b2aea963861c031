"""The CAP 1.2 messages the service kept (ingest/cap_messages.py), each as it was received: the
document byte for byte, for an audit of the exchange with the sending system (docs/cap.md,
"Messages kept"). An alert's status lists the messages that touched it."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from broadcaster.api.deps import DbDep, require
from broadcaster.api.fields import BIGINT_MAX
from broadcaster.api.openapi import errors
from broadcaster.api.problems import Problem
from broadcaster.auth import ApiKey
from broadcaster.ingest import cap, cap_messages

router = APIRouter(tags=["alerts"])

MessageId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.get(
    "/v1/cap/messages/{message_id}",
    response_class=Response,
    responses={
        200: {
            "content": {cap.MEDIA_TYPE: {"schema": {"type": "string"}, "example": cap.EXAMPLE}},
            "description": "The CAP document as received, byte for byte; Repr-Digest carries "
            "its SHA-256 (RFC 9530), the `sha256` the alert's status shows",
            "headers": {
                "Repr-Digest": {
                    "description": "sha-256=:<base64>:",
                    "schema": {"type": "string"},
                }
            },
        },
        **errors(401, 403, 404, 422, 503),
    },
)
async def get_cap_message(
    message_id: MessageId, db: DbDep, _key: ApiKey = require("alerts:read")
) -> Response:
    async with db.connection() as conn:
        found = await cap_messages.body(conn, message_id)
    if found is None:
        raise Problem(404, "Not found", f"no CAP message with id {message_id}")
    body, digest = found
    headers = {"Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:"}
    return Response(body, media_type=cap.MEDIA_TYPE, headers=headers)
