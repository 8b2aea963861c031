"""The sink a gateway's own connections (SMPP) hand their receipts to, with what else it answers:
which message ids name deliveries sent through the gateway, for adapters whose receipts can name
a message more than one way (SMPP ids whose number base the adapter has not learned yet), and
where inbound messages go.

Adapters never touch the database: the sink (`ConnectionReceipts`) answers `known_message_ids`
and takes `inbound` messages, and the adapter asks it (base.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from broadcaster.citizens.inbound import store_batch
from broadcaster.database import describe_error, is_outage
from broadcaster.dispatch.receipt_writer import ReceiptsUnavailable, ReceiptWriter
from broadcaster.ops import metrics
from broadcaster.settings import Settings
from gateway_adapters.base import InboundMessage, ReceiptsNotStored, ReceiptUpdate

log = logging.getLogger(__name__)

# Through deliveries_gateway_message (gateway_message_id, subscriber_id): one probe per id.
KNOWN_MESSAGE_IDS = """
SELECT DISTINCT gateway_message_id FROM deliveries
WHERE gateway_message_id = ANY($2::text[]) AND gateway = $1
"""

LOOKUP_TIMEOUT = 5.0  # a lookup that takes longer leaves the receipts for the SMSC to resend


async def known_message_ids(pool: asyncpg.Pool, gateway: str, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` that name a delivery sent through `gateway`."""
    rows = await pool.fetch(KNOWN_MESSAGE_IDS, gateway, list(ids), timeout=LOOKUP_TIMEOUT)
    return {row[0] for row in rows}


class ConnectionReceipts:
    """The receipt sink of a gateway whose receipts arrive on its own connection (SMPP): commits
    them in the receipt writer's shared transactions, looks message ids up, and stores and acts
    on inbound messages."""

    def __init__(
        self, writer: ReceiptWriter, pool: asyncpg.Pool, gateway: str, settings: Settings
    ) -> None:
        self._writer = writer
        self._pool = pool
        self._gateway = gateway
        self._settings = settings

    async def __call__(self, updates: list[ReceiptUpdate]) -> None:
        """Commit the receipts; ReceiptsNotStored when they could not be (the writer has
        reported why, an outage once: outage.py), so the adapter need not."""
        try:
            await self._writer.write(self._gateway, updates)
        except ReceiptsUnavailable as exc:
            raise ReceiptsNotStored(str(exc)) from None

    async def known_message_ids(self, ids: Sequence[str]) -> set[str]:
        return await known_message_ids(self._pool, self._gateway, ids)

    async def inbound(self, messages: list[InboundMessage]) -> None:
        """Store the messages and act on them (citizens/inbound.py) in one transaction; returns
        once committed. The adapter's receiving already batches them (what arrived together),
        and they are few next to receipts: no group commit across calls. ReceiptsNotStored when
        the database is away (reported here, once per call, without the data)."""
        try:
            async with self._pool.acquire(timeout=LOOKUP_TIMEOUT) as conn:
                stored = await store_batch(conn, self._settings, [(self._gateway, messages)])
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning(
                "inbound messages not stored: %s; the SMSC will send them again",
                describe_error(exc),
                extra={"gateway": self._gateway},
            )
            raise ReceiptsNotStored(describe_error(exc)) from None
        for kind, n in stored.kinds.items():
            metrics.INBOUND.labels(kind).inc(n)
