"""Group commit of receipts (ReceiptWriter) and the one-statement record on a real PostgreSQL:
answers only after the commit, batching across requests, failures, shutdown, query plans."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from broadcaster.database import create_pool
from broadcaster.dispatch import receipts
from broadcaster.dispatch.receipt_writer import ReceiptsUnavailable, ReceiptWriter
from broadcaster.ops import metrics
from gateway_adapters.base import DeliveryState, ReceiptUpdate

# Subscriber i has phone +4531000000 + i and one delivery through gateway 'gw' in state 'sent',
# GatewayAPI style: one message id per 1000 recipients.
SEED = """
WITH subs AS (
    INSERT INTO subscribers (phone)
    SELECT '+' || (4531000000 + g)::text FROM generate_series(0, $1 - 1) g
    RETURNING id, phone
), alert AS (
    INSERT INTO alerts (message, area, priority, status)
    VALUES ('m', '{}'::jsonb, 2, 'dispatching') RETURNING id
)
INSERT INTO deliveries (alert_id, subscriber_id, priority, status, attempts, gateway,
                        gateway_message_id, sent_at)
SELECT alert.id, subs.id, 2, 'sent', 1, 'gw',
       ((substr(subs.phone, 2)::bigint - 4531000000) / 1000 + 1)::text, now()
FROM alert, subs
"""


def phone(i: int) -> str:
    return f"+{4531000000 + i}"


def delivered(
    i: int, status: str = "DELIVERED", state: DeliveryState | None = None
) -> ReceiptUpdate:
    return ReceiptUpdate(
        gateway_message_id=str(i // 1000 + 1),
        phone=phone(i),
        state=state or DeliveryState.DELIVERED,
        provider_status=status,
        occurred_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        raw={"id": i // 1000 + 1, "msisdn": int(phone(i)[1:]), "status": status},
    )


async def seed(conn: asyncpg.Connection, n: int) -> None:
    await conn.execute(SEED, n)
    await conn.execute("ANALYZE")


async def status_of(pool: asyncpg.Pool, i: int) -> str:
    return str(
        await pool.fetchval(
            "SELECT d.status FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE s.phone = $1",
            phone(i),
        )
    )


@pytest.fixture
async def writer(pool: asyncpg.Pool) -> AsyncIterator[ReceiptWriter]:
    writer = ReceiptWriter(pool)
    yield writer
    await writer.close()  # gives its connection back to the pool


async def test_concurrent_requests_share_commits_and_each_gets_its_count(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 300)
    writer = ReceiptWriter(pool, max_batch=50)
    requests = [[delivered(i)] for i in range(200)] + [
        [delivered(i) for i in range(200 + 10 * k, 210 + 10 * k)] for k in range(10)
    ]
    try:
        counts = await asyncio.gather(*(writer.write("gw", r) for r in requests))
    finally:
        await writer.close()
    assert counts == [len(r) for r in requests]
    # 210 requests queued at once: 300 receipts in flushes of at most 50.
    assert (writer.flushes, writer.flushed_receipts) == (6, 300)
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts WHERE applied") == 300
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'") == 300


async def test_arrivals_during_a_flush_go_into_the_next(
    pool: asyncpg.Pool, writer: ReceiptWriter
) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 100)
    first = asyncio.create_task(writer.write("gw", [delivered(0)]))
    await asyncio.sleep(0.001)  # its flush is under way
    rest = await asyncio.gather(*(writer.write("gw", [delivered(i)]) for i in range(1, 100)))
    assert await first == 1 and rest == [1] * 99
    assert writer.flushes == 2


async def test_overlapping_flushes_with_receipts_for_the_same_deliveries(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Two flushes at once, both moving the same deliveries (duplicate and late receipts in
    random order): no request fails, no batch deadlocks (and has to be retried request by
    request), every receipt is stored and applied, and every delivery ends in a final state."""
    async with pool.acquire() as conn:
        await seed(conn, 50)
    writer = ReceiptWriter(pool, max_batch=10, max_flushes=2)
    states = [
        ("DELIVERED", DeliveryState.DELIVERED),
        ("UNDELIVERABLE", DeliveryState.FAILED),
        ("ENROUTE", DeliveryState.SENT),
    ]
    try:
        for wave in range(3):
            receipts_ = [delivered(n % 50, *states[(n // 50 + wave) % 3]) for n in range(200)]
            random.Random(wave).shuffle(receipts_)
            counts = await asyncio.gather(*(writer.write("gw", [u]) for u in receipts_))
            assert counts == [1] * 200
    finally:
        await writer.close()
    assert writer.flushes >= 60 and writer.flushed_receipts == 600
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts WHERE applied") == 600
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 0


async def test_writers_that_write_again_as_soon_as_answered_never_hang(
    pool: asyncpg.Pool,
) -> None:
    # Each answer wakes its writer, which writes again at once, while the flushers are ending:
    # a write must never count on a flusher that has already found the queue empty.
    async with pool.acquire() as conn:
        await seed(conn, 200)
    writer = ReceiptWriter(pool, max_flushes=2)

    async def one_after_another(start: int) -> None:
        for i in range(start, 200, 4):
            assert await writer.write("gw", [delivered(i)]) == 1

    try:
        await asyncio.wait_for(asyncio.gather(*(one_after_another(k) for k in range(4))), 30)
    finally:
        await writer.close()
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'") == 200


async def test_a_write_returns_only_after_its_commit(
    pool: asyncpg.Pool, writer: ReceiptWriter
) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 10)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE delivery_receipts IN EXCLUSIVE MODE")
        task = asyncio.create_task(writer.write("gw", [delivered(1)]))
        done, _ = await asyncio.wait([task], timeout=0.5)
        assert not done  # the insert waits for the lock: no answer yet
    assert await asyncio.wait_for(task, 10) == 1
    assert await status_of(pool, 1) == "delivered"
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 1


async def test_batch_takes_the_strongest_receipt_per_delivery(
    pool: asyncpg.Pool, writer: ReceiptWriter
) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 10)
    early = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    late = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    batch = [
        # Delivery 1: a transient receipt does not block the final one in the same batch.
        [delivered(1, "ENROUTE", DeliveryState.SENT)],
        [delivered(1)],
        # Delivery 2: of two final receipts the one that happened first wins.
        [
            ReceiptUpdate(
                "1", phone(2), DeliveryState.DELIVERED, "DELIVERED", occurred_at=late, raw={}
            )
        ],
        [
            ReceiptUpdate(
                "1", phone(2), DeliveryState.FAILED, "UNDELIVERABLE", occurred_at=early, raw={}
            )
        ],
        # Unknown message id and an unknown recipient: kept unapplied, nothing moves.
        [ReceiptUpdate("999", phone(3), DeliveryState.FAILED, "REJECTED", raw={})],
        [ReceiptUpdate("1", "+4599999999", DeliveryState.FAILED, "REJECTED", raw={})],
        # Another gateway's receipt with a known id does not touch 'gw' deliveries.
        [ReceiptUpdate("1", phone(4), DeliveryState.FAILED, "REJECTED", raw={})],
    ]
    gateways = ["gw"] * 6 + ["other"]
    await asyncio.gather(*(writer.write(g, r) for g, r in zip(gateways, batch, strict=True)))
    assert [await status_of(pool, i) for i in (1, 2, 3, 4)] == [
        "delivered",
        "failed",
        "sent",
        "sent",
    ]
    rows = await pool.fetch(
        "SELECT gateway_message_id, phone, applied FROM delivery_receipts ORDER BY id"
    )
    assert [r["applied"] for r in rows] == [True, True, True, True, False, False, False]
    assert (
        await pool.fetchval(
            "SELECT final_at FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE s.phone = $1",
            phone(2),
        )
        == early
    )


async def test_receipt_without_recipient_matches_by_message_id(
    pool: asyncpg.Pool, writer: ReceiptWriter
) -> None:
    # Twilio style: one id per message; a callback without 'To' carries no phone.
    async with pool.acquire() as conn:
        await seed(conn, 3)
        await conn.execute("UPDATE deliveries SET gateway_message_id = 'SM' || subscriber_id::text")
        sid = await conn.fetchval(
            "SELECT gateway_message_id FROM deliveries d JOIN subscribers s "
            "ON s.id = d.subscriber_id WHERE s.phone = $1",
            phone(1),
        )
    await writer.write("gw", [ReceiptUpdate(sid, None, DeliveryState.FAILED, "failed", raw={})])
    assert [await status_of(pool, i) for i in (0, 1, 2)] == ["sent", "failed", "sent"]
    assert await pool.fetchval("SELECT applied FROM delivery_receipts") is True


async def test_a_refused_receipt_fails_alone(pool: asyncpg.Pool, writer: ReceiptWriter) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 20)
        # A receipt the database refuses (standing in for bad data): its message id.
        await conn.execute(
            "ALTER TABLE delivery_receipts ADD CONSTRAINT no_poison "
            "CHECK (gateway_message_id <> 'poison')"
        )
    poison = ReceiptUpdate("poison", phone(0), DeliveryState.FAILED, "REJECTED", raw={})
    requests = [[delivered(i)] for i in range(1, 11)] + [[poison]]
    outcomes = await asyncio.gather(
        *(writer.write("gw", r) for r in requests), return_exceptions=True
    )
    assert outcomes[:10] == [1] * 10
    assert isinstance(outcomes[10], ReceiptsUnavailable)
    assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 10
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'") == 10


async def test_database_outage_fails_every_request_and_stores_nothing(
    db_url: str, server_url: str
) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await seed(conn, 10)
        name = await conn.fetchval("SELECT current_database()")
    writer = ReceiptWriter(pool, acquire_timeout=2.0)
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        outcomes = await asyncio.gather(
            *(writer.write("gw", [delivered(i)]) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(o, ReceiptsUnavailable) for o in outcomes), outcomes
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        # Back: the next receipts are committed again.
        assert await writer.write("gw", [delivered(7)]) == 1
        assert await pool.fetchval("SELECT count(*) FROM delivery_receipts") == 1
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await writer.close()
        await asyncio.wait_for(pool.close(), 10)


async def test_close_commits_what_is_queued_and_then_refuses(
    pool: asyncpg.Pool, writer: ReceiptWriter
) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 100)
    tasks = [asyncio.create_task(writer.write("gw", [delivered(i)])) for i in range(100)]
    await asyncio.sleep(0)  # the requests are queued; the first flush is under way
    await writer.close()
    assert all(t.done() for t in tasks)
    assert [t.result() for t in tasks] == [1] * 100
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'") == 100
    with pytest.raises(ReceiptsUnavailable):
        await writer.write("gw", [delivered(1)])


async def test_receipts_are_counted_in_metrics(pool: asyncpg.Pool, writer: ReceiptWriter) -> None:
    async with pool.acquire() as conn:
        await seed(conn, 5)
    counter = metrics.RECEIPTS.labels("gw", "delivered")
    before = counter._value.get()
    await asyncio.gather(*(writer.write("gw", [delivered(i)]) for i in range(5)))
    assert counter._value.get() - before == 5


async def explain(conn: asyncpg.Connection, statement: str, args: tuple, mode: str) -> str:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + statement, *args))


async def test_recording_a_batch_looks_everything_up_by_index(pool: asyncpg.Pool) -> None:
    """1 to 1000 receipts against 50,000 deliveries: index lookups only, with custom and generic
    plans, while the statistics say every delivery is 'sent' and once they say none is (after a
    broadcast's receipts are in: the update then scanned deliveries for the few 'sent' rows).
    And the estimated cost stays below PostgreSQL's default jit_above_cost (100,000), so that
    a server with JIT does not compile the statement on every execution."""
    async with pool.acquire() as conn:
        await seed(conn, 50_000)
        plans = {}
        for stats in ("all sent", "none sent"):
            if stats == "none sent":
                await conn.execute("UPDATE deliveries SET status = 'delivered'")
                await conn.execute("VACUUM ANALYZE deliveries")
            for size in (1, 64, 1000):
                updates = [delivered(i) for i in range(7, 50_000, 50_000 // size)][:size]
                with_phone = receipts.record_arguments([("gw", updates)])
                # Half without a phone (by message id) for the other statement.
                no_phone = receipts.record_arguments(
                    [
                        (
                            "gw",
                            [u if k % 2 else replace(u, phone=None) for k, u in enumerate(updates)],
                        )
                    ]
                )
                for name, statement, args in (
                    ("by recipient", receipts.RECORD_RECEIPTS, with_phone),
                    ("by message", receipts.RECORD_RECEIPTS_BY_MESSAGE, no_phone),
                ):
                    for mode in ("force_custom_plan", "force_generic_plan"):
                        plans[stats, size, name, mode] = await explain(conn, statement, args, mode)
    for key, plan in plans.items():
        for table in ("deliveries", "subscribers", "delivery_receipts"):
            assert f"Seq Scan on {table}" not in plan, (key, plan)
        if key[2] == "by recipient":
            total = float(plan.splitlines()[0].split("..")[1].split()[0])
            assert total < 100_000, (key, plan)


async def end_other_sessions(pool: asyncpg.Pool) -> None:
    """What a restart does to the pool's and the writer's connections."""
    ended = await pool.fetchval(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()) t"
    )
    assert ended >= 1


async def test_a_held_connection_the_server_ended_is_replaced_not_answered_503(
    pool: asyncpg.Pool, writer: ReceiptWriter
) -> None:
    """After a database restart the writer's held connection is dead while the database is
    back: the receipts go through a fresh one instead of failing (a Twilio receipt answered
    503 is not sent again)."""
    async with pool.acquire() as conn:
        await seed(conn, 10)
    assert await writer.write("gw", [delivered(1)]) == 1  # the writer now holds a connection
    # At once, before the client has read the end of the connection, and after it has.
    await end_other_sessions(pool)
    assert await writer.write("gw", [delivered(2)]) == 1
    await end_other_sessions(pool)
    await asyncio.sleep(0.2)
    assert await writer.write("gw", [delivered(3)]) == 1
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'") == 3
