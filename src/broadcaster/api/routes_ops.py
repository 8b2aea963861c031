"""Health, readiness and metrics."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broadcaster.api.deps import DbDep
from broadcaster.api.openapi import errors, example
from broadcaster.api.problems import DATABASE_ERRORS, Problem
from broadcaster.dispatch import queue
from broadcaster.migrate import NotMigrated, ensure_migrated

router = APIRouter(tags=["ops"])

METRICS_EXAMPLE = """\
# HELP broadcaster_alerts_created_total Alerts accepted by the API, by priority and source \
(json: POST /v1/alerts; cap: CAP)
# TYPE broadcaster_alerts_created_total counter
broadcaster_alerts_created_total{priority="high",source="json"} 12.0
broadcaster_alerts_created_total{priority="emergency",source="cap"} 2.0
# HELP broadcaster_queue_depth Deliveries waiting to be submitted (queued or in flight), by \
priority
# TYPE broadcaster_queue_depth gauge
broadcaster_queue_depth{priority="emergency"} 0.0
broadcaster_queue_depth{priority="high"} 1843.0
broadcaster_queue_depth{priority="normal"} 0.0
"""


@router.get("/healthz", responses={200: example({"status": "ok"})})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={200: example({"status": "ready"}), **errors(503)})
async def readyz(db: DbDep) -> dict[str, str]:
    try:
        async with db.connection() as conn:
            await ensure_migrated(conn)
    except NotMigrated as exc:
        raise Problem(503, "Not ready", str(exc)) from None
    except DATABASE_ERRORS:
        raise Problem(
            503, "Not ready", "the database is unreachable", headers={"Retry-After": "1"}
        ) from None
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"example": METRICS_EXAMPLE}},
            "description": "Prometheus text format",
        }
    },
)
async def metrics_endpoint(db: DbDep) -> Response:
    with contextlib.suppress(*DATABASE_ERRORS):
        async with db.connection() as conn:
            await queue.refresh_gauges(conn)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
