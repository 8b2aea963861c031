"""SMPP through the dispatcher, against a real PostgreSQL and the SMSC simulator over TCP: receipts
of messages another process sent, ids that two readings could give to two deliveries."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from tests.test_failover import Running, wait_for
from tests.test_fanout import DONUT, add_subscribers, queue_alert

from broadcaster.dispatch.message_ids import known_message_ids
from broadcaster.settings import GatewaySettings, load_settings
from gateway_adapters.smpp import SmppAdapter
from gateway_adapters.smpp_ids import message_key
from gateway_simulators.smpp import SmscOptions, SmscSimulator

SENT = "SELECT count(*) = $1 FROM deliveries WHERE status = 'sent'"
SETTLED = "SELECT count(*) = 0 FROM deliveries WHERE status NOT IN ('delivered', 'failed')"
FINAL = "SELECT count(*) = $1 FROM deliveries WHERE status IN ('delivered', 'failed')"
OUTCOMES = {"DELIVRD": "delivered", "UNDELIV": "failed"}


def smpp_gateway(port: int, **options: Any) -> GatewaySettings:
    return GatewaySettings(
        name="operator",
        type="smpp",
        base_url=f"smpp://127.0.0.1:{port}",
        token="sim:sim-pass",
        rate_per_second=5_000,
        max_batch=50,
        concurrency=2,
        reconnect_initial=0.05,
        **options,
    )


async def test_receipts_of_another_process_find_their_deliveries_and_no_others(
    db_url: str, pool: asyncpg.Pool
) -> None:
    """Decimal ids 16 to 215 in both places, no receipted_message_id: receipt 'id:32' is message
    32, or message 0x20 = 32 read as decimal for hex, or 0x32 = 50 read as hex for decimal, and
    all three were sent. The dispatcher that sent them stops; one that never saw an id receives
    the receipts. It must place each on its own delivery: by looking the readings up in the
    database, waiting (a temporary error, the SMSC sends again) where two readings name a
    delivery, until the receipts only one reading explains have taught it the style."""
    smsc = SmscSimulator(
        SmscOptions(
            submit_id_format="{:d}",
            receipt_id_format="{:d}",
            first_message_id=16,
            receipt_tlvs=False,
            hold_receipts=True,
            delivered_ratio=0.5,
            seed=8,
            redelivery_delay_ms=20,
        )
    )
    port = await smsc.start()
    settings = load_settings(database_url=db_url, poll_interval=0.05, gateways=[smpp_gateway(port)])
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(200)])
        await queue_alert(conn, DONUT)
    sender = Running(settings, pool, db_url, name="sender")
    try:
        await wait_for(pool, SENT, 200)
    finally:
        await sender.close()
    assert {m["id"] for m in smsc.messages} >= {"20", "32", "50"}
    receiver = Running(settings, pool, db_url, name="receiver")
    try:
        smsc.release()
        await wait_for(pool, SETTLED)
        adapter = receiver.adapters[0]
        assert isinstance(adapter, SmppAdapter)
        inbound = adapter._inbound
        assert inbound.refused > 0  # some receipts had to wait for the style ...
        assert inbound.style.learned == (0, 0)  # ... learned: ids alike in both places
    finally:
        await receiver.close()
        await smsc.close()
    outcome = {message_key(m["id"]): OUTCOMES[m["stats"][-1]] for m in smsc.messages}
    rows = await pool.fetch("SELECT gateway_message_id, status FROM deliveries")
    assert {r["gateway_message_id"]: r["status"] for r in rows} == outcome
    receipts = await pool.fetch(
        "SELECT gateway_message_id, raw->>'id' AS id, applied FROM delivery_receipts"
    )
    assert len(receipts) == 200
    assert all(r["applied"] and r["gateway_message_id"] == r["id"] for r in receipts)


async def test_the_service_looks_message_ids_up_per_gateway(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        [sid] = await add_subscribers(conn, [[(12.05, 55.05)]])
        alert = await queue_alert(conn, DONUT)
        await conn.execute(
            "INSERT INTO deliveries (alert_id, subscriber_id, priority, status, gateway, "
            "gateway_message_id) VALUES ($1, $2, 2, 'sent', 'operator', 'a3f0202')",
            alert,
            sid,
        )
    assert await known_message_ids(pool, "operator", ["a3f0202", "171901442"]) == {"a3f0202"}
    assert await known_message_ids(pool, "other", ["a3f0202"]) == set()


@pytest.mark.parametrize("bind_mode", ["transceiver", "transmitter_receiver"])
async def test_a_broadcast_in_each_bind_mode(
    db_url: str, pool: asyncpg.Pool, bind_mode: str
) -> None:
    """submit_sm and receipts through the dispatcher on one transceiver or on a transmitter
    and receiver pair; long messages reassembled, every delivery ends with its outcome."""
    smsc = SmscSimulator(SmscOptions(receipt_delay_ms=20, delivered_ratio=0.8, seed=4))
    port = await smsc.start()
    gateway = smpp_gateway(port, bind_mode=bind_mode)
    settings = load_settings(database_url=db_url, poll_interval=0.05, gateways=[gateway])
    long_text = "Politiet: " + "bliv indendørs og luk vinduerne. " * 6  # 2 SMS parts
    async with pool.acquire() as conn:
        await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(100)])
        alert = await queue_alert(conn, DONUT)
        await conn.execute("UPDATE alerts SET message = $2 WHERE id = $1", alert, long_text)
    running = Running(settings, pool, db_url)
    try:
        await wait_for(pool, FINAL, 100)
    finally:
        await running.close()
        await smsc.close()
    assert smsc.stats.bind_roles == (
        {"transceiver": 1} if bind_mode == "transceiver" else {"transmitter": 1, "receiver": 1}
    )
    assert {m["text"] for m in smsc.messages} == {long_text} and len(smsc.messages) == 100
    # A long message's outcome is its last part's; a failed earlier part fails it too, unless
    # the last part's receipt was applied first (final states do not change).
    rows = await pool.fetch("SELECT gateway_message_id, status FROM deliveries")
    status = {r["gateway_message_id"]: r["status"] for r in rows}
    assert set(status) == {message_key(m["id"]) for m in smsc.messages}
    for m in smsc.messages:
        possible = {OUTCOMES[s] for s in m["stats"]} if m["stats"][-1] == "DELIVRD" else {"failed"}
        assert status[message_key(m["id"])] in possible, m["stats"]
    assert "delivered" in status.values() and "failed" in status.values()
