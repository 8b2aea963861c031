"""Mobile-originated SMS over SMPP: deliver_sm that are not receipts, decoded (GSM 03.38, UCS-2)
and reassembled (UDH, sar_* TLVs), pure (smpp_mo, table-driven) and over TCP between the SMSC
simulator and the adapter, handed to the sink's `inbound` and acknowledged only after it
returned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway_adapters.base import GatewayConfig, InboundMessage, ReceiptUpdate
from gateway_adapters.smpp import SmppAdapter
from gateway_adapters.smpp_codec import (
    DATA_CODING_UCS2,
    ESM_CLASS_UDHI,
    ESME_RINVESMCLASS,
    ESME_ROK,
    ESME_RSYSERR,
    DeliverSm,
)
from gateway_adapters.smpp_mo import GAP, MobileOriginated, sender_phone
from gateway_simulators.smpp import SmscOptions, SmscSimulator
from gateway_simulators.smpp_mo import mo_pdus

SYSTEM_ID, PASSWORD = "sim", "sim-pass"
LONG = "Jeg så en hvid varevogn ved Hillerød station kl. 9.40, den kørte mod Fredensborg. " * 3
LONG_UCS2 = "Подсказка: белый фургон возле станции, ехал на север. " * 4

# -- pure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "ton", "phone"),
    [
        ("4520123456", 1, "+4520123456"),  # international
        ("+4520123456", 0, "+4520123456"),
        ("004520123456", 0, "+4520123456"),
        ("20123456", 2, "+4520123456"),  # national: the gateway's country
        ("20123456", 0, "+4520123456"),  # unknown, not starting with the country code
        ("4520123456", 0, "+4520123456"),  # unknown, starting with it
        ("447700900123", 1, "+447700900123"),
        ("POLITI", 5, None),  # alphanumeric
        ("123", 1, None),
        ("0123456789", 1, None),
        ("4520x23456", 1, None),
        ("1234567890123456", 1, None),
    ],
)
def test_sender_phone(addr: str, ton: int, phone: str | None) -> None:
    assert sender_phone(addr, ton, "45") == phone


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mobile_originated(**options: Any) -> tuple[MobileOriginated, Clock]:
    clock = Clock()
    return MobileOriginated("smsc", clock=clock, **options), clock


@pytest.mark.parametrize(
    ("text", "concat"),
    [
        ("STOP", "udh"),
        ("hjælp", "udh"),  # æ is GSM 03.38
        ("Подсказка", "udh"),  # UCS-2
        ("Tip: 🚐 ved stationen", "udh"),  # an astral character: a surrogate pair in UCS-2
        (LONG, "udh"),
        (LONG, "sar"),
        (LONG_UCS2, "udh"),
        (LONG_UCS2, "sar"),
        ("€" * 100, "udh"),  # GSM 03.38 extension characters (ESC pairs) across parts
    ],
)
def test_parts_in_any_order_make_one_message(text: str, concat: str) -> None:
    mo, _ = mobile_originated()
    pdus = mo_pdus("4520123456", "POLITI", text, concat=concat, ref=300)
    done = []
    for pdu in reversed(pdus):  # last part first
        messages, now = mo.read("link", pdu)
        done += messages
        assert now is None  # held until committed
    (message,) = done
    assert message.message == InboundMessage(
        None,
        "+4520123456",
        text,
        None,
        {
            "destination_addr": "POLITI",
            "source_addr_ton": 1,
            "data_coding": pdus[0].data_coding,
            "parts": len(pdus),
        },
    )
    assert sorted(id(a.pdu) for a in message.parts) == sorted(id(p) for p in pdus)
    if len(text) > 160:
        assert len(pdus) > 1
        if concat == "sar":
            assert not pdus[0].esm_class & ESM_CLASS_UDHI and pdus[0].tlvs


def test_a_message_the_smsc_sends_again_after_its_commit_is_answered_not_repeated() -> None:
    mo, clock = mobile_originated(part_seconds=60)
    pdus = mo_pdus("4520123456", "POLITI", LONG, ref=7)
    (message,) = [m for p in pdus for m in mo.read("link", p)[0]]
    mo.finished([message], committed=True)
    # The answers were lost with the connection: the SMSC sends the parts again.
    for pdu in pdus:
        assert mo.read("link2", pdu) == ([], ESME_ROK)
    single = mo_pdus("4520123456", "POLITI", "STOP")[0]
    (stop,) = mo.read("link", single)[0]
    mo.finished([stop], committed=True)
    assert mo.read("link", single) == ([], ESME_ROK)
    # Later, the same words are a new message.
    clock.now += 61
    assert len(mo.read("link", single)[0]) == 1


def test_a_message_not_committed_is_built_again_from_the_resent_parts() -> None:
    mo, _ = mobile_originated()
    pdus = mo_pdus("4520123456", "POLITI", LONG, ref=8)
    (message,) = [m for p in pdus for m in mo.read("link", p)[0]]
    mo.finished([message], committed=False)
    again = [m for p in pdus for m in mo.read("link", p)[0]]
    assert [m.message.text for m in again] == [LONG]


def test_missing_parts_are_waited_for_then_the_message_goes_on_with_gaps() -> None:
    mo, clock = mobile_originated(part_seconds=30)
    pdus = mo_pdus("4520123456", "POLITI", LONG, ref=9)
    assert len(pdus) == 2
    assert mo.read("link", pdus[1]) == ([], None)
    assert mo.expired() == [] and mo.holding == 1
    clock.now += 30
    (message,) = mo.expired()
    assert message.message.text == GAP + LONG[153:]  # a GSM part holds 153 characters
    assert message.message.raw["missing_parts"] == [1]
    assert mo.holding == 0


def test_a_part_sent_again_while_held_replaces_the_first() -> None:
    mo, _ = mobile_originated()
    first, second = mo_pdus("4520123456", "POLITI", LONG, ref=10)
    mo.read("old-link", first)
    mo.read("new-link", first)
    (message,) = mo.read("new-link", second)[0]
    assert [a.link for a in message.parts] == ["new-link", "new-link"]


def test_unreadable_or_unanswerable_inbound_messages() -> None:
    mo, _ = mobile_originated()
    broken = DeliverSm(
        source_addr="4520123456", source_addr_ton=1, esm_class=ESM_CLASS_UDHI, short_message=b"\x09"
    )
    assert mo.read("link", broken) == ([], ESME_RINVESMCLASS)
    alphanumeric = DeliverSm(source_addr="POLITI", source_addr_ton=5, short_message=b"hi")
    assert mo.read("link", alphanumeric) == ([], ESME_ROK)
    assert mo.dropped == 1
    nul = DeliverSm(
        source_addr="4520123456",
        source_addr_ton=1,
        data_coding=DATA_CODING_UCS2,
        short_message="a\x00b".encode("utf-16-be"),
    )
    assert mo.read("link", nul)[0][0].message.text == "ab"


# -- over TCP -------------------------------------------------------------------------------------


class InboundSink:
    """A receipt sink that also takes inbound messages; `gate` holds each call, `fail_next`
    makes calls raise."""

    def __init__(self) -> None:
        self.receipts: list[ReceiptUpdate] = []
        self.messages: list[InboundMessage] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_next = 0

    async def __call__(self, updates: list[ReceiptUpdate]) -> None:
        self.receipts += updates

    async def inbound(self, messages: list[InboundMessage]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database is down")
        self.messages += messages


@pytest.fixture
async def pair() -> AsyncIterator[Callable[..., Awaitable[tuple[SmscSimulator, InboundSink]]]]:
    closing: list[Any] = []

    async def start(bind_mode: str = "transceiver") -> tuple[SmscSimulator, InboundSink]:
        sim = SmscSimulator(SmscOptions(system_id=SYSTEM_ID, password=PASSWORD))
        await sim.start()
        closing.append(sim)
        config = GatewayConfig(
            name="smsc",
            type="smpp",
            base_url=f"smpp://127.0.0.1:{sim.port}",
            token=f"{SYSTEM_ID}:{PASSWORD}",
            timeout_seconds=2.0,
        )
        adapter = SmppAdapter(config, "", bind_mode=bind_mode, mo_part_seconds=1.0)
        sink = InboundSink()
        await adapter.start(sink)
        closing.append(adapter)
        return sim, sink

    yield start
    for thing in reversed(closing):
        await thing.close()


@pytest.mark.parametrize("bind_mode", ["transceiver", "transmitter_receiver"])
@pytest.mark.parametrize("concat", ["udh", "sar"])
async def test_long_inbound_message_reaches_the_sink_whole(pair, bind_mode, concat) -> None:
    sim, sink = await pair(bind_mode)
    assert await sim.deliver_mo("4520123456", "POLITI", LONG, concat=concat) == ESME_ROK
    assert await sim.deliver_mo("4520123457", "POLITI", LONG_UCS2, concat=concat) == ESME_ROK
    assert await sim.deliver_mo("4520123458", "POLITI", " Stop. ") == ESME_ROK
    assert [(m.phone, m.text) for m in sink.messages] == [
        ("+4520123456", LONG),
        ("+4520123457", LONG_UCS2),
        ("+4520123458", " Stop. "),
    ]
    assert sim.stats.mo_sent == len(mo_pdus("1", "2", LONG)) + len(mo_pdus("1", "2", LONG_UCS2)) + 1


async def test_inbound_message_is_acknowledged_only_after_the_sink_returned(pair) -> None:
    sim, sink = await pair()
    sink.gate = asyncio.Event()
    sending = asyncio.create_task(sim.deliver_mo("4520123456", "POLITI", LONG, seconds=5.0))
    await asyncio.wait_for(sink.entered.wait(), 5)
    await asyncio.sleep(0.3)
    assert not sending.done()  # no part answered while the commit is open
    sink.gate.set()
    assert await sending == ESME_ROK
    assert [m.text for m in sink.messages] == [LONG]


async def test_inbound_message_not_stored_is_refused_and_comes_again(pair) -> None:
    sim, sink = await pair()
    sink.fail_next = 1
    assert await sim.deliver_mo("4520123456", "POLITI", "STOP") == ESME_RSYSERR
    assert sink.messages == []
    # The SMSC sends it again; stored this time, and acknowledged.
    assert await sim.deliver_mo("4520123456", "POLITI", "STOP") == ESME_ROK
    assert [m.text for m in sink.messages] == ["STOP"]


async def test_a_message_missing_a_part_goes_on_after_the_wait(pair) -> None:
    sim, sink = await pair()  # mo_part_seconds=1.0
    # Only the second of two parts arrives; its answer comes once the message went on.
    assert await sim.deliver_mo("4520123456", "POLITI", LONG, seconds=5.0, order=[1]) == ESME_ROK
    (message,) = sink.messages
    assert message.text.startswith(GAP) and message.raw["missing_parts"] == [1]
