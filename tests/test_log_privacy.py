"""No phone number and no message text in the service's logs at info level: a whole broadcast
with receipts, a tip, a STOP, a sign-up and a wrong confirmation code run through `broadcaster
serve` logging at info, and every line the service wrote is searched for the numbers and texts."""

from __future__ import annotations

import re

import asyncpg
import httpx
from tests.stack import Stack
from tests.test_failover import wait_for
from tests.test_inbound_e2e import inbound, seed

from broadcaster.auth import create_api_key

ALERT_TEXT = "Vidner søges: rød varevogn XQ47119 ved stationen"
TIP_TEXT = "Jeg så varevognen ved ZEBRAKIOSKEN kl 14"
NEW_PHONE = "+4522334455"
DONE = "SELECT count(*) = 0 FROM deliveries WHERE status IN ('queued', 'sending')"
TIPS = "SELECT count(*) = 2 FROM inbound_messages WHERE kind IN ('tip', 'stop')"


def spellings(phone: str) -> list[str]:
    """The ways a log line could carry a Danish number: +45..., 45..., the 8 national digits."""
    national = phone.removeprefix("+45")
    return [phone, "45" + national, national]


async def test_a_whole_broadcast_logs_no_number_and_no_text_at_info(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    phones = await seed(pool, 40)
    async with pool.acquire() as conn:
        key = await create_api_key(conn, "privacy")
    stack.start_simulator(
        "--inbound-url", f"{stack.api_url}/v1/inbound/primary", "--receipt-delay-ms", "20"
    )
    stack.write_config(rate=2000, max_batch=10)
    stack.start_service("serve", BROADCASTER_LOG_LEVEL="info")
    auth = {"Authorization": f"Bearer {key}"}
    area = {
        "type": "Polygon",
        "coordinates": [[[12.0, 55.0], [12.4, 55.0], [12.4, 55.4], [12.0, 55.4], [12.0, 55.0]]],
    }
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
        r = await http.post("/v1/alerts", headers=auth, json={"message": ALERT_TEXT, "area": area})
        assert r.status_code == 202, r.text
        await wait_for(pool, DONE)
        await inbound(stack.sim_url, phones[3], TIP_TEXT)
        await inbound(stack.sim_url, phones[4], "STOP")
        await wait_for(pool, TIPS)
        body = {"phone": NEW_PHONE, "locations": [{"postal_code": "3400"}]}
        assert (await http.post("/v1/signups", headers=auth, json=body)).status_code == 202
        wrong = {"phone": NEW_PHONE, "code": "000000"}
        assert (await http.post("/v1/signups/confirm", headers=auth, json=wrong)).status_code in (
            400,
            422,
        )
        await wait_for(pool, DONE)

    # The gateway simulator's log is the provider's side, not ours.
    logs = {
        p.name: p.read_text(errors="replace")
        for p in stack.log_dir.glob("*.log")
        if p.name != "simulator.log"
    }
    text = "\n".join(logs.values())
    assert re.search(r"\bINFO\b|\"level\": ?\"info\"", text, re.IGNORECASE), logs.keys()
    assert "dispatcher started" in text  # the service did log at info level
    for phone in [*phones, NEW_PHONE]:
        for spelling in spellings(phone):
            assert spelling not in text, f"{spelling} found in the logs"
    for words in ("XQ47119", "varevogn", "ZEBRAKIOSKEN"):
        assert words not in text, f"message text {words!r} found in the logs"
