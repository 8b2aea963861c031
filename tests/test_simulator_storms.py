"""The GatewayAPI simulator's storm faults, through GatewayApiAdapter over real HTTP: connection
resets before and after the messages were taken, slow answers beyond the client's timeout,
unreadable 200 answers, a load balancer's 5xx pages, receipts for ids never given, and
`POST /_sim/faults`, which starts and ends a storm in a running simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.test_simulator import SIM_SECRET, SIM_TOKEN, Receiver, batch, running_simulator, sim_get

from gateway_adapters.base import GatewayConfig, GatewayThrottled, GatewayUnavailable
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_simulators.gatewayapi import UNKNOWN_ID_BASE, GatewaySimulator, SimulatorOptions


@pytest.fixture
async def callbacks() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def simulated(
    callbacks: Receiver, timeout: float = 5.0, **options: Any
) -> tuple[GatewaySimulator, GatewayApiAdapter]:
    sim = GatewaySimulator(SimulatorOptions(token=SIM_TOKEN, webhook_secret=SIM_SECRET, **options))
    port = await sim.start()
    config = GatewayConfig(
        name="sim",
        type="gatewayapi",
        base_url=f"http://127.0.0.1:{port}",
        token=SIM_TOKEN,
        webhook_secret=SIM_SECRET,
        timeout_seconds=timeout,
    )
    adapter = GatewayApiAdapter(config, callbacks.url)
    callbacks.adapter = adapter
    return sim, adapter


async def close(sim: GatewaySimulator, adapter: GatewayApiAdapter) -> None:
    await adapter.close()
    await sim.close()


async def test_a_reset_before_taking_leaves_nothing_taken(callbacks: Receiver) -> None:
    sim, adapter = await simulated(callbacks, reset_ratio=1.0)
    try:
        with pytest.raises(GatewayUnavailable):
            await adapter.send_batch(batch(3))
    finally:
        await close(sim, adapter)
    assert sim.messages == []
    assert (sim.stats.resets, sim.stats.lost_answers, sim.stats.rejected_requests) == (1, 0, 1)


async def test_a_lost_answer_leaves_the_messages_taken(callbacks: Receiver) -> None:
    sim, adapter = await simulated(callbacks, lost_answer_ratio=1.0, receipt_delay_ms=0)
    try:
        with pytest.raises(GatewayUnavailable):
            await adapter.send_batch(batch(3))
        finals = await callbacks.wait_for_finals(3)
    finally:
        await close(sim, adapter)
    assert len(sim.messages) == 3 and sim.stats.lost_answers == 1
    assert len(finals) == 3  # they went out: receipts follow


async def test_a_slow_answer_beyond_the_timeout_leaves_the_messages_taken(
    callbacks: Receiver,
) -> None:
    sim, adapter = await simulated(callbacks, timeout=0.2, slow_ratio=1.0, slow_ms=1000)
    try:
        with pytest.raises(GatewayUnavailable, match="Timeout"):
            await adapter.send_batch(batch(3))
    finally:
        await close(sim, adapter)
    assert len(sim.messages) == 3 and sim.stats.slow_answers == 1


async def test_a_slow_answer_within_the_timeout_is_read(callbacks: Receiver) -> None:
    sim, adapter = await simulated(callbacks, slow_ratio=1.0, slow_ms=100)
    try:
        results = await adapter.send_batch(batch(3))
    finally:
        await close(sim, adapter)
    assert [r.accepted for r in results] == [True] * 3


async def test_unreadable_answers_come_in_three_kinds_and_the_messages_are_taken(
    callbacks: Receiver,
) -> None:
    sim, adapter = await simulated(callbacks, garbled_ratio=1.0)
    try:
        for _ in range(3):
            with pytest.raises(GatewayUnavailable, match="unreadable 2xx answer"):
                await adapter.send_batch(batch(2))
        async with aiohttp.ClientSession() as http:
            bodies = []
            for _ in range(3):
                async with http.post(
                    adapter.config.base_url + "/rest/mtsms",
                    json={"message": "hi", "recipients": [{"msisdn": 4530000001}]},
                    headers={"Authorization": f"Token {SIM_TOKEN}"},
                ) as resp:
                    bodies.append((resp.status, await resp.read()))
    finally:
        await close(sim, adapter)
    assert len(sim.messages) == 9 and sim.stats.garbled_answers == 6
    assert {status for status, _ in bodies} == {200}
    html, without_ids, cut_off = (body for _, body in bodies)
    assert html.startswith(b"<html>")
    assert "ids" not in json.loads(without_ids)
    with pytest.raises(ValueError):
        json.loads(cut_off)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_failures_answer_the_configured_status(callbacks: Receiver, status: int) -> None:
    """The adapter tells the dispatcher whether the gateway may have taken the messages: not
    after its own 500/503, maybe after a proxy's 502/504."""
    sim, adapter = await simulated(callbacks, failure_ratio=1.0, failure_status=status)
    try:
        with pytest.raises(GatewayUnavailable, match=f"HTTP {status}") as caught:
            await adapter.send_batch(batch(2))
    finally:
        await close(sim, adapter)
    assert sim.messages == [] and sim.stats.rejected_requests == 1
    assert caught.value.maybe_taken == (status in (502, 504))


NO_ANSWER = {
    "reset before taking": {"reset_ratio": 1.0},  # the client cannot tell it from the next
    "answer lost": {"lost_answer_ratio": 1.0},
    "slow answer": {"slow_ratio": 1.0, "slow_ms": 1000},
    "unreadable answer": {"garbled_ratio": 1.0},
}


@pytest.mark.parametrize("faults", NO_ANSWER.values(), ids=NO_ANSWER.keys())
async def test_faults_without_an_answer_may_have_taken_the_messages(
    callbacks: Receiver, faults: dict[str, Any]
) -> None:
    sim, adapter = await simulated(callbacks, timeout=0.3, **faults)
    try:
        with pytest.raises(GatewayUnavailable) as caught:
            await adapter.send_batch(batch(2))
    finally:
        await close(sim, adapter)
    assert caught.value.maybe_taken is True


async def test_a_refused_connection_took_nothing(callbacks: Receiver) -> None:
    sim, adapter = await simulated(callbacks)
    await sim.close()  # nothing listens on the port any more
    try:
        with pytest.raises(GatewayUnavailable) as caught:
            await adapter.send_batch(batch(2))
    finally:
        await adapter.close()
    assert caught.value.maybe_taken is False


async def test_unknown_receipts_name_ids_never_given(callbacks: Receiver) -> None:
    sim, adapter = await simulated(callbacks, unknown_receipts=2, receipt_delay_ms=0)
    try:
        await adapter.send_batch(batch(3))
        for _ in range(100):
            if len(callbacks.updates) >= 9:
                break
            await asyncio.sleep(0.05)
    finally:
        await close(sim, adapter)
    unknown = [u for u in callbacks.updates if int(u.gateway_message_id) > UNKNOWN_ID_BASE]
    assert len(callbacks.updates) == 9 and len(unknown) == 6
    assert len({u.gateway_message_id for u in unknown}) == 6
    assert {u.state for u in unknown} == {"delivered", "failed"}


async def test_faults_change_in_a_running_simulator() -> None:
    """A storm through `POST /_sim/faults` on the simulator started from the command line
    with the new flags; refusals name what is wrong."""
    args = ("--reset-ratio", "0", "--lost-answer-ratio", "0", "--slow-ratio", "0")
    async with running_simulator(*args, "--slow-ms", "10", "--failure-status", "503") as url:
        headers = {"Authorization": f"Token {SIM_TOKEN}"}
        config = GatewayConfig("sim", "gatewayapi", url, SIM_TOKEN, SIM_SECRET, timeout_seconds=5)
        adapter = GatewayApiAdapter(config, "http://127.0.0.1:9/cb")
        try:
            status, faults = await sim_get(url, "/_sim/faults", "POST", json={})
            assert status == 200
            assert (faults["slow_ms"], faults["failure_status"]) == (10, 503)
            storm = {"throttle_ratio": 1, "throttle_retry_after": 2.5, "shuffle_receipts": True}
            status, faults = await sim_get(url, "/_sim/faults", "POST", json=storm)
            assert status == 200
            assert (faults["throttle_ratio"], faults["throttle_retry_after"]) == (1.0, 2.5)
            with pytest.raises(GatewayThrottled) as caught:
                await adapter.send_batch(batch(1))
            assert caught.value.retry_after == 2.5
            await sim_get(url, "/_sim/faults", "POST", json={"throttle_ratio": 0})
            assert (await adapter.send_batch(batch(1)))[0].accepted
            for bad in (
                {"token": "x"},
                {"throttle_ratio": 2},
                {"receipt_copies": 1.5},
                {"shuffle_receipts": 1},
                {"latency_ms": -1},
                {"receipt_concurrency": 1},
                [1],
            ):
                status, body = await sim_get(url, "/_sim/faults", "POST", json=bad)
                assert status == 400 and body["error"], bad
            _, stats = await sim_get(url, "/_sim/stats", headers=headers)
            assert stats["requests"] == 2 and stats["recipients"] == 1
        finally:
            await adapter.close()
