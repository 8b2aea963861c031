"""The gateway simulator as a subprocess, driven through GatewayApiAdapter over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    GatewayConfig,
    GatewayMisconfigured,
    GatewayThrottled,
    GatewayUnavailable,
    OutboundMessage,
    ReceiptUpdate,
)
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_simulators import gatewayapi as simulator

SIM_TOKEN = "sim-token"
SIM_SECRET = "sim-secret"
STARTUP_TIMEOUT = 10.0


@asynccontextmanager
async def running_simulator(*args: str) -> AsyncIterator[str]:
    """Start `python -m gateway_simulators.gatewayapi --port 0 ARGS`; yield its base URL."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway_simulators.gatewayapi", "--port", "0", *args),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)).decode()
        prefix = "simulator listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        yield line.removeprefix(prefix).strip()
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


class Receiver:
    """A callback endpoint that verifies every receipt with the adapter, like the service would."""

    def __init__(self) -> None:
        self.updates: list[ReceiptUpdate] = []
        self.rejected = 0
        self.attempts: Counter[str] = Counter()  # callback requests per phone, answered or not
        self.refuse: Callable[[str, int], bool] = lambda phone, attempt: False  # answer 503?
        self._arrived = asyncio.Event()
        self.adapter: GatewayApiAdapter | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def _handle(self, request: web.Request) -> web.Response:
        assert self.adapter is not None
        body = await request.read()
        phone = "+" + str(json.loads(body).get("msisdn"))
        self.attempts[phone] += 1
        if self.refuse(phone, self.attempts[phone]):
            return web.Response(status=503)
        try:
            updates = self.adapter.parse_callback(request.headers, body, self.url)
        except CallbackRejected as exc:
            self.rejected += 1
            return web.Response(status=exc.status)
        self.updates.extend(updates)
        self._arrived.set()
        return web.Response(status=204)

    def finals(self) -> list[ReceiptUpdate]:
        return [u for u in self.updates if u.state.is_final]

    async def wait_for_finals(self, count: int, within: float = 5.0) -> list[ReceiptUpdate]:
        """The final receipts once `count` arrived (or `within` seconds passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while len(self.finals()) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        await asyncio.sleep(0.05)  # time for any extra (duplicate) receipt to show up
        return self.finals()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_adapter(receiver: Receiver) -> AsyncIterator[Callable[..., GatewayApiAdapter]]:
    adapters: list[GatewayApiAdapter] = []

    def make(base_url: str, token: str = SIM_TOKEN, max_batch: int = 1000) -> GatewayApiAdapter:
        config = GatewayConfig(
            name="sim",
            type="gatewayapi",
            base_url=base_url,
            token=token,
            webhook_secret=SIM_SECRET,
            max_batch=max_batch,
            timeout_seconds=5,
        )
        adapter = GatewayApiAdapter(config, receiver.url)
        receiver.adapter = receiver.adapter or adapter
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.close()


async def sim_get(base_url: str, path: str, method: str = "GET", **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url + path, **kwargs) as resp,
    ):
        return resp.status, await resp.json()


def batch(count: int, text: str = "Police: stay indoors", alert: int = 7, first: int = 1):
    return [
        OutboundMessage(
            delivery_id=first + i, phone=f"+45{30000000 + first + i}", text=text, alert_id=alert
        )
        for i in range(count)
    ]


async def test_every_recipient_gets_one_final_receipt(receiver: Receiver, make_adapter) -> None:
    async with running_simulator("--receipt-delay-ms", "10", "--seed", "1") as url:
        adapter = make_adapter(url, max_batch=4)
        first = batch(10, "Police: stay indoors", alert=7)
        second = batch(5, "Politi: bliv indendørs", alert=8, first=100)
        results = await adapter.send_batch(first) + await adapter.send_batch(second)

        finals = await receiver.wait_for_finals(15)
        status, messages = await sim_get(url, "/_sim/messages")
        _, stats = await sim_get(url, "/_sim/stats")

    assert all(r.accepted for r in results)
    sent = {(r.gateway_message_id, m.phone) for r, m in zip(results, first + second, strict=True)}
    assert Counter((u.gateway_message_id, u.phone) for u in finals) == Counter(sent)
    assert {u.state for u in finals} == {DeliveryState.DELIVERED}
    assert receiver.rejected == 0

    # 10 recipients at max_batch 4 -> 3 requests, then 5 -> 2 requests; in order of acceptance.
    assert status == 200
    assert len({m["id"] for m in messages}) == 5
    by_phone = {m.phone: m for m in first + second}
    for entry in messages:
        original = by_phone["+" + str(entry["msisdn"])]
        assert entry["message"] == original.text
        assert entry["userref"] == str(original.alert_id)
    assert sorted(m["msisdn"] for m in messages) == sorted(int(p[1:]) for p in by_phone)
    assert stats == {
        "requests": 5,
        "recipients": 15,
        "rejected_requests": 0,
        "receipts_sent": 15,
        "receipts_failed": 0,
        "receipt_retries": 0,
        "resets": 0,
        "lost_answers": 0,
        "slow_answers": 0,
        "garbled_answers": 0,
        "receipts_pending": 0,
    }


RATIO_CASES = {
    "none delivered": ("0.0", 0),
    "all delivered": ("1.0", 20),
    "seeded half": ("0.5", None),
}


@pytest.mark.parametrize("case", RATIO_CASES.values(), ids=RATIO_CASES.keys())
async def test_delivered_ratio(receiver: Receiver, make_adapter, case) -> None:
    ratio, delivered = case
    args = ("--delivered-ratio", ratio, "--receipt-delay-ms", "0", "--seed", "42")
    async with running_simulator(*args) as url:
        await make_adapter(url).send_batch(batch(20))
        finals = await receiver.wait_for_finals(20)

    assert len(finals) == 20
    states = Counter(u.state for u in finals)
    failed = [u for u in finals if u.state is DeliveryState.FAILED]
    assert states[DeliveryState.DELIVERED] + states[DeliveryState.FAILED] == 20
    assert all(u.provider_status == "UNDELIVERABLE" and u.error for u in failed)
    if delivered is None:
        assert 0 < states[DeliveryState.DELIVERED] < 20  # seeded, so this is stable
    else:
        assert states[DeliveryState.DELIVERED] == delivered


async def test_same_seed_same_outcome(receiver: Receiver, make_adapter) -> None:
    outcomes = []
    for _ in range(2):
        receiver.updates.clear()
        args = ("--delivered-ratio", "0.5", "--receipt-delay-ms", "0", "--seed", "7")
        async with running_simulator(*args) as url:
            await make_adapter(url).send_batch(batch(12))
            finals = await receiver.wait_for_finals(12)
        outcomes.append(sorted((u.phone, u.state) for u in finals))
    assert outcomes[0] == outcomes[1]


async def test_enroute_comes_before_final(receiver: Receiver, make_adapter) -> None:
    async with running_simulator("--send-enroute", "--receipt-delay-ms", "0") as url:
        await make_adapter(url).send_batch(batch(6))
        await receiver.wait_for_finals(6)

    per_phone: dict[str | None, list[str]] = {}
    for update in receiver.updates:
        per_phone.setdefault(update.phone, []).append(update.provider_status)
    assert len(per_phone) == 6
    assert all(statuses == ["ENROUTE", "DELIVERED"] for statuses in per_phone.values())


async def test_hold_and_release(receiver: Receiver, make_adapter) -> None:
    async with running_simulator("--hold-receipts", "--receipt-delay-ms", "0") as url:
        await make_adapter(url).send_batch(batch(4))
        await asyncio.sleep(0.2)
        held = receiver.updates[:]
        _, stats = await sim_get(url, "/_sim/stats")

        status, released = await sim_get(url, "/_sim/release", "POST")
        finals = await receiver.wait_for_finals(4)

    assert held == []
    assert stats["receipts_pending"] == 4 and stats["receipts_sent"] == 0
    assert (status, released) == (200, {"released": 4})
    assert len(finals) == 4


ERROR_CASES = {
    "failure ratio 1": (("--failure-ratio", "1.0"), SIM_TOKEN, GatewayUnavailable),
    "wrong token": ((), "not-the-token", GatewayMisconfigured),
    "throttle ratio 1": (("--throttle-ratio", "1.0"), SIM_TOKEN, GatewayThrottled),
    "drop ratio 1": (("--drop-ratio", "1.0"), SIM_TOKEN, GatewayUnavailable),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_refused_requests(receiver: Receiver, make_adapter, case) -> None:
    args, token, error = case
    async with running_simulator(*args) as url:
        with pytest.raises(error) as caught:
            await make_adapter(url, token=token).send_batch(batch(3))
        _, messages = await sim_get(url, "/_sim/messages")
        _, stats = await sim_get(url, "/_sim/stats")
    assert messages == []
    assert (stats["requests"], stats["rejected_requests"], stats["recipients"]) == (1, 1, 0)
    if error is GatewayThrottled:
        assert caught.value.retry_after == 1.0  # the simulator's Retry-After


async def test_throttle_retry_after_is_configurable(receiver: Receiver, make_adapter) -> None:
    async with running_simulator("--throttle-ratio", "1", "--throttle-retry-after", "3") as url:
        with pytest.raises(GatewayThrottled) as caught:
            await make_adapter(url).send_batch(batch(1))
    assert caught.value.retry_after == 3.0


BAD_BODIES: dict[str, Any] = {
    "not an object": [1, 2],
    "empty list": [],
    "bad priority": {"message": "hi", "recipients": [{"msisdn": 45300}], "priority": "NOW"},
    "bad encoding": {"message": "hi", "recipients": [{"msisdn": 45300}], "encoding": "ASCII"},
    "bad validity": {"message": "hi", "recipients": [{"msisdn": 45300}], "validity_period": -1},
    "no message": {"recipients": [{"msisdn": 4530000001}]},
    "empty message": {"message": "", "recipients": [{"msisdn": 4530000001}]},
    "no recipients": {"message": "hi", "recipients": []},
    "msisdn as string": {"message": "hi", "recipients": [{"msisdn": "4530000001"}]},
    "recipient not an object": {"message": "hi", "recipients": [4530000001]},
}


async def test_request_validation() -> None:
    headers = {"Authorization": f"Token {SIM_TOKEN}"}
    async with running_simulator() as url:
        answers = {
            name: await sim_get(url, "/rest/mtsms", "POST", json=body, headers=headers)
            for name, body in BAD_BODIES.items()
        }
        good = await sim_get(
            url,
            "/rest/mtsms",
            "POST",
            json={"message": "hi", "recipients": [{"msisdn": 45300}]},
            headers=headers,
        )
        _, messages = await sim_get(url, "/_sim/messages")

    for name, (status, body) in answers.items():
        assert status == 400, name
        assert body["message"], name
    assert good[0] == 200 and len(good[1]["ids"]) == 1
    assert messages == [
        {
            "id": good[1]["ids"][0],
            "msisdn": 45300,
            "message": "hi",
            "userref": None,
            "priority": "NORMAL",
            "class": "standard",
            "encoding": "UTF8",
            "validity_period": None,
        }
    ]


async def test_reset_clears_messages_and_stats(make_adapter) -> None:
    async with running_simulator() as url:
        await make_adapter(url).send_batch(batch(2))
        status, _ = await sim_get(url, "/_sim/reset", "POST")
        _, messages = await sim_get(url, "/_sim/messages")
        _, stats = await sim_get(url, "/_sim/stats")
    assert status == 200
    assert messages == []
    assert (stats["requests"], stats["recipients"]) == (0, 0)


@pytest.mark.parametrize(
    "argv",
    [["--failure-ratio", "2"], ["--latency-ms", "-1"], ["--port", "http"], ["--bogus"]],
)
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        simulator.main(argv)
    assert caught.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("broadcaster simulate-gateway: error:")
    )


async def test_serve_in_process_retries_and_counts_failed_callbacks(
    receiver: Receiver, make_adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() with ready/stop: a callback failing twice is retried; one always failing counted."""
    monkeypatch.setattr(simulator, "CALLBACK_BACKOFF_SECONDS", 0.001)
    messages = batch(3)
    ok, flaky, broken = (m.phone for m in messages)
    receiver.refuse = lambda phone, attempt: phone == broken or (phone == flaky and attempt <= 2)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    options = simulator.SimulatorOptions(receipt_delay_ms=0, seed=3)
    server = asyncio.create_task(simulator.serve(options, ready=bound.set_result, stop=stop))
    try:
        url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 5)}"
        await make_adapter(url).send_batch(messages)
        finals = await receiver.wait_for_finals(2)
        for _ in range(250):  # poll the simulator until it gave up on the broken one
            _, stats = await sim_get(url, "/_sim/stats")
            if not stats["receipts_pending"]:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(server, 5)

    assert sorted(u.phone for u in finals) == sorted([ok, flaky])
    assert receiver.attempts == {ok: 1, flaky: 3, broken: 1 + simulator.CALLBACK_RETRIES}
    assert (stats["receipts_sent"], stats["receipts_failed"]) == (2, 1)
    assert stats["receipt_retries"] == 2 + simulator.CALLBACK_RETRIES


async def test_callback_retries_are_an_option_and_the_pause_stops_growing_at_a_second(
    receiver: Receiver, make_adapter
) -> None:
    """--callback-retries: a receipt refused 9 times goes through on the 10th attempt; with the
    pause doubling from 0.05 s but never above 1 s that takes about 5 s, not 25."""
    [message] = batch(1)
    receiver.refuse = lambda phone, attempt: attempt <= 9
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    options = simulator.SimulatorOptions(receipt_delay_ms=0, callback_retries=12)
    server = asyncio.create_task(simulator.serve(options, ready=bound.set_result, stop=stop))
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 5)}"
        await make_adapter(url).send_batch([message])
        [final] = await receiver.wait_for_finals(1, within=15)
        _, stats = await sim_get(url, "/_sim/stats")
    finally:
        stop.set()
        await asyncio.wait_for(server, 5)
    assert final.phone == message.phone and receiver.attempts == {message.phone: 10}
    assert (stats["receipts_sent"], stats["receipts_failed"], stats["receipt_retries"]) == (1, 0, 9)
    assert 4.5 < time.monotonic() - started < 8  # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 4 x 1 s


async def test_list_root_gets_one_id_per_message_object() -> None:
    headers = {"Authorization": f"Token {SIM_TOKEN}"}
    body = [
        {"message": "a", "recipients": [{"msisdn": 45301}, {"msisdn": 45302}], "class": "premium"},
        {
            "class": "premium",
            "message": "b",
            "recipients": [{"msisdn": 45303}],
            "priority": "URGENT",
            "encoding": "UCS2",
            "validity_period": 600,
        },
    ]
    async with running_simulator() as url:
        status, answer = await sim_get(url, "/rest/mtsms", "POST", json=body, headers=headers)
        _, messages = await sim_get(url, "/_sim/messages")
    assert status == 200 and len(answer["ids"]) == 2 and answer["ids"][0] != answer["ids"][1]
    by_msisdn = {m["msisdn"]: m for m in messages}
    assert by_msisdn[45301]["id"] == by_msisdn[45302]["id"] == answer["ids"][0]
    assert by_msisdn[45303]["id"] == answer["ids"][1]
    assert (by_msisdn[45303]["priority"], by_msisdn[45303]["validity_period"]) == ("URGENT", 600)
