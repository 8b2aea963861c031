"""Group commit of inbound SMS for the API: the messages of concurrent webhook requests are
stored (and acted on) in one transaction, as receipts are (dispatch/receipt_writer.py, whose
batching, deadline and failure handling this reuses).

A request's handler awaits `InboundWriter.write(gateway, messages, wait_seconds=...)`, which
returns once its messages are committed and raises `ReceiptsUnavailable` (answer 503: the
gateway sends them again) or `ReceiptsRefused` (answer 422: they can never be stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from broadcaster.citizens.inbound import store_batch
from broadcaster.dispatch.receipt_writer import ReceiptWriter
from broadcaster.ops import metrics
from broadcaster.settings import Settings


class InboundWriter(ReceiptWriter):
    """Commits the inbound messages of many concurrent requests in shared transactions."""

    writes = "inbound"

    def __init__(self, pool: asyncpg.Pool, settings: Settings, **kwargs: Any) -> None:
        super().__init__(pool, **kwargs)
        self._settings = settings

    async def _prepare(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        """STORE's generic plan is its custom plans (per-message lookups;
        tests/test_inbound_plans.py checks both): planned once, as receipts are."""
        await conn.execute("SET plan_cache_mode = force_generic_plan")

    async def _record(
        self, conn: asyncpg.pool.PoolConnectionProxy, pairs: list[tuple[str, Sequence[Any]]]
    ) -> int:
        stored = await store_batch(
            conn, self._settings, pairs, statement_timeout=self._statement_timeout
        )
        for kind, n in stored.kinds.items():
            metrics.INBOUND.labels(kind).inc(n)
        return sum(len(messages) for _, messages in pairs)

    def _count(self, pairs: list[tuple[str, Sequence[Any]]]) -> None:
        """Counted by kind in `_record` (the kind is only known once stored)."""
