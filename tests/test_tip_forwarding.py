"""Tip forwarding through a real dispatcher (its citizens' loop) and PostgreSQL to a real HTTP
receiver on 127.0.0.1 that fails for a while: first it answers 500, then it is down altogether
(stopped, connections refused), then it comes back on the same port. Every tip arrives, signed
(X-Broadcaster-Signature: sha256=<hex HMAC-SHA256 of the body>), and none is lost or left in
the outbox."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time

import asyncpg
import httpx
from aiohttp import web
from tests.test_failover import Running, gateway, start_sim
from tests.test_fanout import add_subscribers
from tests.test_inbound import send, settings_for
from tests.test_tips import WEBHOOK_SECRET, phone_of, sent_alert

from broadcaster import procs
from broadcaster.api.app import create_app
from broadcaster.ingest.alerts import alert_status
from broadcaster.webhooks import retry_delay, signature


class Receiver:
    """An investigating system's endpoint: answers 500 to the first `fail_first` posts, records
    the others; `stop()` takes it off the network, `start()` puts it back on the same port."""

    def __init__(self, fail_first: int) -> None:
        self.port = procs.free_port()
        self.fail_first = fail_first
        self.posts: list[tuple[bytes, dict[str, str]]] = []
        self.refused = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            self.refused += 1
            return web.Response(status=500, text="case system busy")
        self.posts.append((body, dict(request.headers)))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/tips", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tips"


async def test_tips_are_forwarded_signed_with_retries_while_the_receiver_fails(
    db_url: str, pool: asyncpg.Pool
) -> None:
    receiver = Receiver(fail_first=3)
    await receiver.start()
    sim, port = await start_sim()
    settings = settings_for(
        db_url,
        webhook_secret=WEBHOOK_SECRET,
        tip_retry_base_seconds=0.1,
        tip_retry_max_seconds=0.5,
        poll_interval=0.05,
    )
    dispatcher_settings = settings.model_copy(update={"gateways": [gateway("primary", port)]})
    async with pool.acquire() as conn:
        ids = await add_subscribers(conn, [[(12.05, 55.05)] for _ in range(3)])
        alert = await sent_alert(conn, ids, hours_ago=1, tip_webhook=receiver.url)
        phones = [await phone_of(conn, s) for s in ids]
    app = create_app(settings, db_url)
    running = Running(dispatcher_settings, pool, db_url)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await send(client, phones[0], "Blå varevogn, 9.40")).status_code == 200
                # The receiver answers 500 for a while ...
                deadline = time.monotonic() + 20
                while receiver.fail_first:
                    assert time.monotonic() < deadline, "the tip was not tried again"
                    await asyncio.sleep(0.02)
                # ... then is down altogether while more tips come in.
                await receiver.stop()
                for phone, words in [(phones[1], "Han løb mod skoven"), (phones[2], "Tip 3")]:
                    assert (await send(client, phone, words)).status_code == 200
                await asyncio.sleep(1.5)
                down = await pool.fetch("SELECT attempts, last_error FROM webhook_outbox")
                assert len(down) == 3 and all(r["attempts"] >= 1 for r in down), down
                assert receiver.posts == []
                await receiver.start()
                deadline = time.monotonic() + 20
                while len(receiver.posts) < 3:
                    assert time.monotonic() < deadline, f"{len(receiver.posts)} of 3 tips arrived"
                    await asyncio.sleep(0.05)
    finally:
        await running.close()
        await sim.close()
        await receiver.stop()
    assert receiver.refused == 3
    bodies = [json.loads(body) for body, _ in receiver.posts]
    assert sorted(b["text"] for b in bodies) == [
        "Blå varevogn, 9.40",
        "Han løb mod skoven",
        "Tip 3",
    ]
    for body, headers in receiver.posts:
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Broadcaster-Signature"] == expected == signature(WEBHOOK_SECRET, body)
        assert headers["Content-Type"] == "application/json"
        tip = json.loads(body)
        assert tip["alert_id"] == alert and tip["sender"] in phones
        assert set(tip) == {
            "tip_id",
            "alert_id",
            "alert_reference",
            "received_at",
            "text",
            "sender",
        }
    # Nothing is left in the outbox; every tip is stamped as forwarded, once.
    assert await pool.fetchval("SELECT count(*) FROM webhook_outbox") == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM inbound_messages WHERE forwarded_at IS NOT NULL")
        == 3
    )
    assert len({b["tip_id"] for b in bodies}) == 3
    status = await alert_status(pool, alert)
    assert status is not None and status["tips"] == {"received": 3, "forwarded": 3}


def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    delays = [retry_delay(n, 2.0, 900.0) for n in range(1, 12)]
    assert 2.0 <= delays[0] <= 2.2 and 4.0 <= delays[1] <= 4.4 and 8.0 <= delays[2] <= 8.8
    assert all(later >= earlier * 0.9 for earlier, later in itertools.pairwise(delays))
    assert 900.0 <= max(delays) <= 990.0
