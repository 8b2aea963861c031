"""Health, readiness and metrics."""

from __future__ import annotations

import contextlib

import asyncpg
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broadcaster import metrics, queue
from broadcaster.api.deps import PoolDep
from broadcaster.api.problems import Problem
from broadcaster.migrate import NotMigrated, ensure_migrated

router = APIRouter(tags=["ops"])


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(pool: PoolDep) -> dict[str, str]:
    try:
        async with pool.acquire(timeout=5) as conn:
            await ensure_migrated(conn)
    except NotMigrated as exc:
        raise Problem(503, "Not ready", str(exc)) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        raise Problem(503, "Not ready", "the database is unreachable") from None
    return {"status": "ready"}


@router.get("/metrics", tags=["ops"])
async def metrics_endpoint(pool: PoolDep) -> Response:
    with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError):
        metrics.QUEUE_DEPTH.set(await queue.queue_depth(pool))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
