"""Twilio's answers to a Messages request, mapped to our error taxonomy: one table of the error
codes that mean something other than "this one message failed for good", and `result_for` that
reads one answer.

The codes (https://www.twilio.com/docs/api/errors):
- the sender is wrong (every message would fail alike, so the batch fails over to the next
  gateway: `GatewayMisconfigured`): 21212 invalid From, 21601 From is not an SMS-capable Twilio
  number, 21603 From (or MessagingServiceSid) missing, 21606 From cannot send to this
  destination, 21659 From is not a Twilio number or short code of this country, 21701 the
  Messaging Service does not exist, 21705 the Messaging Service SID is invalid;
- throttling (no attempt counted, the gateway paused and slowed down): 20429 too many requests,
  21611 the sender's queue is full (more than 10 hours of messages queued on it);
- the recipient answered STOP to this sender (21610): the message fails and the subscriber is
  opted out;
- any other 4xx code (21211 invalid To, 21408 region not enabled, 21612 unreachable, 21614 not a
  mobile number, ...) fails that one message for good.
"""

from __future__ import annotations

import json
from typing import Any

from gateway_adapters.base import (
    GatewayMisconfigured,
    GatewayThrottled,
    GatewayUnavailable,
    SendResult,
    error_for_status,
    parse_retry_after,
)

THROTTLE_CODE = 20429  # "Too Many Requests", sometimes with a status other than 429
QUEUE_FULL_CODE = 21611
OPT_OUT_CODE = 21610
INVALID_VALIDITY_CODE = 21624
# Submit-time errors about our sender or Messaging Service.
SENDER_CODES = frozenset({21212, 21601, 21603, 21606, 21659, 21701, 21705})
THROTTLE_CODES = frozenset({THROTTLE_CODE, QUEUE_FULL_CODE})
# A full sender queue drains at the sender's rate: come back after this long unless Twilio says
# otherwise (other gateways take the traffic meanwhile).
QUEUE_FULL_RETRY_AFTER = 10.0


def result_for(delivery_id: int, status: int, raw: bytes, retry_after: str | None) -> SendResult:
    """Map one HTTP answer of the Messages resource to a result (or raise when misconfigured)."""
    data = _json_object(raw)
    if 200 <= status < 300:
        sid = data.get("sid")
        if isinstance(sid, str) and sid:
            return SendResult(delivery_id, True, gateway_message_id=sid)
        # Twilio may or may not have taken it; treat it like a lost answer.
        return SendResult(
            delivery_id, False, error=f"unreadable 2xx answer: {raw[:200]!r}", retryable=True
        )

    code = _code(data.get("code"))
    text = raw.decode("utf-8", "replace")
    error = error_for_status(status, text, retry_after)
    described = _describe(code, data.get("message")) or str(error)
    if isinstance(error, GatewayMisconfigured):
        raise error
    if code in SENDER_CODES:
        # Our From / Messaging Service is wrong: every message would fail, so it is the
        # gateway's configuration, not this recipient.
        raise GatewayMisconfigured(described)
    if isinstance(error, GatewayThrottled) or code in THROTTLE_CODES:
        wait = parse_retry_after(retry_after)
        if wait is None and code == QUEUE_FULL_CODE:
            wait = QUEUE_FULL_RETRY_AFTER
        return SendResult(
            delivery_id, False, error=described, retryable=True, retry_after=wait, throttled=True
        )
    if code == OPT_OUT_CODE:
        return SendResult(delivery_id, False, error=described, opted_out=True)
    if isinstance(error, GatewayUnavailable):
        return SendResult(delivery_id, False, error=described, retryable=True)
    # Any other 4xx is about this request, i.e. this one message: submit-time codes 21xxx mean a
    # bad or unreachable To, STOP, region not enabled, ... The message fails for good; the batch
    # goes on.
    return SendResult(delivery_id, False, error=described)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _describe(code: int | None, message: Any) -> str | None:
    """'twilio 21211: <message>' for an answer carrying a Twilio error code."""
    if code is None:
        return None
    text = str(message)[:200] if message not in (None, "") else "error"
    return f"twilio {code}: {text}"
