"""Which message ids name deliveries sent through a gateway, for adapters whose receipts can name
a message more than one way (SMPP ids whose number base the adapter has not learned yet).

Adapters never touch the database: the sink a gateway's own connections hand their receipts to
(`ConnectionReceipts`) answers `known_message_ids`, and the adapter asks it (base.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from broadcaster.dispatch.receipt_writer import ReceiptsUnavailable, ReceiptWriter
from gateway_adapters.base import ReceiptsNotStored, ReceiptUpdate

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
    them in the receipt writer's shared transactions, and looks message ids up."""

    def __init__(self, writer: ReceiptWriter, pool: asyncpg.Pool, gateway: str) -> None:
        self._writer = writer
        self._pool = pool
        self._gateway = gateway

    async def __call__(self, updates: list[ReceiptUpdate]) -> None:
        """Commit the receipts; ReceiptsNotStored when they could not be (the writer has
        reported why, an outage once: outage.py), so the adapter need not."""
        try:
            await self._writer.write(self._gateway, updates)
        except ReceiptsUnavailable as exc:
            raise ReceiptsNotStored(str(exc)) from None

    async def known_message_ids(self, ids: Sequence[str]) -> set[str]:
        return await known_message_ids(self._pool, self._gateway, ids)
