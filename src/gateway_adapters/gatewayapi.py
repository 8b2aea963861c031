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
    InboundMessage,
    OptionTypes,
    OutboundMessage,
    ReceiptSink,
    ReceiptUpdate,
    SendResult,
)
from gateway_adapters.gatewayapi_callbacks import (
    MIN_SECRET_BYTES,
    _hs256_key,
    _parse_callback,
    _parse_inbound,
)
from gateway_adapters.gatewayapi_errors import Recipient, RecipientRefused, error_for_answer
from gateway_adapters.gsm7 import is_gsm7

log = logging.getLogger(__name__)

SEND_PATH = "/rest/mtsms"

# Our alert priority -> GatewayAPI's message priority, and the message class each needs by
# default: GatewayAPI's URGENT and VERY_URGENT "normally require the use of premium message
# class" and are refused (422, 0x0311 "Priority not available") in the standard class. Both are
# per-gateway options (`emergency_priority`, `emergency_class`, ...).
PRIORITY_MAP = {"emergency": "VERY_URGENT", "high": "URGENT", "normal": "NORMAL"}
CLASS_MAP = {"emergency": "premium", "high": "premium", "normal": "standard"}
PRIORITIES = ("BULK", "NORMAL", "URGENT", "VERY_URGENT")
CLASSES = ("standard", "premium", "secret")
# GatewayAPI's limits: recipients in one message object, open connections per IP address.
MAX_RECIPIENTS_PER_MESSAGE = 10_000
CONNECTIONS_PER_IP = 40
# GatewayAPI wants a validity period in seconds; an alert about to expire still gets a minute so
# the message is not refused outright (the dispatcher never submits after expiry).
MIN_VALIDITY_SECONDS = 60


class _Failed(Exception):
    """A request failed with `error` after the results in `done` (batch index, result)."""

    def __init__(self, error: GatewayError, done: list[tuple[int, SendResult]]) -> None:
        super().__init__(str(error))
        self.error, self.done = error, done


def msisdn_for_phone(phone: str) -> int | None:
    """'+4520123456' -> 4520123456; None when the number is not E.164 digits."""
    digits = phone[1:] if phone.startswith("+") else phone
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return int(digits)


class GatewayApiAdapter:
    """`GatewayAdapter` for GatewayAPI's REST API."""

    type: ClassVar[str] = "gatewayapi"
    # GatewayAPI takes up to 10,000 recipients per message object (the adapter splits larger
    # batches) and allows 40 open connections per IP address.
    limits: ClassVar[AdapterLimits] = AdapterLimits(
        MAX_RECIPIENTS_PER_MESSAGE, CONNECTIONS_PER_IP, None
    )
    # GatewayAPI's priority and message class for each of our priorities.
    options: ClassVar[OptionTypes] = {
        f"{ours}_{what}": str for ours in PRIORITY_MAP for what in ("priority", "class")
    }
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
        self._priority = _choices(config, "priority", PRIORITY_MAP, PRIORITIES)
        self._class = _choices(config, "class", CLASS_MAP, CLASSES)

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
            # At most GatewayAPI's 40 connections per IP address from this process (see the
            # README for several dispatchers behind one address).
            connections = min(CONNECTIONS_PER_IP, max(4, 2 * self.config.concurrency))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=connections, ttl_dns_cache=300),
                timeout=self._timeout,
            )
        return self._session

    # -- sending ---------------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One message object per (text, alert) group and chunk of at most max_batch (and
        GatewayAPI's 10,000) recipients; objects are packed into requests of at most max_batch
        recipients in all, one message class per request (GatewayAPI takes a list of messages
        in one request and answers one id per message object). One result per message, in
        order.

        A request GatewayAPI refuses because of one recipient (blacklisted, country or operator
        not authorised) fails that recipient alone: the others are sent again without it (a
        resubmission of messages the gateway never took, not a retry). Raises the first other
        failed request's `GatewayError`, with the results the gateway gave before it in
        `partial_results`.
        """
        results: list[SendResult | None] = [None] * len(messages)
        valid: list[Recipient] = []
        for index, message in enumerate(messages):
            msisdn = msisdn_for_phone(message.phone)
            if msisdn is None:
                # A malformed number is that recipient's permanent problem, not the batch's.
                results[index] = SendResult(message.delivery_id, False, error="invalid msisdn")
                continue
            valid.append((index, message, msisdn))

        requests = self._requests(valid)
        outcomes = await asyncio.gather(
            *(self._submit(req) for req in requests),
            return_exceptions=True,
        )
        failure: GatewayError | None = None
        for outcome in outcomes:
            if isinstance(outcome, _Failed):
                failure = failure or outcome.error
                given = outcome.done
            elif isinstance(outcome, BaseException):
                raise outcome  # a bug or cancellation, not a gateway answer
            else:
                given = outcome
            for index, result in given:
                results[index] = result

        ordered = [r for r in results if r is not None]
        if failure is not None:
            failure.partial_results = tuple(ordered)
            raise failure
        return ordered

    def _requests(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        """The recipients split into requests: at most max_batch each, one class each."""
        by_class: dict[str, list[Recipient]] = {}
        for recipient in recipients:
            by_class.setdefault(self._class[recipient[1].priority], []).append(recipient)
        size = self.max_batch
        return [
            members[start : start + size]
            for members in by_class.values()
            for start in range(0, len(members), size)
        ]

    def _objects(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        """One message object per (text, alert) and chunk of at most 10,000 recipients."""
        groups: dict[tuple[str, int], list[Recipient]] = {}
        for recipient in recipients:
            message = recipient[1]
            groups.setdefault((message.text, message.alert_id), []).append(recipient)
        size = min(self.max_batch, MAX_RECIPIENTS_PER_MESSAGE)
        return [
            members[start : start + size]
            for members in groups.values()
            for start in range(0, len(members), size)
        ]

    async def _submit(self, recipients: list[Recipient]) -> list[tuple[int, SendResult]]:
        """Send one request's recipients; (batch index, result) for each. A request refused
        for one recipient is sent again without it; when the refusal does not say which
        recipient (an operator), the request is halved until it does. Another error is raised
        with the results given so far in `partial_results`."""
        done: list[tuple[int, SendResult]] = []
        pending = [recipients]
        while pending:
            part = pending.pop()
            objects = self._objects(part)
            try:
                ids = await self._send_request(objects)
            except RecipientRefused as refusal:
                named = refusal.named(part) or (part if len(part) == 1 else [])
                if not named:
                    half = len(part) // 2
                    pending += [part[half:], part[:half]]
                    continue
                error = str(refusal)
                done += [
                    (i, SendResult(m.delivery_id, False, error=error, retryable=refusal.temporary))
                    for i, m, _ in named
                ]
                refused = {i for i, _, _ in named}
                rest = [r for r in part if r[0] not in refused]
                if rest:
                    pending.append(rest)
                log.info(
                    "gatewayapi refused %d recipient(s); sending the other %d again",
                    len(named),
                    len(rest),
                    extra={"gateway": self.config.name, "code": refusal.error.code},
                )
                continue
            except GatewayError as exc:
                raise _Failed(exc, done) from exc
            for obj, message_id in zip(objects, ids, strict=True):
                done += [(i, SendResult(m.delivery_id, True, message_id)) for i, m, _ in obj]
        return done

    def _message_object(self, chunk: Sequence[Recipient]) -> dict[str, Any]:
        """One GatewayAPI message: one text to many recipients, with the alert's urgency (and
        the message class it needs) and expiry, in UCS-2 when the text does not fit the GSM
        7-bit alphabet."""
        first = chunk[0][1]
        body: dict[str, Any] = {
            "class": self._class[first.priority],
            "sender": self.config.sender,
            "message": first.text,
            "recipients": [{"msisdn": msisdn} for _, _, msisdn in chunk],
            "callback_url": self.callback_url,
            "userref": str(first.alert_id),
            "priority": self._priority[first.priority],
        }
        if not is_gsm7(first.text):
            body["encoding"] = "UCS2"
        if first.expires_at is not None:
            remaining = (first.expires_at - datetime.now(UTC)).total_seconds()
            body["validity_period"] = max(MIN_VALIDITY_SECONDS, int(remaining))
        return body

    async def _send_request(self, objects: Sequence[Sequence[Recipient]]) -> list[str]:
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
                    raise error_for_answer(resp.status, raw, resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Only a connection never made is sure to have carried nothing.
            unreached = isinstance(exc, aiohttp.ClientConnectorError)
            raise GatewayUnavailable(
                f"{type(exc).__name__}: {exc}", maybe_taken=not unreached
            ) from exc
        log.debug("gatewayapi accepted %d message objects", len(built))
        return _message_ids(raw, len(built))

    # -- callbacks -------------------------------------------------------------------------------

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[ReceiptUpdate]:
        """Verify one JWT-signed receipt and translate it; raise `CallbackRejected` if it fails."""
        return [_parse_callback(self.config.webhook_secret, headers, body, self._hs256_key)]

    def parse_inbound(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[InboundMessage]:
        """Verify one JWT-signed MO SMS (signed with the webhook's token, as receipts are) and
        translate it; raise `CallbackRejected` if it fails."""
        return [_parse_inbound(self.config.webhook_secret, headers, body, self._hs256_key)]

    def inbound_reply(self, stored: int) -> tuple[str, bytes]:
        """GatewayAPI takes any 2xx."""
        return "application/json", b'{"received":%d}' % stored


def _choices(
    config: GatewayConfig, what: str, defaults: Mapping[str, str], allowed: Sequence[str]
) -> dict[str, str]:
    """Our priority -> GatewayAPI's value of `what` (priority or class): the defaults, with the
    gateway's options ('emergency_class = "premium"') over them; ValueError naming the option
    when a value is not one GatewayAPI knows."""
    chosen = {}
    for ours, default in defaults.items():
        key = f"{ours}_{what}"
        value = str(config.extra.get(key, default))
        if value not in allowed:
            raise ValueError(
                f"gateway {config.name!r}: {key} must be one of {', '.join(allowed)}, not {value!r}"
            )
        chosen[ours] = value
    return chosen


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
