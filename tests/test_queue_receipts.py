"""The claim/write-back statements and the receipt state machine on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from broadcaster import queue, receipts
from broadcaster.queue import Outcome
from gateway_adapters.base import DeliveryState, ReceiptUpdate


async def make_deliveries(conn: asyncpg.Connection, n: int, priority: int = 2) -> list[int]:
    alert = await conn.fetchval(
        "INSERT INTO alerts (message, area, priority, status) "
        "VALUES ('m', '{}'::jsonb, $1, 'dispatching') RETURNING id",
        priority,
    )
    subs = await conn.fetch(
        "INSERT INTO subscribers (phone) SELECT '+4530' || lpad(g::text, 6, '0') || "
        "lpad($2::bigint::text, 2, '0') FROM generate_series(1, $1) g RETURNING id",
        n,
        alert,
    )
    rows = await conn.fetch(
        "INSERT INTO deliveries (alert_id, subscriber_id, priority) "
        "SELECT $1, unnest($2::bigint[]), $3 RETURNING id",
        alert,
        [r["id"] for r in subs],
        priority,
    )
    return [r["id"] for r in rows]


async def test_concurrent_claims_are_disjoint_and_priority_first(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        normal = await make_deliveries(conn, 300, priority=2)
        emergency = await make_deliveries(conn, 50, priority=0)
    batches = await asyncio.gather(*(queue.claim(pool, 100, 60, f"w{i}") for i in range(4)))
    ids = [c.id for b in batches for c in b]
    assert len(ids) == len(set(ids)) == 350
    assert set(ids) == set(normal) | set(emergency)
    first = await queue.claim(pool, 10, 60, "late")
    assert first == []  # everything is leased
    # A fresh claim takes emergencies before normal ones.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE deliveries SET status = 'queued', due_at = now()")
    got = await queue.claim(pool, 50, 60, "w")
    assert {c.id for c in got} == set(emergency)


async def test_expired_lease_is_reclaimed_and_stale_writer_is_ignored(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        ids = await make_deliveries(conn, 5)
    crashed = await queue.claim(pool, 5, 0.2, "crashed")
    assert len(crashed) == 5
    assert await queue.claim(pool, 5, 60, "other") == []
    await asyncio.sleep(0.3)
    taken = await queue.claim(pool, 5, 60, "other")
    assert {c.id for c in taken} == set(ids)
    assert all(c.attempts == 2 for c in taken)
    # The crashed worker's late write must not overwrite the new owner's row.
    await queue.complete(pool, [Outcome(i, "failed", error="late") for i in ids], "crashed")
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sending'") == 5
    await queue.complete(pool, [Outcome(i, "sent", "gw", "m1") for i in ids], "other")
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 5


async def test_claim_uses_the_due_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # Mid-broadcast: many rows open. The claim must walk the due index in order, not
        # sort every open row per claim.
        await make_deliveries(conn, 20_000)
        await conn.execute("ANALYZE")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + queue.CLAIM, 1000, 60.0, "w", 2)
        )
    assert "deliveries_due" in plan, plan
    assert "Seq Scan on deliveries" not in plan, plan
    assert "Sort" not in plan, plan


def update(message_id: str, phone: str, state: DeliveryState, status: str) -> ReceiptUpdate:
    return ReceiptUpdate(message_id, phone, state, status)


async def sent_delivery(conn: asyncpg.Connection, message_id: str | None) -> tuple[int, str]:
    [delivery] = await make_deliveries(conn, 1)
    phone = await conn.fetchval(
        "SELECT s.phone FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE d.id = $1",
        delivery,
    )
    if message_id is None:
        await conn.execute(
            "UPDATE deliveries SET status = 'sending', claimed_by = 'w' WHERE id = $1", delivery
        )
    else:
        await conn.execute(
            "UPDATE deliveries SET status = 'sent', gateway = 'gw', "
            "gateway_message_id = $2 WHERE id = $1",
            delivery,
            message_id,
        )
    return delivery, phone


@pytest.mark.parametrize(
    ("sequence", "final"),
    [
        ([("ENROUTE", DeliveryState.SENT)], "sent"),
        ([("DELIVERED", DeliveryState.DELIVERED)], "delivered"),
        ([("DELIVERED", DeliveryState.DELIVERED), ("ENROUTE", DeliveryState.SENT)], "delivered"),
        (
            [("UNDELIVERABLE", DeliveryState.FAILED), ("DELIVERED", DeliveryState.DELIVERED)],
            "failed",
        ),
        ([("EXPIRED", DeliveryState.EXPIRED), ("EXPIRED", DeliveryState.EXPIRED)], "expired"),
        ([("ENROUTE", DeliveryState.SENT), ("DELIVERED", DeliveryState.DELIVERED)], "delivered"),
    ],
)
async def test_receipts_are_monotonic(
    pool: asyncpg.Pool, sequence: list[tuple[str, DeliveryState]], final: str
) -> None:
    async with pool.acquire() as conn:
        delivery, phone = await sent_delivery(conn, "m-1")
        for status, state in sequence:
            await receipts.record_receipts(conn, "gw", [update("m-1", phone, state, status)])
        assert await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", delivery) == final
        assert await conn.fetchval("SELECT count(*) FROM delivery_receipts WHERE applied") == len(
            sequence
        )


async def test_receipt_before_the_send_result_is_applied_when_it_is_written(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        delivery, phone = await sent_delivery(conn, None)
        await receipts.record_receipts(
            conn, "gw", [update("m-9", phone, DeliveryState.DELIVERED, "DELIVERED")]
        )
        assert await conn.fetchval("SELECT applied FROM delivery_receipts") is False
    await queue.complete(pool, [Outcome(delivery, "sent", "gw", "m-9")], "w")
    await receipts.apply_pending(pool, "gw", ["m-9"])
    assert await pool.fetchval("SELECT status FROM deliveries") == "delivered"
    assert await pool.fetchval("SELECT applied FROM delivery_receipts") is True


async def test_receipt_for_an_unknown_id_is_kept_and_changes_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        _, phone = await sent_delivery(conn, "m-1")
        stored = await receipts.record_receipts(
            conn,
            "gw",
            [
                update("nope", phone, DeliveryState.FAILED, "UNDELIVERABLE"),
                update("m-1", "+4599999999", DeliveryState.FAILED, "UNDELIVERABLE"),
            ],
        )
        await receipts.sweep_pending(conn)
    assert stored == 2
    assert await pool.fetchval("SELECT status FROM deliveries") == "sent"
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts WHERE NOT applied") == 2


async def test_applying_a_receipt_does_not_scan_deliveries(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await make_deliveries(conn, 20_000)
        # Batches of 1000 recipients share one message id, as with GatewayAPI.
        await conn.execute(
            "UPDATE deliveries SET status = 'sent', gateway = 'gw', "
            "gateway_message_id = (id / 1000)::text"
        )
        _delivery, phone = await sent_delivery(conn, "7")
        [receipt] = await conn.fetch(
            receipts.INSERT_RECEIPTS,
            "gw",
            ["7"],
            [phone],
            ["delivered"],
            ["DELIVERED"],
            [None],
            [None],
            [{}],
        )
        await conn.execute("ANALYZE")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + receipts.APPLY_BY_RECIPIENT, [receipt["id"]], "gw"
            )
        )
    assert "Seq Scan on deliveries" not in plan, plan
    assert "Seq Scan on subscribers" not in plan, plan


async def test_a_batch_holds_one_priority_and_the_emergency_lane_only_emergencies(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        normal = await make_deliveries(conn, 30, priority=2)
        high = await make_deliveries(conn, 5, priority=1)
    assert await queue.claim(pool, 100, 60, "urgent", max_priority=0) == []
    first = await queue.claim(pool, 100, 60, "w")
    assert {c.id for c in first} == set(high)  # not padded with normal ones
    async with pool.acquire() as conn:
        emergency = await make_deliveries(conn, 3, priority=0)
    assert {c.id for c in await queue.claim(pool, 100, 60, "urgent", max_priority=0)} == set(
        emergency
    )
    assert {c.id for c in await queue.claim(pool, 100, 60, "w")} == set(normal)


async def test_write_back_after_a_large_fan_out_does_not_scan(pool: asyncpg.Pool) -> None:
    """Statistics never show rows in flight (they are few), so the write-back must find this
    worker's rows through an index, not by scanning every delivery per batch."""
    from tests.test_fanout import DONUT, queue_alert

    from broadcaster.fanout import fan_out_next

    async with pool.acquire() as conn:
        await conn.execute("ANALYZE deliveries")  # statistics of an empty table
        await conn.execute(
            "INSERT INTO subscribers (phone) SELECT '+4531' || lpad(g::text, 6, '0') "
            "FROM generate_series(1, 20000) g"
        )
        await conn.execute(
            "INSERT INTO subscriber_locations (subscriber_id, position) "
            "SELECT id, point(12.05e6 + id, 55.05e6) FROM subscribers"
        )
        # A previous broadcast, finished and analyzed: the statistics say nothing is open.
        await queue_alert(conn, DONUT)
        await fan_out_next(conn)
        await conn.execute("UPDATE deliveries SET status = 'sent'")
        await conn.execute("ANALYZE deliveries")
        await queue_alert(conn, DONUT)
        result = await fan_out_next(conn)
        assert result is not None and result.recipients == 20_000
    async with pool.acquire() as conn:
        claim_plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + queue.CLAIM, 1000, 60.0, "w", 2)
        )
    # The fan-out refreshed the statistics: the claim walks the due index rather than sorting
    # every open row.
    assert "deliveries_due" in claim_plan, claim_plan
    assert "Sort" not in claim_plan, claim_plan
    claimed = await queue.claim(pool, 1000, 60, "w")
    async with pool.acquire() as conn:
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + queue.COMPLETE,
                [c.id for c in claimed],
                ["sent"] * 1000,
                ["gw"] * 1000,
                ["m"] * 1000,
                [None] * 1000,
                [None] * 1000,
                "w",
                [False] * 1000,
            )
        )
    assert "Seq Scan on deliveries" not in plan, plan
    assert "deliveries_open_by_alert" not in plan, plan
