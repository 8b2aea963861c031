"""GatewayAPI (gatewayapi.com) adapter: REST submission and JWT-signed delivery receipts.

One request carries one text for many recipients and gets ONE message id back, so receipts are
matched by (id, phone). Receipts arrive one per recipient, signed with HS256 by the webhook secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp

from gateway_adapters.base import (
    AdapterLimits,
    GatewayConfig,
    GatewayError,
    GatewayUnavailable,
    OptionTypes,
    OutboundMessage,
    ReceiptSink,
    ReceiptUpdate,
    SendResult,
    error_for_status,
    new_http_session,
)
from gateway_adapters.gatewayapi_callbacks import MIN_SECRET_BYTES, _hs256_key, _parse_callback
from gateway_adapters.gsm7 import is_gsm7

log = logging.getLogger(__name__)

SEND_PATH = "/rest/mtsms"

# Our alert priority -> GatewayAPI's message priority.
PRIORITY_MAP = {"emergency": "VERY_URGENT", "high": "URGENT", "normal": "NORMAL"}
# GatewayAPI wants a validity period in seconds; an alert about to expire still gets a minute so
# the message is not refused outright (the dispatcher never submits after expiry).
MIN_VALIDITY_SECONDS = 60


# One recipient of a batch: its index in the batch, its message, its MSISDN.
_Recipient = tuple[int, OutboundMessage, int]


def msisdn_for_phone(phone: str) -> int | None:
    """'+4520123456' -> 4520123456; None when the number is not E.164 digits."""
    digits = phone[1:] if phone.startswith("+") else phone
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return int(digits)


class GatewayApiAdapter:
    """`GatewayAdapter` for GatewayAPI's REST API."""

    type: ClassVar[str] = "gatewayapi"
    # GatewayAPI takes many recipients per request and allows 40 open connections per IP.
    limits: ClassVar[AdapterLimits] = AdapterLimits(None, 40, None)
    options: ClassVar[OptionTypes] = {}
    # parse_callback ignores the URL (the JWT signs the receipt, not the URL); the API then
    # need not build it for every receipt.
    callback_uses_url: ClassVar[bool] = False

    def __init__(
        self,
        config: GatewayConfig,
        callback_url: str,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.config = config
        self.callback_url = callback_url
        # Created lazily, so an adapter can be built outside a running event loop.
        self._session = session
        self._own_session = session is None
        self._url = config.base_url.rstrip("/") + SEND_PATH
        # Per request as well, because a shared session may have been built with another timeout.
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        if 0 < len(config.webhook_secret.encode()) < MIN_SECRET_BYTES:
            log.warning(
                "gateway %s: webhook secret is shorter than %d bytes", config.name, MIN_SECRET_BYTES
            )
        self._hs256_key = _hs256_key(config.webhook_secret)

    @property
    def max_batch(self) -> int:
        return max(1, self.config.max_batch)

    async def start(self, on_receipts: ReceiptSink) -> None:
        """Nothing to open: receipts arrive as HTTP callbacks."""

    async def close(self) -> None:
        """Close the HTTP session if this adapter created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_http_session(self.config)
        return self._session

    # -- sending ---------------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One message object per (text, alert) group and chunk of at most max_batch recipients;
        objects are packed into requests of at most max_batch recipients in all (GatewayAPI takes
        a list of messages in one request and answers one id per message object). One result
        per message, in order.

        Raises the first failed request's `GatewayError` with the results of the requests that
        were accepted in `partial_results`.
        """
        results: list[SendResult | None] = [None] * len(messages)
        groups: dict[tuple[str, int], list[_Recipient]] = {}
        for index, message in enumerate(messages):
            msisdn = msisdn_for_phone(message.phone)
            if msisdn is None:
                # A malformed number is that recipient's permanent problem, not the batch's.
                results[index] = SendResult(message.delivery_id, False, error="invalid msisdn")
                continue
            groups.setdefault((message.text, message.alert_id), []).append((index, message, msisdn))

        objects = [
            members[start : start + self.max_batch]
            for members in groups.values()
            for start in range(0, len(members), self.max_batch)
        ]
        requests: list[list[list[_Recipient]]] = []
        size = 0
        for obj in objects:
            if not requests or size + len(obj) > self.max_batch:
                requests.append([])
                size = 0
            requests[-1].append(obj)
            size += len(obj)
        outcomes = await asyncio.gather(
            *(self._send_request(req) for req in requests),
            return_exceptions=True,
        )

        failure: GatewayError | None = None
        for req, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, GatewayError):
                failure = failure or outcome
                continue
            if isinstance(outcome, BaseException):
                raise outcome  # a bug or cancellation, not a gateway answer
            for obj, message_id in zip(req, outcome, strict=True):
                for index, message, _ in obj:
                    results[index] = SendResult(message.delivery_id, True, message_id)

        ordered = [r for r in results if r is not None]
        if failure is not None:
            failure.partial_results = tuple(r for r in ordered if r.accepted)
            raise failure
        return ordered

    def _message_object(self, chunk: Sequence[_Recipient]) -> dict[str, Any]:
        """One GatewayAPI message: one text to many recipients, with the alert's urgency and
        expiry, in UCS-2 when the text does not fit the GSM 7-bit alphabet."""
        first = chunk[0][1]
        body: dict[str, Any] = {
            "sender": self.config.sender,
            "message": first.text,
            "recipients": [{"msisdn": msisdn} for _, _, msisdn in chunk],
            "callback_url": self.callback_url,
            "userref": str(first.alert_id),
            "priority": PRIORITY_MAP.get(first.priority, "NORMAL"),
        }
        if not is_gsm7(first.text):
            body["encoding"] = "UCS2"
        if first.expires_at is not None:
            remaining = (first.expires_at - datetime.now(UTC)).total_seconds()
            body["validity_period"] = max(MIN_VALIDITY_SECONDS, int(remaining))
        return body

    async def _send_request(self, objects: Sequence[Sequence[_Recipient]]) -> list[str]:
        """POST one request; return GatewayAPI's message id per message object."""
        built = [self._message_object(obj) for obj in objects]
        body: Any = built[0] if len(built) == 1 else built
        headers = {"Authorization": f"Token {self.config.token}"}
        try:
            async with self._http().post(
                self._url, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                if not 200 <= resp.status < 300:
                    text = raw.decode("utf-8", "replace")
                    raise error_for_status(resp.status, text, resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from exc
        log.debug("gatewayapi accepted %d message objects", len(built))
        return _message_ids(raw, len(built))

    # -- callbacks -------------------------------------------------------------------------------

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[ReceiptUpdate]:
        """Verify one JWT-signed receipt and translate it; raise `CallbackRejected` if it fails."""
        return [_parse_callback(self.config.webhook_secret, headers, body, self._hs256_key)]


def _message_ids(raw: bytes, expected: int) -> list[str]:
    """The ids of a 2xx answer `{"ids": [12345, ...], ...}`, one per message object."""
    try:
        ids = json.loads(raw)["ids"]
        if not isinstance(ids, list) or len(ids) != expected:
            raise ValueError(f"expected {expected} ids, got {ids!r}")
        for one in ids:
            if isinstance(one, bool) or not isinstance(one, int | str) or one == "":
                raise ValueError(f"bad id {one!r}")
        return [str(one) for one in ids]
    except (ValueError, LookupError, TypeError) as exc:
        # The gateway may or may not have taken the messages; treat it like a lost answer.
        raise GatewayUnavailable(f"unreadable 2xx answer: {raw[:200]!r}") from exc
