"""The statements inbound SMS run are index lookups per message whatever the batch size and the
statistics: storing a batch of 1 to 1000 messages (custom and generic plans) and cancelling a
STOP's queued deliveries, against 50,000 subscribers, a broadcast's deliveries and thousands of
notices in the alerts table. Checked by EXPLAIN, like the receipts' statement."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from broadcaster.citizens.inbound import CANCEL_QUEUED, STORE

N = 50_000


async def seed(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO subscribers (phone) "
        "SELECT '+4530' || lpad(g::text, 6, '0') FROM generate_series(1, $1) g",
        N,
    )
    # A broadcast to everyone, half sent, and 5,000 notices (one-delivery alerts) finished long
    # ago, as a service that has answered many keywords and sign-ups has.
    await conn.execute(
        """WITH alert AS (
               INSERT INTO alerts (message, area, priority, status, recipients, fanned_out_at)
               VALUES ('x', '{}', 2, 'dispatching', $1, now()) RETURNING id)
           INSERT INTO deliveries (alert_id, subscriber_id, priority, status, sent_at)
           SELECT alert.id, s.id, 2, CASE WHEN s.id % 2 = 0 THEN 'sent' ELSE 'queued' END,
                  CASE WHEN s.id % 2 = 0 THEN now() END
           FROM alert, subscribers s""",
        N,
    )
    await conn.execute(
        """INSERT INTO alerts (kind, message, area, priority, status, recipients, fanned_out_at,
                               completed_at, created_at)
           SELECT 'notice', '', '{}', 1, 'completed', 1, now() - interval '30 days',
                  now() - interval '30 days', now() - interval '30 days'
           FROM generate_series(1, 5000)"""
    )
    await conn.execute("ANALYZE")


async def explain(conn: asyncpg.Connection, statement: str, args: tuple, mode: str) -> str:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + statement, *args))


async def test_storing_and_stopping_are_index_lookups(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed(conn)
        plans = {}
        for size in (1, 64, 1000):
            numbers = [f"+4530{i:06d}" for i in range(1, N, N // size)][:size]
            args = (
                ["gw"] * size,
                [f"m{i}" for i in range(size)],
                numbers,
                ["Saw him"] * size,
                ["tip"] * size,
                [None] * size,
                [{}] * size,
                timedelta(hours=48),
            )
            for mode in ("force_custom_plan", "force_generic_plan"):
                plans["store", size, mode] = await explain(conn, STORE, args, mode)
        for mode in ("force_custom_plan", "force_generic_plan"):
            plans["cancel", 1, mode] = await explain(conn, CANCEL_QUEUED, (17,), mode)
    for key, plan in plans.items():
        for table in ("deliveries", "subscribers", "inbound_messages", "alerts"):
            assert f"Seq Scan on {table}" not in plan, (key, plan)
        # Below PostgreSQL's default jit_above_cost: no JIT compile per execution.
        total = float(plan.splitlines()[0].split("..")[1].split()[0])
        assert total < 100_000, (key, plan)
