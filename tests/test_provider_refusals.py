"""The adapters against the simulators, which answer as GatewayAPI and Twilio document: urgent
priorities without the premium class, blacklisted and unauthorised recipients, a full sender
queue, an unsubscribed recipient, a sender the account does not have. Real HTTP on 127.0.0.1;
the simulators run in this event loop and are stopped by each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway_adapters.base import (
    GatewayConfig,
    GatewayError,
    GatewayMisconfigured,
    OutboundMessage,
    SendResult,
)
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_adapters.twilio import TwilioAdapter
from gateway_simulators.gatewayapi import GatewaySimulator, SimulatorOptions
from gateway_simulators.twilio import TwilioSimulator, TwilioSimulatorOptions

NUMBERS = [f"+45300000{i:02d}" for i in range(1, 11)]
SENDER = "+4570000000"


@asynccontextmanager
async def gatewayapi(
    options: SimulatorOptions, **extra: str
) -> AsyncIterator[tuple[GatewaySimulator, GatewayApiAdapter]]:
    sim = GatewaySimulator(replace(options, token="t", hold_receipts=True))
    port = await sim.start()
    config = GatewayConfig(
        "gw", "gatewayapi", f"http://127.0.0.1:{port}", token="t", max_batch=100, extra=extra
    )
    adapter = GatewayApiAdapter(config, "http://127.0.0.1:9/cb")
    try:
        yield sim, adapter
    finally:
        await adapter.close()
        await sim.close()


@asynccontextmanager
async def twilio(
    options: TwilioSimulatorOptions, sender: str = SENDER
) -> AsyncIterator[tuple[TwilioSimulator, TwilioAdapter]]:
    sim = TwilioSimulator(replace(options, token="ACsim:secret", hold_receipts=True))
    port = await sim.start()
    config = GatewayConfig(
        "tw", "twilio", f"http://127.0.0.1:{port}", token="ACsim:secret", sender=sender
    )
    adapter = TwilioAdapter(config, "http://127.0.0.1:9/cb")
    try:
        yield sim, adapter
    finally:
        await adapter.close()
        await sim.close()


def messages(priority: str = "normal", expires_in: float | None = None) -> list[OutboundMessage]:
    expires = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
    return [
        OutboundMessage(i, phone, "Politi: bliv indendørs", 7, priority, expires)
        for i, phone in enumerate(NUMBERS)
    ]


Expect = Callable[[list[SendResult]], None] | type[GatewayError]


def all_sent(results: list[SendResult]) -> None:
    assert all(r.accepted for r in results)


def refused(index: int, code: str, **fields: Any) -> Callable[[list[SendResult]], None]:
    """Only the recipient at `index` refused, its error naming `code`, with `fields`."""

    def check(results: list[SendResult]) -> None:
        assert [r.accepted for r in results] == [i != index for i in range(len(results))]
        error = results[index].error or ""
        assert code in error and NUMBERS[index][1:] not in error
        for name, value in fields.items():
            assert getattr(results[index], name) == value, name

    return check


def every(**fields: Any) -> Callable[[list[SendResult]], None]:
    def check(results: list[SendResult]) -> None:
        assert results and all(
            getattr(r, name) == value for r in results for name, value in fields.items()
        )

    return check


# simulator options, adapter options, priority -> what the batch comes to
GATEWAYAPI_CASES: dict[str, tuple[SimulatorOptions, dict[str, str], str, Expect]] = {
    "emergency in premium class": (SimulatorOptions(), {}, "emergency", all_sent),
    "emergency without premium on the account": (
        SimulatorOptions(classes=("standard",)),
        {},
        "emergency",
        GatewayMisconfigured,
    ),
    "emergency forced into the standard class: 0x0311": (
        SimulatorOptions(),
        {"emergency_class": "standard"},
        "emergency",
        GatewayMisconfigured,
    ),
    "high as NORMAL on a standard-only account": (
        SimulatorOptions(classes=("standard",)),
        {"high_priority": "NORMAL", "high_class": "standard"},
        "high",
        all_sent,
    ),
    "blacklisted recipient": (
        SimulatorOptions(blacklisted=(int(NUMBERS[4][1:]),)),
        {},
        "emergency",
        refused(4, "0x0215", retryable=False),
    ),
    "temporarily blacklisted recipient": (
        SimulatorOptions(temporarily_blacklisted=(int(NUMBERS[0][1:]),)),
        {},
        "normal",
        refused(0, "0x0214", retryable=True),
    ),
    "unauthorised operator": (
        SimulatorOptions(unauthorised_operators=(NUMBERS[9][1:],)),
        {},
        "normal",
        refused(9, "0x021F"),
    ),
    "unauthorised country": (
        SimulatorOptions(unauthorised_countries=("45",)),
        {},
        "normal",
        every(accepted=False),
    ),
}


@pytest.mark.parametrize("case", GATEWAYAPI_CASES.values(), ids=GATEWAYAPI_CASES.keys())
async def test_gatewayapi_simulator_answers_as_documented(case) -> None:
    options, extra, priority, expect = case
    async with gatewayapi(options, **extra) as (sim, adapter):
        if isinstance(expect, type):
            with pytest.raises(expect) as caught:
                await adapter.send_batch(messages(priority))
            assert type(caught.value) is expect
            assert sim.messages == []
            return
        results = await adapter.send_batch(messages(priority))
    expect(results)
    sent = sorted(f"+{m['msisdn']}" for m in sim.messages)
    assert sent == sorted(NUMBERS[r.delivery_id] for r in results if r.accepted)


# simulator options, adapter sender -> what the batch comes to
TWILIO_CASES: dict[str, tuple[TwilioSimulatorOptions, str, Expect]] = {
    "plain": (TwilioSimulatorOptions(), SENDER, all_sent),
    "recipient answered STOP: 21610": (
        TwilioSimulatorOptions(opted_out=(NUMBERS[3],)),
        SENDER,
        refused(3, "21610", opted_out=True, retryable=False),
    ),
    "sender queue full: 21611": (
        TwilioSimulatorOptions(queue_full_ratio=1.0),
        SENDER,
        every(accepted=False, throttled=True, retryable=True, retry_after=10.0),
    ),
    "From the account does not have: 21659": (
        TwilioSimulatorOptions(senders=("+4571111111",)),
        SENDER,
        GatewayMisconfigured,
    ),
    "Messaging Service that does not exist: 21701": (
        TwilioSimulatorOptions(senders=("MG0001",)),
        "MG0002",
        GatewayMisconfigured,
    ),
    "Messaging Service the account has": (
        TwilioSimulatorOptions(senders=("MG0001",)),
        "MG0001",
        all_sent,
    ),
}


@pytest.mark.parametrize("case", TWILIO_CASES.values(), ids=TWILIO_CASES.keys())
async def test_twilio_simulator_answers_as_documented(case) -> None:
    options, sender, expect = case
    async with twilio(options, sender) as (sim, adapter):
        if isinstance(expect, type):
            with pytest.raises(expect) as caught:
                await adapter.send_batch(messages())
            assert type(caught.value) is expect
            assert sim.messages == []
            return
        results = await adapter.send_batch(messages())
    expect(results)
    assert sorted(m["to"] for m in sim.messages) == sorted(
        NUMBERS[r.delivery_id] for r in results if r.accepted
    )


async def test_twilio_gets_the_alerts_remaining_lifetime() -> None:
    async with twilio(TwilioSimulatorOptions()) as (sim, adapter):
        results = await adapter.send_batch(messages(expires_in=600))
        long_lived = await adapter.send_batch(messages(expires_in=86_400)[:1])
        expired = await adapter.send_batch(messages(expires_in=-5)[:1])
    assert all(r.accepted for r in results + long_lived)
    validity = [m["validity_period"] for m in sim.messages]
    assert all(590 <= v <= 600 for v in validity[:-1])
    assert validity[-1] == 36_000  # Twilio's longest
    assert expired == [SendResult(0, False, error="alert expired before submission", expired=True)]
    assert len(sim.messages) == len(NUMBERS) + 1  # the expired one never went out
