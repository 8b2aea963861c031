"""Tips: the texts citizens send back after an alert ("have you seen ...?"), as investigators read
them.

A tip is an inbound message that is not a keyword, linked to the most recent alert its number
got within the tip window (inbound.py). `GET /v1/alerts/{id}/tips` lists an alert's tips newest
first, a page at a time (api/pagination.py).

Investigators see the sender masked (`+45 12 ** ** 78`: the country code, the first two and
the last two digits), never the whole number: a `tips:read` key may sit in a case-handling
dashboard, and the text is what the tip is. Where an investigation needs to call a tipster
back, the alert's `tip_webhook` carries the whole number to the investigating system, signed,
and only there (webhooks.py).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import phonenumbers

ALERT_EXISTS = "SELECT EXISTS (SELECT 1 FROM alerts WHERE id = $1 AND kind = 'alert')"

# Through inbound_messages_tips (alert_id, id DESC) WHERE kind = 'tip'.
PAGE = """
SELECT id, received_at, text, phone FROM inbound_messages
WHERE alert_id = $1 AND kind = 'tip' AND id < $2
ORDER BY id DESC
LIMIT $3
"""


def mask(phone: str | None) -> str | None:
    """`+4512345678` -> `+45 12 ** ** 78`: country code, then the national number in pairs,
    all but the first and the last pair starred. None (a number erased) stays None."""
    if not phone:
        return None
    try:
        number = phonenumbers.parse(phone, None)
        country, national = str(number.country_code), str(number.national_number)
    except phonenumbers.NumberParseException:
        country, national = "", phone.lstrip("+")
    pairs = [national[i : i + 2] for i in range(0, len(national), 2)]
    if len(pairs) > 2:
        pairs = [pairs[0], *("*" * len(p) for p in pairs[1:-1]), pairs[-1]]
    else:
        pairs = ["*" * len(p) for p in pairs[:-1]] + pairs[-1:]
    return " ".join([f"+{country}" if country else "+", *pairs])


async def alert_tips(
    conn: asyncpg.Connection, alert_id: int, before: int, limit: int
) -> list[dict[str, Any]] | None:
    """An alert's tips with ids below `before`, newest first, at most `limit`; None when there
    is no such alert."""
    if not await conn.fetchval(ALERT_EXISTS, alert_id):
        return None
    rows = await conn.fetch(PAGE, alert_id, before, limit)
    return [
        {
            "id": r["id"],
            "received_at": r["received_at"].isoformat(),
            "text": r["text"],
            "sender": mask(r["phone"]),
        }
        for r in rows
    ]
