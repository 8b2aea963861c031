"""/metrics after a real alert: `broadcaster serve`, the GatewayAPI simulator and its receipts as
child processes, the metrics read back over HTTP and parsed."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import httpx
from tests import ops_support
from tests.stack import Stack


async def test_an_alert_moves_every_metric_it_touches(stack: Stack, pool: asyncpg.Pool) -> None:
    key, active = await ops_support.seed(pool)
    ops_support.start(stack)
    status = await ops_support.broadcast(stack, key)
    recipients = status["recipients"]
    assert recipients == active
    counts = status["deliveries"]
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        # An early answer of the guard is counted under the route it would have reached.
        assert (await http.get("/v1/alerts/1")).status_code == 401
    m = await ops_support.scrape(stack.api_url)

    assert m.value("broadcaster_alerts_created_total", priority="high", source="json") == 1
    assert m.value("broadcaster_fanout_recipients_total") == recipients
    # Submissions: all accepted, in batches of at most 100.
    assert m.value("broadcaster_deliveries_total", gateway="primary", status="sent") == recipients
    assert m.value("broadcaster_gateway_requests_total", gateway="primary", outcome="ok") >= (
        recipients / 100
    )
    assert m.value("broadcaster_gateway_batch_size_sum", gateway="primary") == recipients
    assert m.value("broadcaster_gateway_batch_size_bucket", gateway="primary", le="100.0") == (
        m.value("broadcaster_gateway_batch_size_count", gateway="primary")
    )
    assert m.value("broadcaster_rate_tokens_total", gateway="primary") >= recipients
    # Receipts: the final states the receipts wrote, and how long they took, per batch.
    delivered = m.value("broadcaster_deliveries_total", gateway="primary", status="delivered")
    failed = m.value("broadcaster_deliveries_total", gateway="primary", status="failed")
    assert (delivered, failed) == (counts["delivered"], counts["failed"])
    assert m.value("broadcaster_receipts_total", gateway="primary") == recipients
    assert m.value("broadcaster_receipt_seconds_count", gateway="primary") == recipients
    assert m.value("broadcaster_receipt_seconds_bucket", gateway="primary", le="+Inf") == (
        recipients
    )
    # The simulator answers within 20 ms (plus the batch's own time): well under 30 s.
    assert m.value("broadcaster_receipt_seconds_bucket", gateway="primary", le="30.0") == (
        recipients
    )
    assert 0 < m.value("broadcaster_receipt_seconds_sum", gateway="primary") < 30 * recipients
    assert m.value("broadcaster_receipt_flushes_total", writer="receipts", outcome="ok") >= 1
    # The alert's first and last submission, observed once when it completed.
    assert m.value("broadcaster_alert_first_submission_seconds_count", priority="high") == 1
    assert m.value("broadcaster_alert_last_submission_seconds_count", priority="high") == 1
    first = m.value("broadcaster_alert_first_submission_seconds_sum", priority="high")
    last = m.value("broadcaster_alert_last_submission_seconds_sum", priority="high")
    assert 0 < first <= last < 60
    # Gauges: nothing waits, nothing is in flight, one dispatcher, the pool in use.
    assert m.value("broadcaster_queue_depth") == 0
    assert {s.labels["priority"] for s in m.families["broadcaster_queue_depth"].samples} == {
        "emergency",
        "high",
        "normal",
    }
    assert m.value("broadcaster_queue_oldest_due_seconds") == 0
    assert m.value("broadcaster_deliveries_in_flight") == 0
    assert m.value("broadcaster_dispatchers_live") == 1
    assert m.value("broadcaster_gateway_circuit_open", gateway="primary") == 0
    assert m.value("broadcaster_gateway_speed", gateway="primary") == 1
    assert m.value("broadcaster_db_pool_size", pool="api") == 20
    assert 1 <= m.value("broadcaster_db_pool_in_use", pool="api") <= 20
    # API requests by route template, never by path.
    assert m.value(
        "broadcaster_api_requests_total", route="/v1/alerts", method="POST", status="202"
    ) == (1)
    polls = m.value(
        "broadcaster_api_requests_total", route="/v1/alerts/{alert_id}", method="GET", status="200"
    )
    assert polls >= 1
    assert m.value(
        "broadcaster_api_requests_total", route="/v1/alerts/{alert_id}", method="GET", status="401"
    ) == (1)
    assert m.value("broadcaster_api_request_seconds_count", route="/v1/alerts/{alert_id}") == (
        polls + 1
    )
    # Label values are a small fixed set: no phone number, no id, no path with an id in it.
    for value in m.label_values():
        assert not re.fullmatch(r"\+?\d{8,15}", value), value
        assert not re.search(r"/v1/alerts/\d", value), value


async def test_a_failing_gateway_counts_errors_retries_and_its_circuit(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    key, _ = await ops_support.seed(pool, subscribers=50)
    stack.start_simulator("--failure-ratio", "1.0")
    stack.write_config(rate=20_000, max_batch=5)
    stack.start_service(BROADCASTER_RETRY_BASE_SECONDS="30", BROADCASTER_BREAKER_FAILURES="2")
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        r = await http.post(
            "/v1/alerts",
            headers={"Authorization": f"Bearer {key}"},
            json={"message": "Test", "area": ops_support.DISTRICT},
        )
        assert r.status_code == 202
    for _ in range(100):
        m = await ops_support.scrape(stack.api_url)
        if m.value("broadcaster_gateway_circuit_open", gateway="primary") == 1:
            break
        await asyncio.sleep(0.1)
    assert m.value("broadcaster_gateway_circuit_open", gateway="primary") == 1
    errors = m.value("broadcaster_gateway_requests_total", gateway="primary", outcome="ok")
    transient = m.value(
        "broadcaster_gateway_requests_total", gateway="primary", outcome="transient_error"
    )
    assert transient >= 2 and errors == 0
    assert m.value("broadcaster_retries_total", gateway="primary", reason="error") >= 1
    assert m.value("broadcaster_deliveries_total", gateway="primary", status="queued") >= 1
    # The deliveries wait for their retry (30 s): the queue holds them, none is due yet.
    assert m.value("broadcaster_queue_depth", priority="normal") >= 1
