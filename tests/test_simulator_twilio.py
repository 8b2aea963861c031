"""The Twilio simulator as a subprocess, driven through TwilioAdapter over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from gateway_adapters.base import (
    CallbackRejected,
    DeliveryState,
    GatewayConfig,
    GatewayMisconfigured,
    OutboundMessage,
    ReceiptUpdate,
    SendResult,
)
from gateway_adapters.twilio import TwilioAdapter
from gateway_simulators import twilio as simulator_twilio

SIM_TOKEN = "ACsim:authsim"
SIM_SEND_PATH = "/2010-04-01/Accounts/ACsim/Messages.json"
FROM = "+4512345678"
STARTUP_TIMEOUT = 10.0


@asynccontextmanager
async def running_simulator(*args: str) -> AsyncIterator[str]:
    """Start `python -m gateway_simulators.twilio --port 0 ARGS`; yield its base URL."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway_simulators.twilio", "--port", "0", *args),
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
    """A callback endpoint that verifies every callback with the adapter, like the service."""

    def __init__(self) -> None:
        self.updates: list[ReceiptUpdate] = []
        self.rejected = 0
        self.attempts: Counter[str] = Counter()  # callback requests per phone, answered or not
        self.refuse: Callable[[str, int], bool] = lambda phone, attempt: False  # answer 503?
        self.requests: list[tuple[str, dict[str, str], str]] = []  # (url, params, signature)
        self._arrived = asyncio.Event()
        self.adapter: TwilioAdapter | None = None
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
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        phone = params.get("To", "")
        self.attempts[phone] += 1
        if self.refuse(phone, self.attempts[phone]):
            return web.Response(status=503)
        signature = request.headers.get("X-Twilio-Signature", "")
        self.requests.append((str(request.url), params, signature))
        try:
            # The URL as the service's API passes it: the one this request was made to.
            updates = self.adapter.parse_callback(request.headers, body, str(request.url))
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
async def make_adapter(receiver: Receiver) -> AsyncIterator[Callable[..., TwilioAdapter]]:
    adapters: list[TwilioAdapter] = []

    def make(
        base_url: str, token: str = SIM_TOKEN, sender: str = FROM, concurrency: int = 8
    ) -> TwilioAdapter:
        config = GatewayConfig(
            name="sim",
            type="twilio",
            base_url=base_url,
            token=token,
            sender=sender,
            concurrency=concurrency,
            timeout_seconds=5,
        )
        adapter = TwilioAdapter(config, receiver.url)
        receiver.adapter = receiver.adapter or adapter
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.close()


async def sim_request(base_url: str, path: str, method: str = "GET", **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url + path, **kwargs) as resp,
    ):
        return resp.status, await resp.json()


def batch(count: int, text: str = "Police: stay indoors", first: int = 1):
    return [
        OutboundMessage(
            delivery_id=first + i, phone=f"+45{30000000 + first + i}", text=text, alert_id=7
        )
        for i in range(count)
    ]


SENDER_CASES = {"From number": FROM, "Messaging Service": "MG" + "0" * 32}


@pytest.mark.parametrize("sender", SENDER_CASES.values(), ids=SENDER_CASES.keys())
async def test_every_message_gets_one_final_receipt(
    receiver: Receiver, make_adapter, sender: str
) -> None:
    async with running_simulator("--receipt-delay-ms", "10", "--seed", "1") as url:
        adapter = make_adapter(url, sender=sender)
        messages = batch(12) + batch(5, "Politi: bliv indendørs & luk + døre", first=100)
        results = await adapter.send_batch(messages)

        finals = await receiver.wait_for_finals(len(messages))
        status, listed = await sim_request(url, "/_sim/messages")
        _, stats = await sim_request(url, "/_sim/stats")

    assert all(r.accepted for r in results)
    assert all(re.fullmatch("SM[0-9a-f]{32}", r.gateway_message_id or "") for r in results)
    sent = {(r.gateway_message_id, m.phone) for r, m in zip(results, messages, strict=True)}
    assert len(sent) == len(messages)
    assert Counter((u.gateway_message_id, u.raw["To"]) for u in finals) == Counter(sent)
    assert {(u.state, u.provider_status) for u in finals} == {
        (DeliveryState.DELIVERED, "delivered")
    }
    assert receiver.rejected == 0
    sender_field = "From" if sender == FROM else "MessagingServiceSid"
    assert all(params[sender_field] == sender for _, params, _ in receiver.requests)

    assert status == 200
    assert sorted(listed, key=lambda m: m["sid"]) == sorted(
        (
            {"sid": r.gateway_message_id, "to": m.phone, "body": m.text, "validity_period": None}
            for r, m in zip(results, messages, strict=True)
        ),
        key=lambda m: m["sid"],
    )
    assert stats == {
        "requests": 17,
        "recipients": 17,
        "rejected_requests": 0,
        "throttled_requests": 0,
        "receipts_sent": 17,
        "receipts_failed": 0,
        "receipt_retries": 0,
        "resets": 0,
        "lost_answers": 0,
        "slow_answers": 0,
        "receipts_pending": 0,
    }


async def test_callbacks_pass_twilios_own_validator(receiver: Receiver, make_adapter) -> None:
    request_validator = pytest.importorskip("twilio.request_validator")
    async with running_simulator("--receipt-delay-ms", "0", "--send-sent") as url:
        await make_adapter(url).send_batch(batch(3))
        await receiver.wait_for_finals(3)
    validator = request_validator.RequestValidator("authsim")
    assert len(receiver.requests) == 6
    assert all(validator.validate(u, p, s) for u, p, s in receiver.requests)


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
    assert all(u.provider_status == "undelivered" and u.error == "twilio 30003" for u in failed)
    if delivered is None:
        assert 0 < states[DeliveryState.DELIVERED] < 20  # seeded, so this is stable
    else:
        assert states[DeliveryState.DELIVERED] == delivered


async def test_same_seed_same_outcome(receiver: Receiver, make_adapter) -> None:
    outcomes = []
    for _ in range(2):
        receiver.updates.clear()
        args = ("--delivered-ratio", "0.5", "--throttle-ratio", "0.2", "--seed", "7")
        async with running_simulator(*args, "--receipt-delay-ms", "0") as url:
            # One request at a time, so the n-th draw always belongs to the n-th message.
            results = await make_adapter(url, concurrency=1).send_batch(batch(12))
            finals = await receiver.wait_for_finals(sum(r.accepted for r in results))
        outcomes.append(
            (
                [(r.accepted, r.throttled) for r in results],
                sorted((u.raw["To"], u.state) for u in finals),
            )
        )
    assert outcomes[0] == outcomes[1]
    # Seeded, so stable: both kinds of answer and both final states occurred.
    assert {throttled for _, throttled in outcomes[0][0]} == {True, False}
    assert {state for _, state in outcomes[0][1]} == {DeliveryState.DELIVERED, DeliveryState.FAILED}


async def test_sent_comes_before_final(receiver: Receiver, make_adapter) -> None:
    async with running_simulator("--send-sent", "--receipt-delay-ms", "0") as url:
        await make_adapter(url).send_batch(batch(6))
        await receiver.wait_for_finals(6)

    per_phone: dict[str | None, list[tuple[str, DeliveryState]]] = {}
    for update in receiver.updates:
        per_phone.setdefault(update.raw["To"], []).append((update.provider_status, update.state))
    assert len(per_phone) == 6
    expected = [("sent", DeliveryState.SENT), ("delivered", DeliveryState.DELIVERED)]
    assert all(statuses == expected for statuses in per_phone.values())


async def test_hold_and_release(receiver: Receiver, make_adapter) -> None:
    async with running_simulator("--hold-receipts", "--receipt-delay-ms", "0") as url:
        await make_adapter(url).send_batch(batch(4))
        await asyncio.sleep(0.2)
        held = receiver.updates[:]
        _, stats = await sim_request(url, "/_sim/stats")

        status, released = await sim_request(url, "/_sim/release", "POST")
        finals = await receiver.wait_for_finals(4)

    assert held == []
    assert stats["receipts_pending"] == 4 and stats["receipts_sent"] == 0
    assert (status, released) == (200, {"released": 4})
    assert len(finals) == 4


# ratio option -> the result every message gets (delivery_id and error filled in by the test)
REFUSAL_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "throttled": (
        "--throttle-ratio",
        {"retryable": True, "throttled": True, "retry_after": 1.0},
        "twilio 20429: ",
    ),
    "invalid": ("--invalid-ratio", {}, "twilio 21211: "),
    "queue full": (
        "--queue-full-ratio",
        {"retryable": True, "throttled": True, "retry_after": 10.0},
        "twilio 21611: ",
    ),
    "server error": ("--failure-ratio", {"retryable": True}, "twilio 20500: "),
}


@pytest.mark.parametrize("case", REFUSAL_CASES.values(), ids=REFUSAL_CASES.keys())
async def test_refusals_become_results(receiver: Receiver, make_adapter, case) -> None:
    option, fields, error_prefix = case
    messages = batch(5)
    async with running_simulator(option, "1.0", "--receipt-delay-ms", "0") as url:
        results = await make_adapter(url).send_batch(messages)
        _, listed = await sim_request(url, "/_sim/messages")
        _, stats = await sim_request(url, "/_sim/stats")

    assert [r.error.startswith(error_prefix) for r in results if r.error] == [True] * 5
    assert results == [
        SendResult(m.delivery_id, False, error=r.error, **fields)
        for m, r in zip(messages, results, strict=True)
    ]
    assert listed == []
    assert (stats["requests"], stats["rejected_requests"], stats["recipients"]) == (5, 5, 0)
    assert stats["throttled_requests"] == (5 if option == "--throttle-ratio" else 0)
    await asyncio.sleep(0.05)
    assert receiver.updates == []


async def test_seeded_mix(receiver: Receiver, make_adapter) -> None:
    args = ("--throttle-ratio", "0.25", "--invalid-ratio", "0.25", "--seed", "3")
    async with running_simulator(*args, "--receipt-delay-ms", "0") as url:
        results = await make_adapter(url).send_batch(batch(40))
        accepted = [r for r in results if r.accepted]
        finals = await receiver.wait_for_finals(len(accepted))
        _, stats = await sim_request(url, "/_sim/stats")

    throttled = [r for r in results if r.throttled]
    invalid = [r for r in results if not r.accepted and not r.retryable]
    assert accepted and throttled and invalid
    assert len(accepted) + len(throttled) + len(invalid) == 40
    assert all((r.error or "").startswith("twilio 21211: ") for r in invalid)
    assert {u.gateway_message_id for u in finals} == {r.gateway_message_id for r in accepted}
    assert len(finals) == len(accepted)
    assert stats["recipients"] == len(accepted)
    assert stats["throttled_requests"] == len(throttled)
    assert stats["rejected_requests"] == len(throttled) + len(invalid)


async def test_wrong_token_is_misconfigured(receiver: Receiver, make_adapter) -> None:
    async with running_simulator() as url:
        with pytest.raises(GatewayMisconfigured) as caught:
            await make_adapter(url, token="ACsim:wrong", concurrency=2).send_batch(batch(6))
        _, listed = await sim_request(url, "/_sim/messages")
        _, stats = await sim_request(url, "/_sim/stats")
    assert caught.value.partial_results == ()
    assert listed == []
    # At most the requests already on the wire when the first 401 came back.
    assert 1 <= stats["requests"] == stats["rejected_requests"] <= 2


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}


GOOD_FORM = {"To": "+4530000001", "From": FROM, "Body": "hi"}

# (path, headers, form) -> (status, Twilio error code)
VALIDATION_CASES: dict[str, tuple[str, dict[str, str], dict[str, str], int, int]] = {
    "no auth": (SIM_SEND_PATH, {}, GOOD_FORM, 401, 20003),
    "wrong password": (SIM_SEND_PATH, basic("ACsim:nope"), GOOD_FORM, 401, 20003),
    "token scheme": (
        SIM_SEND_PATH,
        {"Authorization": "Token ACsim:authsim"},
        GOOD_FORM,
        401,
        20003,
    ),
    "other account in path": (
        "/2010-04-01/Accounts/ACother/Messages.json",
        basic(SIM_TOKEN),
        GOOD_FORM,
        404,
        20404,
    ),
    "no To": (SIM_SEND_PATH, basic(SIM_TOKEN), {**GOOD_FORM, "To": ""}, 400, 21604),
    "To without plus": (SIM_SEND_PATH, basic(SIM_TOKEN), {**GOOD_FORM, "To": "4530"}, 400, 21211),
    "To with letters": (SIM_SEND_PATH, basic(SIM_TOKEN), {**GOOD_FORM, "To": "+45ab"}, 400, 21211),
    "empty Body": (SIM_SEND_PATH, basic(SIM_TOKEN), {**GOOD_FORM, "Body": ""}, 400, 21602),
    "no sender": (
        SIM_SEND_PATH,
        basic(SIM_TOKEN),
        {"To": "+4530000001", "Body": "hi"},
        400,
        21603,
    ),
    "bad service SID": (
        SIM_SEND_PATH,
        basic(SIM_TOKEN),
        {"To": "+4530000001", "Body": "hi", "MessagingServiceSid": "XX1"},
        400,
        21705,
    ),
    "ValidityPeriod 0": (
        SIM_SEND_PATH,
        basic(SIM_TOKEN),
        {**GOOD_FORM, "ValidityPeriod": "0"},
        400,
        21624,
    ),
    "ValidityPeriod over 10 hours": (
        SIM_SEND_PATH,
        basic(SIM_TOKEN),
        {**GOOD_FORM, "ValidityPeriod": "36001"},
        400,
        21624,
    ),
    "bad StatusCallback": (
        SIM_SEND_PATH,
        basic(SIM_TOKEN),
        {**GOOD_FORM, "StatusCallback": "ftp://x"},
        400,
        21609,
    ),
}


async def test_request_validation() -> None:
    async with running_simulator() as url:
        answers = {
            name: await sim_request(url, path, "POST", data=form, headers=headers)
            for name, (path, headers, form, _, _) in VALIDATION_CASES.items()
        }
        good = await sim_request(
            url, SIM_SEND_PATH, "POST", data=GOOD_FORM, headers=basic(SIM_TOKEN)
        )
        _, listed = await sim_request(url, "/_sim/messages")
        _, stats = await sim_request(url, "/_sim/stats")

    for name, (_, _, _, status, code) in VALIDATION_CASES.items():
        assert answers[name][0] == status, name
        assert answers[name][1]["code"] == code, name
        assert answers[name][1]["message"], name
    status, body = good
    assert status == 201
    assert re.fullmatch("SM[0-9a-f]{32}", body["sid"])
    assert (body["status"], body["to"], body["from"], body["body"]) == (
        "queued",
        *GOOD_FORM.values(),
    )
    assert body["account_sid"] == "ACsim"
    assert body["messaging_service_sid"] is None and body["date_sent"] is None
    assert body["uri"] == f"/2010-04-01/Accounts/ACsim/Messages/{body['sid']}.json"
    assert parsedate_to_datetime(body["date_created"]).tzinfo is not None
    assert listed == [
        {"sid": body["sid"], "to": "+4530000001", "body": "hi", "validity_period": None}
    ]
    assert stats["rejected_requests"] == len(VALIDATION_CASES)


async def test_reset_clears_messages_and_stats(make_adapter) -> None:
    async with running_simulator() as url:
        await make_adapter(url).send_batch(batch(2))
        status, _ = await sim_request(url, "/_sim/reset", "POST")
        _, listed = await sim_request(url, "/_sim/messages")
        _, stats = await sim_request(url, "/_sim/stats")
    assert status == 200
    assert listed == []
    assert (stats["requests"], stats["recipients"]) == (0, 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--throttle-ratio", "2"],
        ["--invalid-ratio", "-0.1"],
        ["--latency-ms", "-1"],
        ["--port", "http"],
        ["--token", "no-colon"],
        ["--receipt-concurrency", "0"],
        ["--bogus"],
    ],
)
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        simulator_twilio.main(argv)
    assert caught.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("broadcaster simulate-gateway: error:")


async def test_serve_in_process_retries_and_counts_failed_callbacks(
    receiver: Receiver, make_adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() with ready/stop: a callback failing twice is retried; one always failing counted."""
    monkeypatch.setattr(simulator_twilio, "CALLBACK_BACKOFF_SECONDS", 0.001)
    messages = batch(3)
    ok, flaky, broken = (m.phone for m in messages)
    receiver.refuse = lambda phone, attempt: phone == broken or (phone == flaky and attempt <= 2)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    options = simulator_twilio.TwilioSimulatorOptions(receipt_delay_ms=0, seed=3)
    server = asyncio.create_task(simulator_twilio.serve(options, ready=bound.set_result, stop=stop))
    try:
        url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 5)}"
        await make_adapter(url).send_batch(messages)
        finals = await receiver.wait_for_finals(2)
        for _ in range(250):  # poll the simulator until it gave up on the broken one
            _, stats = await sim_request(url, "/_sim/stats")
            if not stats["receipts_pending"]:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(server, 5)

    assert sorted(u.raw["To"] for u in finals) == sorted([ok, flaky])
    assert receiver.attempts == {ok: 1, flaky: 3, broken: 1 + simulator_twilio.CALLBACK_RETRIES}
    assert (stats["receipts_sent"], stats["receipts_failed"]) == (2, 1)


async def test_dropped_connections_are_retryable_results(receiver: Receiver, make_adapter) -> None:
    messages = batch(3)
    async with running_simulator("--drop-ratio", "1.0") as url:
        results = await make_adapter(url).send_batch(messages)
        _, listed = await sim_request(url, "/_sim/messages")
    assert [(r.accepted, r.retryable, r.throttled) for r in results] == [(False, True, False)] * 3
    assert listed == []
