"""PostgreSQL stopped and started again in the middle of a broadcast (issue 20).

The suite's own server cannot be restarted, so these tests run a private one (pgserver.py) and
the service on it as child processes: the GatewayAPI simulator, `broadcaster api` and two
`broadcaster dispatcher`s. A broadcast to about 20,000 subscribers is queued, the server is
stopped for a few seconds (fast shutdown; immediate shutdown, a crash of the server, in the
second case) and started again. Nothing else is touched by hand. While it is away every route
that needs the database must answer 503 problem+json with Retry-After within a second and
/healthz 200; the dispatchers must say once that the database went away and once that it is
back; afterwards the broadcast must complete with nobody missed, and the alert acknowledged
before the stop must still be there.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.pgserver import PrivateServer
from tests.stack import Stack
from tests.test_receipt_writer import delivered
from tests.test_receipt_writer import seed as seed_receipts

from broadcaster import procs
from broadcaster.auth import create_api_key
from broadcaster.database import connect, create_pool
from broadcaster.dispatch.receipt_writer import ReceiptsUnavailable, ReceiptWriter
from broadcaster.migrate import apply_migrations
from broadcaster.ops import logs
from broadcaster.seed import HILLEROD, insert_subscribers, synthetic_subscribers

SUBSCRIBERS = 20_600  # about 20,000 active ones
EVERYWHERE = {"type": "Circle", "center": list(HILLEROD), "radius_m": 100_000}
SMALL = {"type": "Circle", "center": list(HILLEROD), "radius_m": 2_000}
RATE = 4_000  # messages per second at the gateway: the broadcast takes about 5 s undisturbed
MAX_BATCH = 200
CONCURRENCY = 4  # sender loops per dispatcher (batches_in_flight is 8)
OUTAGE_SECONDS = 5.0
# Loops rest this long between looks at an empty queue unless a NOTIFY wakes them: a
# dispatcher that stopped listening would sit on a new alert for this long.
POLL_INTERVAL = "30"
# A batch in hand when the server went away may have reached the gateway without its result
# being committed: it goes again. Each dispatcher holds at most one batch per sender loop
# (CONCURRENCY bulk loops and the emergency loop).
MAX_DUPLICATES = 2 * (CONCURRENCY + 1) * MAX_BATCH
NEEDS_DATABASE = ("GET /readyz", "GET alert", "POST alert", "POST cancel", "POST subscriber")
_names = itertools.count()


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


async def new_database(server: PrivateServer) -> str:
    """A migrated database on the private server (started again if a test left it stopped)."""
    if server.pid is None:
        server.start()
    name = f"restart_{next(_names)}"
    admin = await connect(server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await connect(server.url(name))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return server.url(name)


@dataclass
class Seeded:
    url: str
    key: str
    phones: set[str]


@pytest.fixture
async def seeded(private_server: PrivateServer) -> AsyncIterator[Seeded]:
    """A migrated database on the private server with SUBSCRIBERS subscribers and an API key."""
    url = await new_database(private_server)
    conn = await connect(url)
    try:
        subs, locs = synthetic_subscribers(SUBSCRIBERS, seed=20)
        await insert_subscribers(conn, subs, locs)
        key = await create_api_key(conn, "restart")
    finally:
        await conn.close()
    phones = {phone for _sid, phone, _lang, status in subs if status == "active"}
    yield Seeded(url, key, phones)


@pytest.fixture
def children(seeded: Seeded, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(seeded.url, tmp_path / "logs", tmp_path)
    try:
        yield stack
    finally:
        for child in reversed(stack.children):
            child.stop()


@dataclass
class Probe:
    """What the routes answered while the database was away."""

    answers: dict[str, list[tuple[int, str, str | None, float]]] = field(default_factory=dict)

    def add(self, route: str, response: httpx.Response, elapsed: float) -> None:
        self.answers.setdefault(route, []).append(
            (
                response.status_code,
                response.headers.get("content-type", ""),
                response.headers.get("retry-after"),
                elapsed,
            )
        )


async def probe_routes(http: httpx.AsyncClient, alert_id: int, until: float) -> Probe:
    """Call each route in turn until `until` (monotonic), timing every answer."""
    requests: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "GET /healthz": ("GET", "/healthz", None),
        "GET /readyz": ("GET", "/readyz", None),
        "GET alert": ("GET", f"/v1/alerts/{alert_id}", None),
        "POST alert": (
            "POST",
            "/v1/alerts",
            {"message": "Politiet: prøve under genstart", "area": SMALL},
        ),
        "POST cancel": ("POST", f"/v1/alerts/{alert_id}/cancel", None),
        "POST subscriber": (
            "POST",
            "/v1/subscribers",
            {"phone": "+4531000000", "locations": [{"lat": 55.93, "lon": 12.31}]},
        ),
    }
    probe = Probe()
    while time.monotonic() < until:
        for route, (method, path, body) in requests.items():
            started = time.monotonic()
            response = await http.request(method, path, json=body)
            probe.add(route, response, time.monotonic() - started)
    return probe


async def submitted(sim_url: str) -> int:
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        return int((await sim.get("/_sim/stats")).json()["recipients"])


async def wait_until(what: str, check: Any, timeout: float) -> float:
    """Poll the coroutine function `check` until it returns true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def level(line: str) -> str:
    """The level of a log line, JSON (`"level": "error"`) or text (`... ERROR logger: ...`)."""
    try:
        return str(json.loads(line)["level"])
    except (ValueError, KeyError, TypeError):
        words = line.split()
        return next((w.lower() for w in words[:4] if w in ("ERROR", "WARNING", "INFO")), "")


def log_lines(child: procs.Child) -> list[str]:
    return child.log_path.read_text(errors="replace").splitlines()


CASES = {
    # Receipts held at the simulator: the outage meets submissions only.
    "fast shutdown": ("fast", False),
    # Immediate shutdown (the server's processes end at once, crash recovery at the start),
    # while receipts pour in: those posted while the database is away are answered 503 and
    # posted again by the simulator, as GatewayAPI does.
    "immediate shutdown in a receipt storm": ("immediate", True),
}


@pytest.mark.parametrize(("mode", "storm"), CASES.values(), ids=CASES.keys())
async def test_a_broadcast_rides_out_a_database_restart(
    mode: str, storm: bool, private_server: PrivateServer, seeded: Seeded, children: Stack
) -> None:
    stack = children
    if storm:
        stack.start_simulator(
            "--latency-ms", "20", "--receipt-delay-ms", "0", "--callback-retries", "60"
        )
    else:
        stack.start_simulator("--latency-ms", "20", "--hold-receipts")
    stack.write_config(rate=RATE, max_batch=MAX_BATCH, concurrency=CONCURRENCY)
    stack.start_service(
        "api", BROADCASTER_LOG_LEVEL="info", BROADCASTER_POLL_INTERVAL=POLL_INTERVAL
    )
    api = stack.children[-1]
    dispatchers = [
        stack.start_dispatcher(name, BROADCASTER_POLL_INTERVAL=POLL_INTERVAL)
        for name in ("dispatcher-a", "dispatcher-b")
    ]
    pids = [child.pid for child in stack.children]
    auth = {"Authorization": f"Bearer {seeded.key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=auth, timeout=10) as http:
        created = await http.post(
            "/v1/alerts", json={"message": "Politiet: test under genstart", "area": EVERYWHERE}
        )
        assert created.status_code == 202, created.text
        alert_id = created.json()["id"]
        await wait_until(
            "a fifth submitted",
            lambda: _at_least(stack.sim_url, len(seeded.phones) // 5),
            timeout=30,
        )

        private_server.stop(mode)
        probe = await probe_routes(http, alert_id, until=time.monotonic() + OUTAGE_SECONDS)
        sent_while_down = await submitted(stack.sim_url)
        private_server.start()

        back = await wait_until("ready again", lambda: _ready(http), timeout=15)
        status = await _wait_completed(http, alert_id, timeout=60)

        # Both dispatchers listen for wake-ups again (they try with the backoff of the other
        # loops), so a new alert goes out at once: none waits for its 30 s poll.
        await wait_until("both dispatchers listen", lambda: _listening(seeded.url, 2), 10)
        small = await http.post("/v1/alerts", json={"message": "Politiet: efter", "area": SMALL})
        assert small.status_code == 202, small.text
        small_status = await _wait_completed(http, small.json()["id"], timeout=10)
        if storm:
            # Every receipt is in once the simulator has none left to post.
            await wait_until("receipts posted", lambda: _receipts_done(stack.sim_url), 60)
            status = (await http.get(f"/v1/alerts/{alert_id}")).json()
            async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
                receipts = (await sim.get("/_sim/stats")).json()

    # While the database was away: 503 problem+json with Retry-After, within a second.
    assert probe.answers.keys() == {"GET /healthz", *NEEDS_DATABASE}
    assert {a[0] for a in probe.answers["GET /healthz"]} == {200}
    for route in NEEDS_DATABASE:
        answers = probe.answers[route]
        assert {(s, c, r is not None) for s, c, r, _ in answers} == {
            (503, "application/problem+json", True)
        }, (route, answers)
        slowest = max(elapsed for *_, elapsed in answers)
        assert slowest < 1.0, (route, slowest)
    assert len(probe.answers["GET alert"]) >= 5

    # The broadcast completed: everyone in the zone got it, duplicates only from the batches
    # in hand when the server went away.
    async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
        received = Counter("+" + str(m["msisdn"]) for m in (await sim.get("/_sim/messages")).json())
    assert status["status"] == "completed"
    assert status["recipients"] == len(seeded.phones)
    assert seeded.phones <= set(received)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= MAX_DUPLICATES
    assert sent_while_down < len(seeded.phones)  # the outage really was mid-broadcast
    assert small_status["recipients"] > 0
    assert back < 10
    if storm:
        # Receipts refused while the database was away came again and were stored: none lost.
        assert receipts["receipt_retries"] > 0
        assert receipts["receipts_failed"] == 0
        assert status["deliveries"]["delivered"] == status["recipients"], status

    # Nothing was restarted, and each process reported the outage once, without tracebacks.
    assert [child.pid for child in stack.children] == pids
    assert all(child.process.poll() is None for child in stack.children)
    for child in [api, *dispatchers]:
        assert_outage_reported_once(child)


def assert_outage_reported_once(child: procs.Child) -> None:
    """One warning when the database went away, one line when it came back, no tracebacks and
    no errors (asyncpg's pool logs a traceback for each attempt to reconnect; the loops once
    logged one per failed claim)."""
    lines = log_lines(child)
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    assert [line for line in lines if level(line) == "error"] == [], text
    went = [line for line in lines if "database unavailable" in line]
    came = [line for line in lines if "database available again" in line]
    assert len(went) == 1 and level(went[0]) == "warning", text
    assert len(came) == 1, text


async def _at_least(sim_url: str, n: int) -> bool:
    return await submitted(sim_url) >= n


async def _receipts_done(sim_url: str) -> bool:
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        return (await sim.get("/_sim/stats")).json()["receipts_pending"] == 0


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _wait_completed(http: httpx.AsyncClient, alert_id: int, timeout: float) -> Any:
    """The alert's status once it is completed (nothing left to submit)."""
    found: dict[str, Any] = {}

    async def completed() -> bool:
        response = await http.get(f"/v1/alerts/{alert_id}")
        if response.status_code != 200:
            return False
        found.update(response.json())
        return bool(found["status"] == "completed")

    await wait_until(f"alert {alert_id} completed", completed, timeout)
    return found


async def _listening(url: str, n: int) -> bool:
    """Whether `n` connections of the database LISTEN (their last statement was the LISTEN)."""
    conn = await connect(url)
    try:
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
    finally:
        await conn.close()
    return bool(listening == n)


async def test_the_receipt_writer_reports_an_outage_once_and_recovers(
    private_server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    """In one process: the first receipts after a restart are committed although the writer's
    connection died with the server; receipts written one flush after another while the server
    is stopped are refused (the sender tries again), with one warning for the outage and none
    per flush."""
    url = await new_database(private_server)
    pool = await create_pool(url, min_size=2, max_size=4)
    writer = ReceiptWriter(pool, acquire_timeout=2.0)
    quiet = logs.QuietPoolFloor()
    logging.getLogger("asyncpg.pool").addFilter(quiet)
    caplog.set_level(logging.INFO)
    try:
        async with pool.acquire() as conn:
            await seed_receipts(conn, 30)
        assert await writer.write("gw", [delivered(0)]) == 1  # it holds a connection now
        private_server.stop("fast")
        private_server.start()
        # That connection died with the server; the database is back: no 503 for this.
        assert await writer.write("gw", [delivered(25)]) == 1
        private_server.stop("fast")
        for i in range(1, 11):
            with pytest.raises(ReceiptsUnavailable):
                await writer.write("gw", [delivered(i)])
        private_server.start()
        assert await writer.write("gw", [delivered(20)]) == 1
        assert await writer.write("gw", [delivered(21)]) == 1
        delivered_now = await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
    finally:
        logging.getLogger("asyncpg.pool").removeFilter(quiet)
        await writer.close()
        await asyncio.wait_for(pool.close(), 10)
    assert delivered_now == 4
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], records
    assert len([m for _, m in records if "database unavailable" in m]) == 1, records
    assert len([m for _, m in records if "database available again" in m]) == 1, records
