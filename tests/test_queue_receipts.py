"""The claim/write-back statements and the receipt state machine on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from broadcaster.database import connect
from broadcaster.dispatch import queue, receipts
from broadcaster.dispatch.dispatcher import DB_ERRORS
from broadcaster.dispatch.queue import Outcome
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
    conns = [await pool.acquire() for _ in range(8)]
    try:
        batches = list(await asyncio.gather(*(queue.claim(c, 100, 60) for c in conns[:4])))
        # A batch holds one priority. Racing claims may each see the emergencies first and
        # share them, so what the race left is claimed one batch at a time on the other
        # connections (at most three more: 300 normal rows).
        spare = iter(conns[4:])
        while sum(len(b.rows) for b in batches) < 350:
            batches.append(await queue.claim(next(spare), 100, 60))
        ids = [c.id for b in batches for c in b.rows]
        assert len(ids) == len(set(ids)) == 350
        assert set(ids) == set(normal) | set(emergency)
        assert all(len({c.priority for c in b.rows}) <= 1 for b in batches)
        assert all(c.attempts == 1 for b in batches for c in b.rows)
        late = await queue.claim(next(spare), 10, 60)
        assert late.rows == []  # everything is held
        for b in batches:
            await b.abandon()
        # Given back untouched: a fresh claim takes emergencies before normal ones.
        got = await queue.claim(conns[0], 50, 60)
        assert {c.id for c in got.rows} == set(emergency)
        await got.abandon()
    finally:
        for c in conns:
            await pool.release(c)
    assert await pool.fetchval("SELECT sum(attempts) FROM deliveries") == 0


async def test_claimed_rows_come_back_when_the_holder_dies_or_hangs(
    pool: asyncpg.Pool, db_url: str
) -> None:
    async with pool.acquire() as conn:
        ids = await make_deliveries(conn, 5)
    async with pool.acquire() as holder, pool.acquire() as other:
        crashed = await queue.claim(holder, 5, 60)
        assert len(crashed) == 5
        assert (await queue.claim(other, 5, 60)).rows == []
        # The holder's process dies: its connection drops and the server rolls back.
        await other.execute("SELECT pg_terminate_backend($1)", holder.get_server_pid())
        for _ in range(100):
            taken = await queue.claim(other, 5, 60)
            if taken.rows:
                break
            await asyncio.sleep(0.02)
        assert {c.id for c in taken.rows} == set(ids)
        assert all(c.attempts == 1 for c in taken.rows)  # the lost attempt did not count
        # A late write by the dead holder fails; nothing it wrote survives.
        with pytest.raises(DB_ERRORS):
            await crashed.finish([Outcome(i, "failed", error="late") for i in ids])
        await taken.finish([Outcome(i, "sent", "gw", "m1") for i in ids])
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 5
    assert await pool.fetchval("SELECT sum(attempts) FROM deliveries") == 5

    # A holder that hangs (idle in its transaction past the hold time) is cut off by the server.
    async with pool.acquire() as conn:
        more = await make_deliveries(conn, 3)
    hung_conn = await connect(db_url)
    try:
        hung = await queue.claim(hung_conn, 3, 0.3)
        assert {c.id for c in hung.rows} == set(more)
        await asyncio.sleep(0.8)
        async with pool.acquire() as conn:
            again = await queue.claim(conn, 3, 60)
            assert {c.id for c in again.rows} == set(more)
            await again.abandon()
    finally:
        hung_conn.terminate()


async def test_finish_writes_outcomes_and_refunds_throttled_attempts(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ids = await make_deliveries(conn, 3)
        batch = await queue.claim(conn, 3, 60)
        await batch.finish(
            [
                Outcome(ids[0], "sent", "gw", "m-1"),
                Outcome(ids[1], "queued", error="throttled", refund_attempt=True),
                Outcome(ids[2], "failed", "gw", error="bad number"),
            ]
        )
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, status, attempts, gateway_message_id, sent_at, final_at FROM deliveries"
            )
        }
    assert (rows[ids[0]]["status"], rows[ids[0]]["attempts"]) == ("sent", 1)
    assert rows[ids[0]]["gateway_message_id"] == "m-1" and rows[ids[0]]["sent_at"] is not None
    assert (rows[ids[1]]["status"], rows[ids[1]]["attempts"]) == ("queued", 0)
    assert (rows[ids[2]]["status"], rows[ids[2]]["attempts"]) == ("failed", 1)
    assert rows[ids[2]]["final_at"] is not None


async def test_claim_uses_the_due_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # Mid-broadcast: many rows open. The claim must walk the due index in order, not
        # sort every open row per claim.
        await make_deliveries(conn, 20_000)
        await conn.execute("ANALYZE")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + queue.CLAIM, 1000, 2, "60000"))
        # In the quiet hours the bound is emergencies only (max_priority 0): over a queue of
        # normal rows the claim is one descent of the due index that finds nothing.
        async with conn.transaction():
            quiet = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN (ANALYZE, BUFFERS) " + queue.CLAIM, 1000, 0, "60000"
                )
            )
    assert "deliveries_due" in plan, plan
    assert "Seq Scan on deliveries" not in plan, plan
    assert "Sort" not in plan, plan
    assert "deliveries_due" in quiet and "Seq Scan on deliveries" not in quiet, quiet
    # PostgreSQL 18 writes the actual rows with two decimals (rows=0.00), older servers rows=0.
    assert re.search(r"actual [^)]* rows=0(\.00)? loops=1", quiet.splitlines()[0]), quiet
    hits = [int(n) for n in re.findall(r"shared hit=(\d+)", quiet.split("Planning")[0])]
    assert hits and max(hits) < 20, quiet


def update(message_id: str, phone: str, state: DeliveryState, status: str) -> ReceiptUpdate:
    return ReceiptUpdate(message_id, phone, state, status)


async def sent_delivery(conn: asyncpg.Connection, message_id: str | None) -> tuple[int, str]:
    [delivery] = await make_deliveries(conn, 1)
    phone = await conn.fetchval(
        "SELECT s.phone FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE d.id = $1",
        delivery,
    )
    if message_id is not None:
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
    async with pool.acquire() as conn, pool.acquire() as dispatcher:
        delivery, phone = await sent_delivery(conn, None)
        batch = await queue.claim(dispatcher, 1, 60)  # in flight: the gateway took it
        await receipts.record_receipts(
            conn, "gw", [update("m-9", phone, DeliveryState.DELIVERED, "DELIVERED")]
        )
        assert await conn.fetchval("SELECT applied FROM delivery_receipts") is False
        await batch.finish([Outcome(delivery, "sent", "gw", "m-9")])
    await receipts.apply_pending(pool, "gw", ["m-9"])
    assert await pool.fetchval("SELECT status FROM deliveries") == "delivered"
    assert await pool.fetchval("SELECT applied FROM delivery_receipts") is True


@pytest.mark.parametrize("phone_in_receipt", [True, False])
async def test_a_carrier_opt_out_that_beat_the_send_result_opts_out_when_applied(
    pool: asyncpg.Pool, phone_in_receipt: bool
) -> None:
    """A 21610 receipt committed before our write of the send result (a fast callback) waits
    unapplied; when the send result comes, the receipt applies and the number is opted out."""
    async with pool.acquire() as conn, pool.acquire() as dispatcher:
        delivery, phone = await sent_delivery(conn, None)
        batch = await queue.claim(dispatcher, 1, 60)
        stop = ReceiptUpdate(
            "m-9",
            phone if phone_in_receipt else None,
            DeliveryState.FAILED,
            "undelivered",
            error="twilio 21610",
            opted_out=True,
        )
        await receipts.record_receipts(conn, "gw", [stop])
        assert await conn.fetchval("SELECT applied FROM delivery_receipts") is False
        assert await conn.fetchval("SELECT status FROM subscribers") == "active"
        await batch.finish([Outcome(delivery, "sent", "gw", "m-9")])
    await receipts.apply_pending(pool, "gw", ["m-9"])
    assert await pool.fetchval("SELECT status FROM deliveries") == "failed"
    assert await pool.fetchval("SELECT status FROM subscribers") == "opted_out"
    assert await pool.fetchval("SELECT opt_out_reason FROM subscribers") == (
        "carrier opt-out via gw: twilio 21610"
    )


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
        # Stored unapplied, as a receipt that beat the send result is.
        [receipt] = await conn.fetch(
            "INSERT INTO delivery_receipts (gateway, gateway_message_id, phone, state, "
            "provider_status, raw) VALUES ('gw', '7', $1, 'delivered', 'DELIVERED', '{}') "
            "RETURNING id",
            phone,
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
    async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
        assert (await queue.claim(a, 100, 60, max_priority=0)).rows == []
        first = await queue.claim(a, 100, 60)
        assert {r.id for r in first.rows} == set(high)  # not padded with normal ones
        emergency = await make_deliveries(c, 3, priority=0)
        urgent = await queue.claim(b, 100, 60, max_priority=0)
        assert {r.id for r in urgent.rows} == set(emergency)
        await urgent.finish([Outcome(r.id, "sent", "gw", "m") for r in urgent.rows])
        assert {r.id for r in (await queue.claim(c, 100, 60)).rows} == set(normal)


async def test_write_back_after_a_large_fan_out_does_not_scan(pool: asyncpg.Pool) -> None:
    """Statistics never show rows in flight (they are few), so the write-back must find this
    worker's rows through an index, not by scanning every delivery per batch."""
    from tests.test_fanout import DONUT, queue_alert

    from broadcaster.dispatch.fanout import fan_out_next

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
            r[0] for r in await conn.fetch("EXPLAIN " + queue.CLAIM, 1000, 2, "60000")
        )
    # The fan-out refreshed the statistics: the claim walks the due index rather than sorting
    # every open row.
    assert "deliveries_due" in claim_plan, claim_plan
    assert "Sort" not in claim_plan, claim_plan
    async with pool.acquire() as conn:
        claimed = await queue.claim(conn, 1000, 60)
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + queue.COMPLETE,
                *queue.complete_args([Outcome(c.id, "sent", "gw", "m") for c in claimed.rows]),
            )
        )
        await claimed.abandon()
    assert "Seq Scan on deliveries" not in plan, plan
    assert "deliveries_open_by_alert" not in plan, plan
    # One index scan over the whole id array, not one per row with the array re-read each time.
    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert conditions and all("ANY" in c and "r.id" not in c for c in conditions), plan


async def test_cancelling_skips_rows_in_flight_and_does_not_wait_for_them(
    pool: asyncpg.Pool,
) -> None:
    from broadcaster.ingest.alerts import cancel_alert

    async with pool.acquire() as conn:
        ids = await make_deliveries(conn, 10)
        alert_id = await conn.fetchval("SELECT alert_id FROM deliveries LIMIT 1")
    async with pool.acquire() as dispatcher, pool.acquire() as api:
        batch = await queue.claim(dispatcher, 4, 60)  # out at the gateway right now
        assert await asyncio.wait_for(cancel_alert(api, alert_id), 2) is True
        statuses = dict(await api.fetch("SELECT id, status FROM deliveries"))
        held = {c.id for c in batch.rows}
        assert {statuses[i] for i in held} == {"queued"}
        assert {statuses[i] for i in set(ids) - held} == {"cancelled"}
        await batch.finish([Outcome(i, "sent", "gw", "m") for i in held])
    # What the gateway took is recorded as sent; a claim now finds nothing.
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 4
    async with pool.acquire() as conn:
        assert (await queue.claim(conn, 10, 60)).rows == []


async def test_claimed_fields_follow_the_claim_columns(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await make_deliveries(conn, 1)
        async with conn.transaction():
            [row] = await conn.fetch(queue.CLAIM, 1, 2, "60000")
    assert tuple(row.keys()) == queue.Claimed._fields
