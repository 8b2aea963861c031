"""SmppAdapter against the SMSC simulator over real TCP: in-process on a free port, and once as a
subprocess stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    GatewayConfig,
    GatewayMisconfigured,
    GatewayUnavailable,
    OutboundMessage,
    ReceiptsNotStored,
    ReceiptUpdate,
)
from gateway_adapters.registry import create_adapter, known_types
from gateway_adapters.smpp import SmppAdapter, SmppConfigError
from gateway_adapters.smpp_codec import (
    ESME_RINVBNDSTS,
    ESME_RINVOPTPARAMVAL,
    ESME_RMISSINGOPTPARAM,
    ESME_ROK,
    BindReceiver,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    FrameReader,
    SubmitSm,
    SubmitSmResp,
    decode,
    encode,
)
from gateway_adapters.smpp_ids import message_key
from gateway_adapters.smpp_receipts import (
    parse_delivery_receipt,
    receipt_text,
)
from gateway_adapters.smpp_text import (
    gsm7_encode,
    split_message,
)
from gateway_simulators.smpp import SmscOptions, SmscSimulator
from gateway_simulators.smpp_receipts import Receipt, receipt_frame

SYSTEM_ID, PASSWORD = "sim", "sim-pass"
STARTUP_TIMEOUT = 10.0


def msg(delivery_id: int, text: str = "Police: stay indoors", **extra: Any) -> OutboundMessage:
    return OutboundMessage(
        delivery_id=delivery_id,
        phone=f"+4520{delivery_id:06d}",
        text=text,
        alert_id=17,
        **extra,
    )


def config(url: str, token: str = f"{SYSTEM_ID}:{PASSWORD}", **extra: Any) -> GatewayConfig:
    settings: dict[str, Any] = {"timeout_seconds": 2.0, **extra}
    return GatewayConfig(name="smsc", type="smpp", base_url=url, token=token, **settings)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `check()` holds; fail the test if it does not within `within` seconds."""
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.01)


class Sink:
    """An on_receipts that records what it was given; `gate` (when set) holds each call."""

    def __init__(self) -> None:
        self.calls: list[list[ReceiptUpdate]] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = 0  # raise on this many calls
        self.error: type[Exception] = RuntimeError
        self.entered = asyncio.Event()

    async def __call__(self, updates: list[ReceiptUpdate]) -> None:
        self.calls.append(list(updates))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise self.error("database is down")

    @property
    def updates(self) -> list[ReceiptUpdate]:
        return [u for call in self.calls for u in call]


@pytest.fixture
async def smsc() -> AsyncIterator[Callable[..., Awaitable[SmscSimulator]]]:
    """Starts simulators with the given options on free ports; closes them afterwards."""
    started: list[SmscSimulator] = []

    async def start(**options: Any) -> SmscSimulator:
        options.setdefault("receipt_delay_ms", 0)
        sim = SmscSimulator(SmscOptions(system_id=SYSTEM_ID, password=PASSWORD, **options))
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.close()


# Binds per connect in each bind mode; tests marked `both_binds` run in each.
BINDS = {"transceiver": 1, "transmitter_receiver": 2}
both_binds = pytest.mark.parametrize("bind_mode", list(BINDS))


@pytest.fixture
def bind_mode() -> str:
    return "transceiver"


@pytest.fixture
async def connect(
    bind_mode: str,
) -> AsyncIterator[Callable[..., Awaitable[tuple[SmppAdapter, Sink]]]]:
    """Builds, starts and finally closes adapters bound to a simulator (in `bind_mode`)."""
    adapters: list[SmppAdapter] = []

    async def make(
        sim: SmscSimulator | str, token: str = f"{SYSTEM_ID}:{PASSWORD}", **options: Any
    ) -> tuple[SmppAdapter, Sink]:
        url = sim if isinstance(sim, str) else f"smpp://127.0.0.1:{sim.port}"
        options.setdefault("reconnect_initial", 0.05)
        options.setdefault("bind_mode", bind_mode)
        adapter = SmppAdapter(config(url, token), "unused", **options)
        adapters.append(adapter)
        sink = Sink()
        await adapter.start(sink)
        return adapter, sink

    yield make
    for adapter in adapters:
        await adapter.close()


# -- sending --------------------------------------------------------------------------------------


@both_binds
async def test_batch_larger_than_the_window_never_exceeds_it(smsc, connect, bind_mode) -> None:
    sim = await smsc(latency_ms=20)
    adapter, _ = await connect(sim, window=4)
    assert adapter.bound and sim.stats.binds == BINDS[bind_mode]

    # Two batches at once, as the dispatcher's sender loops do: they share one window.
    first, second = await asyncio.gather(
        adapter.send_batch([msg(i) for i in range(15)]),
        adapter.send_batch([msg(i) for i in range(15, 30)]),
    )
    results = first + second
    assert [r.delivery_id for r in results] == list(range(30))
    assert all(r.accepted and not r.retryable for r in results)
    assert sim.stats.max_in_flight == 4  # the window was used in full and never exceeded

    # The stored id is the simulator's id as it wrote it ('0A000001'), in lower case, unpadded.
    by_phone = {m["destination_addr"]: m for m in sim.messages}
    for r in results:
        record = by_phone[f"4520{r.delivery_id:06d}"]
        assert r.gateway_message_id == record["id"].lower().lstrip("0")
    assert len({r.gateway_message_id for r in results}) == 30


async def test_addresses_priority_and_validity(smsc, connect) -> None:
    sim = await smsc()
    adapter, _ = await connect(sim)
    expires = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    await adapter.send_batch([msg(1, priority="emergency", expires_at=expires), msg(2)])
    first, second = sorted(sim.messages, key=lambda m: m["destination_addr"])
    assert (first["source_addr"], first["source_addr_ton"], first["source_addr_npi"]) == (
        "POLITI",
        5,
        0,
    )
    assert (first["destination_addr"], first["dest_addr_ton"], first["dest_addr_npi"]) == (
        "4520000001",
        1,
        1,
    )
    assert (first["priority_flag"], first["validity_period"]) == (3, "310203040506000+")
    assert (second["priority_flag"], second["validity_period"]) == (0, "")
    assert first["registered_delivery"] == 1


async def test_numeric_sender_is_an_international_number(smsc) -> None:
    sim = await smsc()
    adapter = SmppAdapter(
        config(f"smpp://127.0.0.1:{sim.port}", sender="+4512345678"), "", reconnect_initial=0.05
    )
    try:
        await adapter.start(Sink())
        await adapter.send_batch([msg(1)])
    finally:
        await adapter.close()
    [record] = sim.messages
    assert (record["source_addr"], record["source_addr_ton"], record["source_addr_npi"]) == (
        "4512345678",
        1,
        1,
    )


async def test_throttled_answers_are_retryable_and_stop_the_batch(smsc, connect) -> None:
    sim = await smsc(throttle_ratio=1.0, latency_ms=5)
    adapter, _ = await connect(sim, window=3)
    results = await adapter.send_batch([msg(i) for i in range(20)])
    for r in results:
        assert (r.accepted, r.throttled, r.retryable, r.retry_after) == (False, True, True, 1.0)
        assert r.error == "smpp 0x00000058"
    # After the first throttling answer nothing new was submitted: at most one window's worth.
    assert 1 <= sim.stats.submits <= 3
    assert sim.messages == []


async def test_unanswered_submits_time_out_and_free_their_slots(smsc) -> None:
    sim = await smsc(latency_ms=600)
    url = f"smpp://127.0.0.1:{sim.port}"
    adapter = SmppAdapter(config(url, timeout_seconds=0.2), "", window=3, reconnect_initial=0.05)
    try:
        await adapter.start(Sink())
        started = asyncio.get_running_loop().time()
        results = await adapter.send_batch([msg(i) for i in range(5)])
        elapsed = asyncio.get_running_loop().time() - started
        # Three in the window, each overdue after 0.2 s; then the other two, overdue in turn.
        assert [(r.accepted, r.retryable, r.error) for r in results] == [
            (False, True, "smpp timeout")
        ] * 5
        assert 0.35 <= elapsed < 1.0
        # Given up on, the first three no longer count against the window, though the SMSC
        # still holds them: it had all five unanswered at once.
        assert sim.stats.submits == 5 and sim.stats.max_in_flight == 5
        # The late answers match nothing; the window is whole again for the next batch.
        sim.options.latency_ms = 0
        await asyncio.sleep(0.7)
        results = await adapter.send_batch([msg(i) for i in range(10, 20)])
        assert all(r.accepted for r in results)
        assert adapter.bound
    finally:
        await adapter.close()


async def test_a_cancelled_batch_sends_nothing_more(smsc, connect) -> None:
    sim = await smsc(latency_ms=150)
    adapter, _ = await connect(sim, window=2)
    long_text = "Police: " + "stay indoors, " * 25  # 358 characters: three parts
    batch = asyncio.create_task(
        adapter.send_batch([msg(i) for i in range(6)] + [msg(6, text=long_text)])
    )
    await eventually(lambda: sim.stats.submits == 2)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    await asyncio.sleep(0.4)  # the two answers come back; nothing is sent in their place
    assert sim.stats.submits == 2
    # The window's slots came back with the answers.
    sim.options.latency_ms = 0
    results = await adapter.send_batch([msg(i) for i in range(10, 15)] + [msg(15, text=long_text)])
    assert all(r.accepted for r in results)
    assert sim.stats.submits == 2 + 5 + 3


async def test_an_error_in_a_long_message_reaches_the_caller(smsc, connect, monkeypatch) -> None:
    sim = await smsc()
    adapter, _ = await connect(sim)

    def broken(delivery_id: int, resp: object) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(adapter, "_accepted", broken)
    with pytest.raises(RuntimeError, match="broken"):
        async with asyncio.timeout(5):  # raised, not waited on forever
            await adapter.send_batch([msg(1, text="Police: " + "stay indoors, " * 25)])


async def test_invalid_destination_is_a_permanent_rejection(smsc, connect) -> None:
    sim = await smsc(invalid_ratio=1.0)
    adapter, _ = await connect(sim)
    results = await adapter.send_batch([msg(1), msg(2)])
    for r in results:
        assert (r.accepted, r.retryable, r.throttled, r.error) == (
            False,
            False,
            False,
            "smpp 0x0000000B",
        )
    assert sim.stats.invalid == 2


async def test_mixed_outcomes_follow_the_seeded_simulator(smsc, connect) -> None:
    sim = await smsc(invalid_ratio=0.5, seed=7)
    adapter, _ = await connect(sim)
    results = await adapter.send_batch([msg(i) for i in range(40)])
    accepted = [r for r in results if r.accepted]
    rejected = [r for r in results if not r.accepted]
    assert accepted and rejected
    assert len(accepted) == sim.stats.accepted == len(sim.messages)
    assert all(r.error == "smpp 0x0000000B" and not r.retryable for r in rejected)


async def test_malformed_phone_is_rejected_without_submitting(smsc, connect) -> None:
    sim = await smsc()
    adapter, _ = await connect(sim)
    bad = OutboundMessage(delivery_id=9, phone="+45abc", text="x", alert_id=1)
    [result] = await adapter.send_batch([bad])
    assert (result.accepted, result.error, result.retryable) == (False, "invalid msisdn", False)
    assert sim.stats.submits == 0


@both_binds
async def test_long_messages_are_reassembled_at_the_smsc(smsc, connect) -> None:
    sim = await smsc(latency_ms=10)
    adapter, _ = await connect(sim)
    gsm = "Politi: bliv indendørs [zone {A}] €" * 10  # extension chars near the split points
    ucs2 = "Полиция: оставайтесь дома 😀 " * 8
    assert len(split_message(gsm, 1)) == 3 and len(split_message(ucs2, 1)) == 4
    results = await adapter.send_batch([msg(1, gsm), msg(2, ucs2)])
    assert all(r.accepted for r in results)

    by_phone = {m["destination_addr"]: m for m in sim.messages}
    assert len(sim.messages) == 2 and sim.stats.accepted == 7
    for r, text, parts, coding in ((results[0], gsm, 3, 0), (results[1], ucs2, 4, 8)):
        record = by_phone[f"4520{r.delivery_id:06d}"]
        assert (record["text"], record["parts"], record["data_coding"]) == (text, parts, coding)
        # The message is known by its last part's id.
        assert r.gateway_message_id == message_key(record["part_ids"][-1])


@both_binds
async def test_long_message_receipts_speak_through_the_last_part(smsc, connect) -> None:
    # Receipts at once, submits slow: the first part's receipt arrives before the last part is
    # accepted, so the adapter must hold it until it knows the message's id.
    sim = await smsc(latency_ms=30, receipt_delay_ms=0)
    adapter, sink = await connect(sim)
    [result] = await adapter.send_batch([msg(1, "a" * 400)])
    await eventually(lambda: sim.stats.receipts_acked == 3)
    assert [(u.gateway_message_id, u.state) for u in sink.updates] == [
        (result.gateway_message_id, DeliveryState.DELIVERED)
    ]


async def test_failed_parts_are_reported_under_the_message_id(smsc, connect) -> None:
    sim = await smsc(latency_ms=30, receipt_delay_ms=0, delivered_ratio=0.0)
    adapter, sink = await connect(sim)
    [result] = await adapter.send_batch([msg(1, "a" * 400)])
    await eventually(lambda: sim.stats.receipts_acked == 3)
    assert [u.gateway_message_id for u in sink.updates] == [result.gateway_message_id] * 3
    assert {u.state for u in sink.updates} == {DeliveryState.FAILED}
    statuses = sorted(u.provider_status for u in sink.updates)
    assert statuses == ["UNDELIV", "UNDELIV (part)", "UNDELIV (part)"]


# -- receipts -------------------------------------------------------------------------------------


async def test_a_part_receipt_read_right_behind_its_response_is_known_as_a_part(connect) -> None:
    # An SMSC writes a part's submit_sm_resp and that part's receipt in one go, after another
    # receipt: a receipt worker runs before the sending coroutine does, and must still know the
    # part (else it would report the part as a message of its own).
    answered: list[tuple[int, int]] = []

    def receipt(sequence: int, message_id: int) -> bytes:
        text = f"id:{message_id} sub:001 dlvrd:001 stat:DELIVRD err:000"
        return encode(
            DeliverSm(sequence_number=sequence, esm_class=0x04, short_message=text.encode())
        )

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = 0
        frames = FrameReader(reader)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                for frame in await frames.frames():
                    pdu = decode(frame)
                    if isinstance(pdu, BindTransceiver):
                        bound = BindTransceiverResp(sequence_number=pdu.sequence_number)
                        writer.write(encode(bound))
                    elif isinstance(pdu, SubmitSm):
                        parts += 1  # message ids 1, 2, ... (hex in responses, decimal in receipts)
                        resp = SubmitSmResp(
                            sequence_number=pdu.sequence_number, message_id=f"{parts:X}"
                        )
                        before = receipt(900, 9) if parts == 1 else b""
                        writer.write(before + encode(resp) + receipt(900 + parts, parts))
                    elif isinstance(pdu, DeliverSmResp):
                        answered.append((pdu.sequence_number, pdu.command_status))
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        adapter, sink = await connect(f"smpp://127.0.0.1:{port}")
        [result] = await adapter.send_batch([msg(1, "a" * 200)])  # two parts
        assert result.gateway_message_id == "2"
        await eventually(lambda: len(answered) == 3)
        assert sorted(answered) == [(900, ESME_ROK), (901, ESME_ROK), (902, ESME_ROK)]
        # The unrelated receipt and the last part's, which speaks for the message; not part 1's.
        assert sorted(u.gateway_message_id for u in sink.updates) == ["2", "9"]
    finally:
        server.close()


@pytest.mark.parametrize(
    ("delivered_ratio", "receipt_tlvs", "state", "error"),
    [
        (1.0, False, DeliveryState.DELIVERED, None),
        (0.0, False, DeliveryState.FAILED, "UNDELIV err:069"),
        (1.0, True, DeliveryState.DELIVERED, None),  # id from receipted_message_id (hex)
    ],
)
async def test_receipts_reach_on_receipts_with_canonical_ids(
    smsc, connect, delivered_ratio, receipt_tlvs, state, error
) -> None:
    sim = await smsc(delivered_ratio=delivered_ratio, receipt_tlvs=receipt_tlvs)
    adapter, sink = await connect(sim)
    results = await adapter.send_batch([msg(i) for i in range(5)])
    await eventually(lambda: len(sink.updates) == 5)
    assert sorted(u.gateway_message_id for u in sink.updates) == sorted(
        r.gateway_message_id for r in results if r.gateway_message_id
    )
    for update in sink.updates:
        assert (update.state, update.error, update.phone) == (state, error, None)
        assert update.occurred_at is not None
    # The receipt named the id in zero-padded decimal (text) and hex (TLV), kept as written.
    raw = sink.updates[0].raw
    assert raw["id"].startswith("0167")
    assert raw.get("receipted_message_id", "0A").startswith("0A")
    assert ("receipted_message_id" in raw) is receipt_tlvs
    await eventually(lambda: sim.receipts_pending == 0)


# How the simulated SMSC writes ids (options of SmscOptions) -> the style the adapter must meet.
SMSC_ID_STYLES: dict[str, dict[str, Any]] = {
    "hex resp, decimal text, receipted_message_id (the default)": {},
    "hex resp, decimal text, no TLV": {"receipt_tlvs": False},
    "decimal in both, no TLV": {
        "submit_id_format": "{:d}",
        "receipt_id_format": "{:d}",
        "receipt_tlvs": False,
    },
    "zero-padded decimal resp, unpadded text": {
        "submit_id_format": "{:010d}",
        "receipt_id_format": "{:d}",
        "receipt_tlvs": False,
    },
    "hex of digits only in both": {
        "submit_id_format": "{:08X}",
        "receipt_id_format": "{:08X}",
        "first_message_id": 0x12340,  # 0x12340 to 0x12349: no hex letter in any
        "receipt_tlvs": False,
    },
    "decimal resp, lower-case hex text": {
        "submit_id_format": "{:d}",
        "receipt_id_format": "{:x}",
        "receipt_tlvs": False,
    },
    "opaque ids": {
        "submit_id_format": "SM-{:d}-X",
        "receipt_id_format": "sm-{:d}-x",
        "receipt_tlvs": False,
    },
}


@pytest.mark.parametrize("style", SMSC_ID_STYLES)
@both_binds
async def test_receipts_find_their_message_whatever_the_id_style(smsc, connect, style) -> None:
    sim = await smsc(delivered_ratio=0.5, seed=11, redelivery_delay_ms=20, **SMSC_ID_STYLES[style])
    adapter, sink = await connect(sim)
    results = await adapter.send_batch([msg(i) for i in range(10)])
    await eventually(lambda: sim.receipts_pending == 0)
    outcome = {message_key(m["id"]): m["stats"][-1] for m in sim.messages}
    assert sorted(u.gateway_message_id for u in sink.updates) == sorted(
        r.gateway_message_id for r in results if r.gateway_message_id
    )
    expected = {"DELIVRD": DeliveryState.DELIVERED, "UNDELIV": DeliveryState.FAILED}
    for update in sink.updates:  # each with its own message's outcome
        assert update.state == expected[outcome[update.gateway_message_id]]
    assert sim.stats.receipts_refused == 0  # one adapter saw every id: nothing had to wait


@both_binds
async def test_deliver_sm_is_answered_only_after_on_receipts_returned(smsc, connect) -> None:
    sim = await smsc(hold_receipts=True)
    adapter, sink = await connect(sim)
    sink.gate = asyncio.Event()
    [result] = await adapter.send_batch([msg(1)])
    assert sim.release() == 1
    await asyncio.wait_for(sink.entered.wait(), 3)
    await asyncio.sleep(0.1)  # time for a premature answer to reach the simulator
    assert (sim.stats.receipts_sent, sim.stats.receipts_acked) == (1, 0)
    sink.gate.set()
    await eventually(lambda: sim.stats.receipts_acked == 1)
    assert sim.receipts_pending == 0
    assert [u.gateway_message_id for u in sink.updates] == [result.gateway_message_id]


@both_binds
async def test_failed_commit_answers_syserr_and_the_smsc_redelivers(smsc, connect) -> None:
    sim = await smsc(redelivery_delay_ms=20)
    adapter, sink = await connect(sim)
    sink.fail_next = 1
    [result] = await adapter.send_batch([msg(1)])
    await eventually(lambda: sim.stats.receipts_acked == 1)
    assert sim.stats.receipts_refused == 1  # answered ESME_RSYSERR, then sent again
    assert [u.gateway_message_id for u in sink.updates] == [result.gateway_message_id] * 2


async def test_receipts_not_stored_for_now_are_refused_without_a_log_line_each(
    smsc, connect, caplog
) -> None:
    """During a database outage the sink says the receipts were not stored and the cause was
    reported (once, by the receipt writer): they are refused and come again, without a
    traceback per batch."""
    sim = await smsc(redelivery_delay_ms=20)
    adapter, sink = await connect(sim)
    sink.fail_next, sink.error = 3, ReceiptsNotStored
    caplog.set_level(logging.DEBUG, logger="gateway_adapters")
    [result] = await adapter.send_batch([msg(1)])
    await eventually(lambda: sim.stats.receipts_acked == 1)
    assert sim.stats.receipts_refused == 3
    assert [u.gateway_message_id for u in sink.updates] == [result.gateway_message_id] * 4
    noted = [r for r in caplog.records if r.name.startswith("gateway_adapters.smpp")]
    assert [r for r in noted if r.levelno >= logging.WARNING or r.exc_info] == []
    assert len([r for r in noted if "not stored" in r.getMessage()]) == 3


@both_binds
async def test_unanswered_receipts_are_redelivered_after_a_reconnect(
    smsc, connect, bind_mode
) -> None:
    sim = await smsc(hold_receipts=True)
    adapter, sink = await connect(sim)
    sink.gate = asyncio.Event()  # the first commit never finishes ...
    [result] = await adapter.send_batch([msg(1)])
    sim.release()
    await asyncio.wait_for(sink.entered.wait(), 3)
    sim.drop_connections()  # ... because the connection drops under it
    sink.gate = None
    await eventually(lambda: sim.stats.receipts_acked == 1)
    assert sim.stats.binds == 2 * BINDS[bind_mode] and sim.stats.receipts_unanswered == 1
    assert [u.gateway_message_id for u in sink.updates] == [result.gateway_message_id] * 2


class GatedSink:
    """An on_receipts whose calls each wait for their own gate: `calls[i]` holds the i-th call's
    receipts; `fail` lists the calls (by index) that raise once let through."""

    def __init__(self) -> None:
        self.calls: list[list[ReceiptUpdate]] = []
        self.gates: list[asyncio.Event] = []
        self.fail: set[int] = set()

    async def __call__(self, updates: list[ReceiptUpdate]) -> None:
        index = len(self.calls)
        self.calls.append(list(updates))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if index in self.fail:
            raise RuntimeError("database is down")

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()

    @property
    def ids(self) -> list[str]:
        return [u.gateway_message_id for call in self.calls for u in call]


async def start_with(sim: SmscSimulator, sink: Any, **options: Any) -> SmppAdapter:
    options.setdefault("reconnect_initial", 0.05)
    adapter = SmppAdapter(config(f"smpp://127.0.0.1:{sim.port}"), "unused", **options)
    await adapter.start(sink)
    return adapter


async def test_concurrent_batches_are_each_answered_after_their_own_commit(smsc) -> None:
    sim = await smsc(hold_receipts=True)
    sink = GatedSink()
    adapter = await start_with(sim, sink, receipt_batch=2, receipt_concurrency=2)
    try:
        results = await adapter.send_batch([msg(i) for i in range(4)])
        sim.release()
        await eventually(lambda: len(sink.calls) == 2)  # two batches committing at once
        first, second = sink.calls
        assert len(first) + len(second) == 4 and sim.stats.receipts_acked == 0
        sink.gates[1].set()  # the second commits first: only its receipts are answered
        await eventually(lambda: sim.stats.receipts_acked == len(second))
        await asyncio.sleep(0.05)
        assert sim.stats.receipts_acked == len(second) and sim.receipts_pending == len(first)
        sink.gates[0].set()
        await eventually(lambda: sim.receipts_pending == 0)
        assert sorted(sink.ids) == sorted(str(r.gateway_message_id) for r in results)
        assert sim.stats.receipts_sent == sim.stats.receipts_acked == 4
    finally:
        sink.open_all()
        await adapter.close()


async def test_a_failed_batch_is_refused_while_the_one_beside_it_is_answered(smsc) -> None:
    sim = await smsc(hold_receipts=True, redelivery_delay_ms=20)
    sink = GatedSink()
    sink.fail = {0}
    adapter = await start_with(sim, sink, receipt_batch=2, receipt_concurrency=2)
    try:
        results = await adapter.send_batch([msg(i) for i in range(4)])
        sim.release()
        await eventually(lambda: len(sink.calls) == 2)
        failed = [u.gateway_message_id for u in sink.calls[0]]
        sink.open_all()
        # The failed batch's receipts are refused (ESME_RSYSERR) and come again; the others not.
        async with asyncio.timeout(5):
            while sim.receipts_pending:
                sink.open_all()
                await asyncio.sleep(0.01)
        assert sim.stats.receipts_refused == len(failed)
        assert sim.stats.receipts_acked == 4
        assert sorted(sink.ids) == sorted([str(r.gateway_message_id) for r in results] + failed)
    finally:
        sink.open_all()
        await adapter.close()


async def test_a_deliver_sm_unanswered_in_time_is_sent_again(smsc) -> None:
    # The commit of the first copy hangs past the SMSC's response timeout: the SMSC sends the
    # receipt again, another worker commits and answers that copy, and the late answer to the
    # first copy counts for nothing.
    sim = await smsc(hold_receipts=True, response_timeout_ms=100)
    sink = GatedSink()
    adapter = await start_with(sim, sink, receipt_concurrency=2)
    try:
        [result] = await adapter.send_batch([msg(1)])
        sim.release()
        await eventually(lambda: len(sink.calls) == 2)  # the copy sent again
        assert sim.stats.receipts_unanswered >= 1 and sim.stats.receipts_acked == 0
        sink.gates[1].set()
        await eventually(lambda: sim.stats.receipts_acked == 1)
        assert sim.receipts_pending == 0
        sink.open_all()  # the first copy's commit ends; its answer finds nothing to settle
        await asyncio.sleep(0.05)
        assert sim.stats.receipts_acked == 1
        assert sink.ids[:2] == [result.gateway_message_id] * 2
    finally:
        sink.open_all()
        await adapter.close()


@both_binds
async def test_many_receipts_fill_the_window_without_exceeding_it(smsc, connect) -> None:
    sim = await smsc(hold_receipts=True, receipt_window=64, delivered_ratio=0.8, seed=5)
    adapter, sink = await connect(sim, receipt_batch=25, receipt_concurrency=3)
    sink.gate = asyncio.Event()  # commits wait: the SMSC's window fills up meanwhile
    results = []
    for start in range(0, 1000, 250):
        results += await adapter.send_batch([msg(i) for i in range(start, start + 250)])
    sim.release()
    await eventually(lambda: sim.stats.receipts_sent == 64)
    await asyncio.sleep(0.05)
    assert sim.stats.receipts_sent == 64 and len(sink.updates) <= 64
    sink.gate.set()
    await eventually(lambda: sim.receipts_pending == 0, within=20)
    assert sim.stats.max_receipts_out == 64
    assert sim.stats.receipts_sent == sim.stats.receipts_acked == 1000
    assert max(len(call) for call in sink.calls) <= 25
    # Every receipt committed exactly once, each with its message's outcome.
    assert sorted(u.gateway_message_id for u in sink.updates) == sorted(
        r.gateway_message_id for r in results
    )
    states = {u.state for u in sink.updates}
    assert states == {DeliveryState.DELIVERED, DeliveryState.FAILED}


@pytest.mark.parametrize(
    ("tlvs", "stat", "snippet", "coding"),
    [
        (False, "DELIVRD", "Police: stay indoors", 0),  # ASCII
        (True, "UNDELIV", "Politiet: bliv inde", 0),
        (True, "DELIVRD", "Politi: indbrud på Ø", 8),  # beyond ASCII: UCS-2, still readable
        (False, "UNDELIV", "Полиция: оставайтесь", 8),
    ],
)
def test_simulator_writes_the_deliver_sm_a_receipt_is(
    tlvs: bool, stat: str, snippet: str, coding: int
) -> None:
    # The simulator builds deliver_sm from parts encoded in advance; the bytes must be what the
    # codec encodes for that DeliverSm, and read back as the receipt it stands for.
    sim = SmscSimulator(SmscOptions(receipt_tlvs=tlvs))
    submitted = datetime(2026, 11, 23, 23, 59, 30, tzinfo=UTC)
    receipt = Receipt(
        submit_id="0A000001",
        text_id="0167772161",
        recipient="4520000001",
        recipient_ton=1,
        recipient_npi=1,
        sender="POLITI",
        sender_ton=5,
        sender_npi=0,
        stat=stat,
        submitted=submitted,
        snippet=snippet,
    )
    done = datetime(2026, 11, 24, 0, 1, tzinfo=UTC)
    frame = receipt_frame(receipt, 77, "2611240001", sim.options.receipt_tlvs)
    text = receipt_text(
        "0167772161",
        stat,
        err="000" if stat == "DELIVRD" else "069",
        submitted=submitted,
        done=done,
        delivered=stat == "DELIVRD",
        text=snippet,
    )
    expected = DeliverSm(
        sequence_number=77,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="4520000001",
        dest_addr_ton=5,
        dest_addr_npi=0,
        destination_addr="POLITI",
        esm_class=0x04,
        data_coding=coding,
        short_message=text.encode("ascii" if coding == 0 else "utf-16-be"),
        tlvs={0x001E: b"0A000001\x00", 0x0427: bytes((2 if stat == "DELIVRD" else 5,))}
        if tlvs
        else {},
    )
    assert frame == encode(expected)
    pdu = decode(frame)
    assert isinstance(pdu, DeliverSm)
    parsed = parse_delivery_receipt(pdu)
    assert (parsed.stat, parsed.done_date, parsed.fields["text"]) == (stat, done, snippet)
    assert (parsed.text_id, parsed.tlv_id) == ("0167772161", "0A000001" if tlvs else "")


# -- connection -----------------------------------------------------------------------------------


@both_binds
async def test_enquire_link_both_ways(smsc, connect, bind_mode) -> None:
    sim = await smsc()
    adapter, _ = await connect(sim, enquire_link_interval=0.05)
    await eventually(lambda: sim.stats.enquire_links >= 2)  # the adapter's keepalive
    # The adapter answers the SMSC's, on each connection.
    assert await sim.enquire_link_all() == [ESME_ROK] * BINDS[bind_mode]
    assert adapter.bound


async def test_unanswered_enquire_link_drops_the_connection() -> None:
    """A peer that binds and then goes silent: the keepalive gives up and reconnects."""
    binds = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal binds
        head = await reader.readexactly(16)
        await reader.readexactly(int.from_bytes(head[:4]) - 16)
        binds += 1
        sequence = head[12:16]
        writer.write(
            bytes.fromhex("00000011 80000009 00000000".replace(" ", "")) + sequence + b"\0"
        )
        with contextlib.suppress(ConnectionError):
            await reader.read()  # ignore everything from now on
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    adapter = SmppAdapter(
        config(f"smpp://127.0.0.1:{port}"),
        "",
        enquire_link_interval=0.05,
        enquire_link_timeout=0.1,
        reconnect_initial=0.05,
    )
    try:
        await adapter.start(Sink())
        await eventually(lambda: binds >= 2)
    finally:
        await adapter.close()
        server.close()
        await server.wait_closed()


@both_binds
async def test_reconnects_after_the_server_drops_the_connection(smsc, connect, bind_mode) -> None:
    sim = await smsc(latency_ms=300)
    adapter, _ = await connect(sim)
    pending = asyncio.create_task(adapter.send_batch([msg(1), msg(2)]))
    await eventually(lambda: sim.stats.submits == 2)
    sim.drop_connections()
    for r in await pending:  # outstanding submits fail, and may be tried again
        assert (r.accepted, r.retryable, r.error) == (False, True, "smpp connection lost")

    binds = 2 * BINDS[bind_mode]
    await eventually(lambda: not adapter.bound or sim.stats.binds == binds)
    if not adapter.bound:
        with pytest.raises(GatewayUnavailable):
            await adapter.send_batch([msg(3)])
    await eventually(lambda: adapter.bound and sim.stats.binds == binds)
    sim.options.latency_ms = 0
    [result] = await adapter.send_batch([msg(4)])
    assert result.accepted


async def test_bind_failure_with_a_wrong_password_is_a_clear_error(smsc) -> None:
    sim = await smsc()
    adapter = SmppAdapter(config(f"smpp://127.0.0.1:{sim.port}", token="sim:wrong"), "")
    try:
        with pytest.raises(GatewayMisconfigured, match=r"ESME_RBINDFAIL \(0x0000000D\)"):
            await adapter.start(Sink())
        assert sim.stats.bind_failures == 1
        await asyncio.sleep(0.1)
        assert sim.stats.connections == 1  # no retry loop hammering the SMSC
        with pytest.raises(GatewayUnavailable, match="not bound"):
            await adapter.send_batch([msg(1)])
    finally:
        await adapter.close()


async def test_unreachable_at_start_keeps_trying_in_the_background() -> None:
    with socket.socket() as probe:  # a port nobody listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = SmppAdapter(config(f"smpp://127.0.0.1:{port}"), "", reconnect_initial=0.02)
    sim = SmscSimulator(SmscOptions(system_id=SYSTEM_ID, password=PASSWORD))
    try:
        await adapter.start(Sink())  # returns: the SMSC may come up later
        with pytest.raises(GatewayUnavailable):
            await adapter.send_batch([msg(1)])
        await sim.start(port=port)
        await eventually(lambda: adapter.bound)
    finally:
        await adapter.close()
        await sim.close()


@both_binds
async def test_close_unbinds(smsc, connect, bind_mode) -> None:
    sim = await smsc()
    adapter, _ = await connect(sim)
    await adapter.close()
    assert sim.stats.unbinds == BINDS[bind_mode]
    assert not adapter.bound
    await eventually(lambda: sim.bound_sessions == 0)


# -- binds ----------------------------------------------------------------------------------------


async def test_a_pair_of_binds_submits_on_one_and_receives_on_the_other(smsc, connect) -> None:
    sim = await smsc(delivered_ratio=0.0)
    adapter, sink = await connect(sim, bind_mode="transmitter_receiver")
    assert sim.stats.bind_roles == {"transmitter": 1, "receiver": 1}
    assert adapter.bound and adapter.receiving
    # The simulator refuses submit_sm on a receiver and sends deliver_sm only to receivers, as
    # SMPP 3.4 has it: every message accepted and every receipt back proves the roles.
    results = await adapter.send_batch([msg(i) for i in range(5)])
    assert all(r.accepted for r in results)
    await eventually(lambda: len(sink.updates) == 5)
    assert {u.state for u in sink.updates} == {DeliveryState.FAILED}


async def test_each_bind_of_a_pair_is_bound_again_on_its_own(smsc, connect) -> None:
    sim = await smsc(hold_receipts=True)
    adapter, sink = await connect(sim, bind_mode="transmitter_receiver")
    [first] = await adapter.send_batch([msg(1)])
    assert sim.drop_connections("receiver") == 1
    # The transmitter goes on submitting while the receiver binds again.
    [second] = await adapter.send_batch([msg(2)])
    assert first.accepted and second.accepted
    await eventually(lambda: adapter.receiving)
    assert sim.stats.bind_roles == {"transmitter": 1, "receiver": 2}
    sim.release()
    await eventually(lambda: len(sink.updates) == 2)
    assert sim.drop_connections("transmitter") == 1
    # The receiver stays bound while the transmitter binds again.
    await eventually(lambda: sim.stats.bind_roles["transmitter"] == 2 and adapter.bound)
    [third] = await adapter.send_batch([msg(3)])
    assert third.accepted and adapter.receiving
    sim.release()
    await eventually(lambda: len(sink.updates) == 3)
    assert sim.stats.bind_roles == {"transmitter": 2, "receiver": 2}
    assert sorted(u.gateway_message_id for u in sink.updates) == sorted(
        str(r.gateway_message_id) for r in (first, second, third)
    )


async def test_a_refused_receiver_bind_is_a_clear_error(smsc) -> None:
    sim = await smsc()
    adapter = SmppAdapter(
        config(f"smpp://127.0.0.1:{sim.port}", token="sim:wrong"),
        "",
        bind_mode="transmitter_receiver",
    )
    try:
        with pytest.raises(GatewayMisconfigured, match=r"bind_(transmitter|receiver) refused"):
            await adapter.start(Sink())
    finally:
        await adapter.close()
    assert not adapter.bound and not adapter.receiving


@both_binds
async def test_inbound_messages_are_acknowledged_on_the_receiving_bind(
    smsc, connect, bind_mode
) -> None:
    # Mobile-originated messages are not receipts: a sink without `inbound` gets none of them,
    # and they are acknowledged all the same (test_smpp_inbound.py has the sink that takes them).
    sim = await smsc()
    adapter, sink = await connect(sim)
    assert await sim.deliver_mo("4520000001", "POLITI", "Tip: a blue van") == ESME_ROK
    assert await sim.deliver_mo("4520000002", "POLITI", "Подсказка") == ESME_ROK
    results = await adapter.send_batch([msg(1)])
    await eventually(lambda: len(sink.updates) == 1)
    assert [u.gateway_message_id for u in sink.updates] == [results[0].gateway_message_id]


class Esme:
    """A bare ESME over TCP for what the adapter never does: bind as a receiver and submit,
    concatenate with sar_* TLVs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.frames = FrameReader(reader)
        self.writer = writer
        self.sequence = 0
        self.inbox: list[Any] = []

    @classmethod
    async def bound(cls, sim: SmscSimulator, bind: type[Any]) -> Esme:
        esme = cls(*await asyncio.open_connection("127.0.0.1", sim.port))
        resp = await esme.request(bind(system_id=SYSTEM_ID, password=PASSWORD))
        assert resp.command_status == ESME_ROK
        return esme

    async def request(self, pdu: Any) -> Any:
        self.sequence += 1
        pdu.sequence_number = self.sequence
        self.writer.write(encode(pdu))
        async with asyncio.timeout(2):
            while True:
                for frame in await self.frames.frames():
                    answer = decode(frame)
                    if answer.is_response and answer.sequence_number == self.sequence:
                        return answer
                    self.inbox.append(answer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def sar_part(text: str, ref: int, total: int, seq: int, without: int = 0) -> SubmitSm:
    """A part concatenated by sar_msg_ref_num, sar_total_segments and sar_segment_seqnum (all
    but the TLV `without`)."""
    sar = {0x020C: ref.to_bytes(2, "big"), 0x020E: bytes((total,)), 0x020F: bytes((seq,))}
    return SubmitSm(
        destination_addr="4520000001",
        source_addr="POLITI",
        registered_delivery=1,
        short_message=gsm7_encode(text),
        tlvs={tag: value for tag, value in sar.items() if tag != without},
    )


async def test_the_simulator_reassembles_sar_concatenation(smsc) -> None:
    sim = await smsc(hold_receipts=True)
    esme = await Esme.bound(sim, BindTransceiver)
    try:
        for seq, part in enumerate(["Politiet: bliv ", "indendørs ", "i aften."], start=1):
            resp = await esme.request(sar_part(part, 0x1234, 3, seq))
            assert resp.command_status == ESME_ROK
        [message] = sim.messages
        assert (message["text"], message["parts"]) == ("Politiet: bliv indendørs i aften.", 3)
        missing = await esme.request(sar_part("x", 0x1235, 2, 1, without=0x020F))
        assert missing.command_status == ESME_RMISSINGOPTPARAM
        wrong = await esme.request(sar_part("x", 0x1235, 2, 3))
        assert wrong.command_status == ESME_RINVOPTPARAMVAL
    finally:
        await esme.close()


async def test_the_simulator_keeps_to_the_roles_of_binds(smsc) -> None:
    sim = await smsc()
    receiver = await Esme.bound(sim, BindReceiver)
    transmitter = await Esme.bound(sim, BindTransmitter)
    try:
        refused = await receiver.request(sar_part("x", 1, 1, 1))
        assert refused.command_status == ESME_RINVBNDSTS  # a receiver may not submit
        accepted = await transmitter.request(sar_part("hello", 2, 1, 1))
        assert accepted.command_status == ESME_ROK
        await eventually(lambda: sim.stats.receipts_sent == 1)
        async with asyncio.timeout(2):  # the receipt goes to the receiver ...
            while not receiver.inbox:
                receiver.inbox += [decode(f) for f in await receiver.frames.frames()]
        await transmitter.request(EnquireLink())  # ... not to the transmitter: nothing before
        assert transmitter.inbox == []  # the answer to this enquire_link
        [receipt] = receiver.inbox
        assert isinstance(receipt, DeliverSm) and receipt.esm_class == 0x04
        assert receipt.tlvs[0x001E] == accepted.message_id.encode() + b"\x00"
    finally:
        await receiver.close()
        await transmitter.close()


# -- configuration --------------------------------------------------------------------------------


def test_simulator_receipt_window_on_the_command_line() -> None:
    from gateway_simulators.common import options_from_args
    from gateway_simulators.smpp import build_parser

    options = options_from_args(SmscOptions, build_parser().parse_args(["--receipt-window", "500"]))
    assert options.receipt_window == 500
    assert options_from_args(SmscOptions, build_parser().parse_args([])).receipt_window == 10
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--receipt-window", "0"])
    styled = build_parser().parse_args(
        ["--no-receipt-tlvs", "--submit-id-format", "{:d}", "--receipt-id-format", "{:x}"]
    )
    options = options_from_args(SmscOptions, styled)
    assert (options.receipt_tlvs, options.submit_id_format, options.receipt_id_format) == (
        False,
        "{:d}",
        "{:x}",
    )
    assert SmscOptions().receipt_tlvs  # receipted_message_id unless told otherwise
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--submit-id-format", "{:q}"])


def test_registered_and_built_by_the_registry() -> None:
    assert "smpp" in known_types()
    adapter = create_adapter(config("smpp://smsc.example:2776"), "unused")
    assert isinstance(adapter, SmppAdapter)
    assert (adapter.endpoint.host, adapter.endpoint.port, adapter.endpoint.system_id) == (
        "smsc.example",
        2776,
        "sim",
    )
    assert (adapter.window, adapter.submit_id_base, adapter.receipt_id_base) == (10, None, None)
    assert adapter.enquire_link_interval == 30.0 and adapter.registered_delivery == 1


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        ("http://smsc.example", "a:b", "smpp://host:port"),
        ("smpp://smsc.example", "no-colon", "system_id:password"),
        ("smpp://smsc.example", "a:123456789", "password is longer"),
        ("smpp://smsc.example", "abcdefghijklmnop:b", "system_id is longer"),
    ],
)
def test_bad_configuration_is_refused(url: str, token: str, message: str) -> None:
    with pytest.raises(SmppConfigError, match=message):
        SmppAdapter(config(url, token), "")


def test_a_status_word_mapped_to_no_state_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from broadcaster.settings import ConfigError, load_settings

    bad = GatewayConfig(
        name="smsc",
        type="smpp",
        base_url="smpp://h",
        token="a:b",
        extra={"status_words": {"OK": "done"}},
    )
    with pytest.raises(
        SmppConfigError, match="gateway 'smsc': status word 'OK': 'done' is not one"
    ):
        SmppAdapter(bad, "")
    path = tmp_path / "gw.toml"
    path.write_text(
        '[[gateways]]\nname = "smsc"\ntype = "smpp"\nbase_url = "smpp://h"\nstatus_words = "x"\n'
    )
    with pytest.raises(ConfigError, match="gateway 'smsc': status_words"):
        load_settings(config=path)


def test_parse_callback_is_refused() -> None:
    adapter = SmppAdapter(config("smpp://smsc.example"), "")
    with pytest.raises(CallbackRejected) as info:
        adapter.parse_callback({}, b"", "https://x/callbacks/smsc")
    assert info.value.status == 404


# -- the simulator as a process -------------------------------------------------------------------


@asynccontextmanager
async def simulator_process(*args: str) -> AsyncIterator[tuple[str, str]]:
    """Start `python -m gateway_simulators.smpp`; yield (smpp URL, http URL)."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway_simulators.smpp", "--port", "0"),
        *("--http-port", "0", *args),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)).decode()
        prefix = "simulator listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        smpp_url, http_url = line.removeprefix(prefix).split()
        yield smpp_url, http_url
    finally:
        # Stop it by its own PID only; escalate if SIGTERM is not enough.
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "the simulator should exit cleanly on SIGTERM"


@both_binds
async def test_simulator_process(connect, bind_mode) -> None:
    async with simulator_process("--receipt-delay-ms", "0", "--seed", "3") as (smpp_url, http):
        assert smpp_url.startswith("smpp://127.0.0.1:") and http.startswith("http://127.0.0.1:")
        adapter, sink = await connect(smpp_url)
        results = await adapter.send_batch([msg(1), msg(2, "a" * 200)])
        assert all(r.accepted for r in results)
        await eventually(lambda: len(sink.updates) == 2)

        async with aiohttp.ClientSession() as client:
            async with client.get(f"{http}/_sim/messages") as resp:
                messages = await resp.json()
            assert sorted((m["destination_addr"], m["parts"]) for m in messages) == [
                ("4520000001", 1),
                ("4520000002", 2),
            ]
            async with client.post(f"{http}/_sim/disconnect") as resp:
                assert (await resp.json())["disconnected"] == BINDS[bind_mode]
            async with asyncio.timeout(10):  # the adapter binds again
                while True:
                    async with client.get(f"{http}/_sim/stats") as resp:
                        stats = await resp.json()
                    if stats["binds"] >= 2 * BINDS[bind_mode] and adapter.bound:
                        break
                    await asyncio.sleep(0.02)
            assert stats["receipts_pending"] == 0
            [again] = await adapter.send_batch([msg(3)])
            assert again.accepted
            async with client.post(f"{http}/_sim/reset") as resp:
                assert resp.status == 200
            async with client.get(f"{http}/_sim/messages") as resp:
                assert await resp.json() == []
        await adapter.close()


def test_every_option_comes_from_the_configuration_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from broadcaster.settings import load_settings
    from gateway_adapters.registry import create_adapter

    entry = '[[gateways]]\nname = "smsc"\ntype = "smpp"\nbase_url = "smpp://127.0.0.1:2775"\n'
    values = {
        "window": 64,
        "bind_mode": "transmitter_receiver",
        "enquire_link_interval": 12.5,
        "enquire_link_timeout": 3.0,
        "reconnect_initial": 0.25,
        "reconnect_max": 9.0,
        "submit_id_base": 10,
        "receipt_id_base": 16,
        "registered_delivery": 0,
        "receipt_batch": 50,
        "receipt_concurrency": 2,
        "status_words": {"DND_REJECTED": "failed", "SUBMITD": "sent"},
        "mo_country_code": "47",
        "mo_part_seconds": 30.0,
    }
    assert set(values) == set(SmppAdapter.options)
    path = tmp_path / "gw.toml"
    lines = [f"{k} = {v!r}\n" for k, v in values.items() if k != "status_words"]
    lines.append('status_words = { DND_REJECTED = "failed", SUBMITD = "sent" }\n')
    path.write_text(entry + 'token = "a:b"\n' + "".join(lines))
    (gateway,) = load_settings(config=path).gateway_configs()
    configured = create_adapter(gateway, "")
    assert isinstance(configured, SmppAdapter)
    assert {k: getattr(configured, k) for k in values} == values
    path.write_text(entry + 'token = "a:b"\n')
    (gateway,) = load_settings(config=path).gateway_configs()
    default = create_adapter(gateway, "")
    assert isinstance(default, SmppAdapter) and default.window == SmppAdapter.window == 10
    assert default.submit_id_base == SmppAdapter.submit_id_base
