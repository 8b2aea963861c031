"""The outcome webhook end to end: `broadcaster api`, dispatchers and the GatewayAPI simulator as
child processes, a real PostgreSQL, and the calling system as a real HTTP receiver on 127.0.0.1.
Three alerts end (one completed with its receipts in, one cancelled, one expired) while the
receiver is down; the dispatcher that tried them stops, the receiver comes back answering 500
for a while, another dispatcher takes over, and each outcome is accepted exactly once, signed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from tests.stack import Stack
from tests.test_api import assert_problem, auth
from tests.test_tip_forwarding import Receiver

from broadcaster.api.app import create_app
from broadcaster.auth import create_api_key
from broadcaster.dispatch import outcomes
from broadcaster.settings import load_settings

SECRET = "outcome-webhook-secret-0123456789"
CIRCLE = {"type": "Circle", "center": [12.30, 55.93], "radius_m": 1000}
ENV = {
    "BROADCASTER_WEBHOOK_SECRET": SECRET,
    "BROADCASTER_TIP_WEBHOOK_ALLOW_HTTP": "true",
    "BROADCASTER_TIP_RETRY_BASE_SECONDS": "0.1",
    "BROADCASTER_TIP_RETRY_MAX_SECONDS": "0.5",
    "BROADCASTER_OUTCOME_RECEIPT_WAIT_SECONDS": "60",
}


async def wait_for(what: str, check: object, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_each_outcome_is_posted_once_signed_through_failures_and_a_restart(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    receiver = Receiver(fail_first=2)  # not started: down
    stack.start_simulator("--receipt-delay-ms", "20")
    stack.write_config(rate=1000, max_batch=100)
    stack.start_service("api", **ENV)
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "command-centre")
    try:
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            for n in range(3):
                r = await http.post(
                    "/v1/subscribers",
                    json={"phone": f"+452612347{n}", "locations": [{"lat": 55.93, "lon": 12.3}]},
                )
                assert r.status_code == 201, r.text

            async def alert(**extra: object) -> int:
                body = {"message": "Politiet: hold øje", "area": CIRCLE, **extra}
                r = await http.post("/v1/alerts", json=body)
                assert r.status_code == 202, r.text
                return int(r.json()["id"])

            hooked = {"status_webhook": receiver.url}
            completed = await alert(reference="case-1", **hooked)
            cancelled = await alert(reference="case-2", **hooked)
            assert (await http.post(f"/v1/alerts/{cancelled}/cancel")).status_code == 200
            soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
            expired = await alert(reference="case-3", expires_at=soon, **hooked)
            unhooked = await alert(reference="case-4")
            await asyncio.sleep(1.2)  # case-3 expires before any dispatcher sees it

            first = stack.start_dispatcher("dispatcher-a", **ENV)

            async def all_tried() -> bool:
                rows = await pool.fetch("SELECT attempts FROM webhook_outbox")
                return len(rows) == 3 and all(r["attempts"] >= 1 for r in rows)

            await wait_for("the three outcomes were not tried", all_tried)
            assert receiver.posts == []
            first.stop()  # the outbox is in PostgreSQL: another process carries on
            await receiver.start()
            stack.start_dispatcher("dispatcher-b", **ENV)

            async def three_posts() -> bool:
                return len(receiver.posts) >= 3

            await wait_for("the outcomes did not arrive", three_posts)
            await asyncio.sleep(1.5)  # nothing more comes
            statuses = {
                a: (await http.get(f"/v1/alerts/{a}")).json()
                for a in (completed, cancelled, expired, unhooked)
            }
    finally:
        await receiver.stop()

    assert receiver.refused == 2 and len(receiver.posts) == 3
    outcomes = {}
    for body, headers in receiver.posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Broadcaster-Signature"] == expected
        assert headers["Content-Type"] == "application/json"
        outcome = json.loads(body)
        assert headers["X-Broadcaster-Event"] == outcome["event"]
        outcomes[outcome["alert_id"]] = outcome
    assert set(outcomes) == {completed, cancelled, expired}

    done = outcomes[completed]
    assert (done["event"], done["status"], done["reference"]) == (
        "alert.completed",
        "completed",
        "case-1",
    )
    assert done["recipients"] == 3
    assert done["deliveries"] == {
        "queued": 0,
        "sending": 0,
        "sent": 0,  # every receipt was in before it was reported
        "delivered": 3,
        "failed": 0,
        "expired": 0,
        "cancelled": 0,
    }
    assert done["completed_at"] and done["fanned_out_at"] and done["cancelled_at"] is None
    stopped = outcomes[cancelled]
    assert (stopped["event"], stopped["recipients"]) == ("alert.cancelled", None)
    assert stopped["cancelled_at"] and sum(stopped["deliveries"].values()) == 0
    late = outcomes[expired]
    assert (late["event"], late["recipients"], late["reference"]) == ("alert.expired", 0, "case-3")
    assert late["expires_at"]

    assert await pool.fetchval("SELECT count(*) FROM webhook_outbox") == 0
    for alert_id in (completed, cancelled, expired):
        assert statuses[alert_id]["outcome_queued_at"] is not None
        assert statuses[alert_id]["status_webhook"] == receiver.url
    assert statuses[unhooked]["status_webhook"] is None
    assert statuses[unhooked]["outcome_queued_at"] is None


async def test_an_outcome_waits_for_open_deliveries_and_receipts_up_to_the_wait(
    pool: asyncpg.Pool,
) -> None:
    """The sweep itself: an ended alert is reported once nothing of it is open and its receipts
    are in, or once the receipt wait has passed (what is still 'sent' counted as such); never
    twice, and never an alert without a webhook or one still running."""
    hook = "https://command.example/outcome"
    alert = """INSERT INTO alerts (message, area, priority, status, completed_at, status_webhook,
                                   recipients)
               VALUES ('x', '{}', 2, $1, now() - $2 * interval '1 second', $3, 2) RETURNING id"""
    async with pool.acquire() as conn:
        waiting = await conn.fetchval(alert, "completed", 30, hook)  # a receipt missing
        running = await conn.fetchval(alert, "dispatching", 0, hook)
        in_flight = await conn.fetchval(alert, "cancelled", 0, hook)  # a batch still out
        plain = await conn.fetchval(alert, "completed", 0, None)
        await conn.executemany(
            "INSERT INTO deliveries (alert_id, subscriber_id, priority, status) "
            "VALUES ($1, $2, 2, $3)",
            [
                (waiting, 1, "delivered"),
                (waiting, 2, "sent"),
                (running, 1, "queued"),
                (in_flight, 1, "queued"),
                (in_flight, 2, "cancelled"),
                (plain, 1, "delivered"),
            ],
        )
        assert await outcomes.queue_due(conn, 60) == 0
        assert await outcomes.queue_due(conn, 10) == 1  # 30 s past: reported with what it has
        body = await conn.fetchval("SELECT body FROM webhook_outbox WHERE alert_id = $1", waiting)
        assert body["deliveries"]["sent"] == 1 and body["deliveries"]["delivered"] == 1
        assert body["event"] == "alert.completed"
        await conn.execute(
            "UPDATE deliveries SET status = 'cancelled' WHERE alert_id = $1", in_flight
        )
        assert await outcomes.queue_due(conn, 60) == 1
        assert await outcomes.queue_due(conn, 0) == 0  # each once; running and plain never
        rows = await conn.fetch("SELECT alert_id, kind, url FROM webhook_outbox ORDER BY alert_id")
    assert [(r["alert_id"], r["kind"], r["url"]) for r in rows] == [
        (waiting, "outcome", hook),
        (in_flight, "outcome", hook),
    ]


async def test_a_status_webhook_is_checked_like_a_tip_webhook(db_url: str) -> None:
    for extra, words in [
        ({}, "status_webhook: this service has no BROADCASTER_WEBHOOK_SECRET"),
        ({"webhook_secret": SECRET}, "status_webhook: must be an https URL with a host"),
    ]:
        app = create_app(load_settings(database_url=db_url, **extra), db_url)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                async with app.state.pool.acquire() as conn:
                    key = await create_api_key(conn, f"k{len(extra)}")
                url = "https://command.example/x" if not extra else "http://command.example/x"
                r = await client.post(
                    "/v1/alerts",
                    headers=auth(key),
                    json={"message": "x", "area": CIRCLE, "status_webhook": url},
                )
                assert_problem(r, 422, words)


async def test_the_sweep_reads_only_alerts_waiting_to_be_reported(pool: asyncpg.Pool) -> None:
    """By EXPLAIN, against 20,000 alerts (50 with a webhook, not yet reported) and 200,000
    deliveries: the sweep starts from the partial index of alerts waiting to be reported and
    reaches deliveries only by index, per such alert (never by a join over the open ones)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO alerts (message, area, priority, status, completed_at, status_webhook,
                                   outcome_queued_at)
               SELECT 'x', '{}', 2, 'completed', now(),
                      CASE WHEN g % 400 = 0 OR g % 7 = 0 THEN 'https://c.example/o' END,
                      CASE WHEN g % 7 = 0 AND g % 400 <> 0 THEN now() END
               FROM generate_series(1, 20000) g"""
        )
        await conn.execute(
            """INSERT INTO deliveries (alert_id, subscriber_id, priority, status)
               SELECT 1 + g % 20000, g, 2,
                      (ARRAY['sent', 'delivered', 'queued'])[1 + g % 3]
               FROM generate_series(1, 200000) g"""
        )
        await conn.execute("ANALYZE alerts; ANALYZE deliveries")
        rows = await conn.fetch("EXPLAIN " + outcomes.QUEUE_DUE, 600.0, outcomes.BATCH)
    plan = "\n".join(r[0] for r in rows)
    assert "alerts_outcome_pending" in plan, plan
    assert "Seq Scan" not in plan and "Join" not in plan.split("CTE marked")[0], plan
    # Open deliveries, then one still waiting for its receipt: each probed per alert.
    assert plan.count("Index Cond: (alert_id = a.id)") == 2, plan


async def test_an_alert_cancelled_mid_broadcast_reports_what_went_out_and_what_did_not(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    """Cancelled while its deliveries go out one a second: the outcome comes once the message in
    flight is written and its receipt is in, and counts both the delivered and the cancelled."""
    receiver = Receiver(fail_first=1)
    await receiver.start()
    stack.start_simulator("--receipt-delay-ms", "20")
    stack.write_config(rate=1, max_batch=1, concurrency=1)
    stack.start_service(**ENV)  # API and dispatcher in one process
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "command-centre")
    try:
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            for n in range(4):
                r = await http.post(
                    "/v1/subscribers",
                    json={"phone": f"+452612348{n}", "locations": [{"lat": 55.93, "lon": 12.3}]},
                )
                assert r.status_code == 201, r.text
            r = await http.post(
                "/v1/alerts",
                json={"message": "Politiet", "area": CIRCLE, "status_webhook": receiver.url},
            )
            assert r.status_code == 202, r.text
            alert_id = r.json()["id"]

            async def one_delivered() -> bool:
                status = (await http.get(f"/v1/alerts/{alert_id}")).json()
                return bool(status["deliveries"]["delivered"] >= 1)

            await wait_for("nothing was delivered", one_delivered)
            assert (await http.post(f"/v1/alerts/{alert_id}/cancel")).status_code == 200

            async def posted() -> bool:
                return len(receiver.posts) >= 1

            await wait_for("the outcome did not arrive", posted)
            await asyncio.sleep(1.5)
    finally:
        await receiver.stop()
    assert receiver.refused == 1 and len(receiver.posts) == 1
    body, headers = receiver.posts[0]
    outcome = json.loads(body)
    assert headers["X-Broadcaster-Event"] == outcome["event"] == "alert.cancelled"
    counts = outcome["deliveries"]
    assert outcome["recipients"] == 4
    assert counts["delivered"] >= 1 and counts["cancelled"] >= 1, counts
    assert counts["delivered"] + counts["cancelled"] == 4, counts  # nothing open, every receipt in
