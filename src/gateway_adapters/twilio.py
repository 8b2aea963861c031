"""Twilio Programmable Messaging adapter: one REST request per message, signed status callbacks.

Twilio takes one recipient per request, so a batch is sent as concurrent requests (at most
`config.concurrency` in flight per adapter) and every message gets Twilio's own message SID.
Status callbacks and incoming messages are form posts signed with HMAC-SHA1 by the account's
auth token.

Configuration: `token` is "ACCOUNT_SID:AUTH_TOKEN"; `sender` is the From number or alphanumeric
sender id, or a Messaging Service SID ("MG...").
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import aiohttp

from gateway_adapters import http1
from gateway_adapters.base import (
    AdapterLimits,
    GatewayConfig,
    GatewayMisconfigured,
    InboundMessage,
    OptionTypes,
    OutboundMessage,
    ReceiptSink,
    ReceiptUpdate,
    SendResult,
)
from gateway_adapters.twilio_callbacks import (
    _port_variants,
    is_e164,
    parse_incoming_message,
    parse_status_callback,
)
from gateway_adapters.twilio_errors import result_for

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_BASE_URL = "https://api.twilio.com"
MESSAGING_SERVICE_PREFIX = "MG"
USER_AGENT = "broadcaster"
# Twilio's range for ValidityPeriod, in seconds (error 21624 outside it).
MIN_VALIDITY_SECONDS = 1
MAX_VALIDITY_SECONDS = 36_000
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


def inbound_url(callback_url: str) -> str:
    """The incoming-message webhook URL that goes with a status callback URL: the service serves
    them as /v1/callbacks/<name> and /v1/inbound/<name>."""
    base, sep, name = callback_url.rpartition("/v1/callbacks/")
    return f"{base}/v1/inbound/{name}" if sep else ""


def split_token(token: str) -> tuple[str, str]:
    """'ACxxx:secret' -> ('ACxxx', 'secret'); ValueError when either part is missing."""
    account_sid, sep, auth_token = token.partition(":")
    account_sid, auth_token = account_sid.strip(), auth_token.strip()
    if not sep or not account_sid or not auth_token:
        raise ValueError("twilio token must be 'ACCOUNT_SID:AUTH_TOKEN' (both parts non-empty)")
    return account_sid, auth_token


def messages_url(base_url: str, account_sid: str) -> str:
    """The Messages resource of an account."""
    return f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}/Messages.json"


class TwilioAdapter:
    """`GatewayAdapter` for Twilio's Messages REST API."""

    type: ClassVar[str] = "twilio"
    # One recipient per request; concurrency and rate depend on the account (sender type).
    limits: ClassVar[AdapterLimits] = AdapterLimits(1, None, None)
    options: ClassVar[OptionTypes] = {}

    def __init__(
        self,
        config: GatewayConfig,
        callback_url: str,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`session` is taken so that the registry builds every adapter alike, and not used:
        Twilio's requests go through the adapter's own `http1.Client`."""
        self.config = config
        self.callback_url = callback_url
        try:
            self.account_sid, self._auth_token = split_token(config.token)
        except ValueError as exc:
            raise ValueError(f"gateway {config.name!r}: {exc}") from None
        sender = config.sender.strip()
        self._sender_field = (
            "MessagingServiceSid" if sender.startswith(MESSAGING_SERVICE_PREFIX) else "From"
        )
        self._sender = sender
        self._auth_key = self._auth_token.encode()
        # The URLs a callback may be signed for that do not depend on the request.
        self._callback_variants = _port_variants(callback_url)
        # ... and the URL of the number's incoming-message webhook (/v1/inbound/<name>).
        self._inbound_variants = _port_variants(inbound_url(callback_url))
        base_url = config.base_url or DEFAULT_BASE_URL
        # Quoted as a URL library would: an odd account SID must not break the request line.
        self._path = quote(urlsplit(messages_url(base_url, self.account_sid)).path, safe="/%")
        # Built by hand: aiohttp.BasicAuth is deprecated in newer aiohttp, and its replacement
        # does not exist in the oldest aiohttp we support.
        credentials = base64.b64encode(f"{self.account_sid}:{self._auth_token}".encode())
        # One request per message: the lean client, not aiohttp's (see gateway_adapters.http1).
        try:
            self._client = http1.Client(
                base_url,
                headers={
                    "Authorization": "Basic " + credentials.decode("ascii"),
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                    "User-Agent": USER_AGENT,
                },
                timeout=config.timeout_seconds,
                keep_headers=("Retry-After",),
                max_idle=max(1, config.concurrency),
            )
        except ValueError as exc:
            raise ValueError(f"gateway {config.name!r}: base_url: {exc}") from None
        # The form fields every message shares.
        tail = {self._sender_field: self._sender}
        if callback_url:
            tail["StatusCallback"] = callback_url
        self._form_tail = urlencode(tail)
        # One cap for the adapter, not per batch: the dispatcher runs several batches at once and
        # Twilio limits concurrent requests per account.
        self._concurrency = max(1, config.concurrency)
        self._in_flight = asyncio.Semaphore(self._concurrency)

    @property
    def max_batch(self) -> int:
        return max(1, self.config.max_batch)

    async def start(self, on_receipts: ReceiptSink) -> None:
        """Nothing to open: receipts arrive as HTTP callbacks."""

    async def close(self) -> None:
        """Close the kept-alive connections."""
        await self._client.close()

    # -- sending ---------------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send each message as its own request; one result per message, in order.

        Per-message failures become results. An answer saying the account or URL is wrong
        (401/403/404) raises `GatewayMisconfigured` for the batch: requests not yet started are
        dropped, the ones already on the wire are awaited (their answers say whether the message
        went out), and the accepted results ride along in `partial_results`.

        The batch is worked off by up to `concurrency` workers, each holding one of the
        adapter's request slots while it sends message after message (a task and a slot per
        message cost about a tenth of the dispatcher's CPU per message).
        """
        broken: list[GatewayMisconfigured] = []
        results: list[SendResult | None] = [None] * len(messages)
        pending = iter(enumerate(messages))

        async def worker() -> None:
            async with self._in_flight:
                for i, message in pending:
                    if broken:
                        return  # the account is broken: do not even try
                    try:
                        results[i] = await self._send_one(message)
                    except GatewayMisconfigured as exc:
                        broken.append(exc)
                        return

        workers = min(len(messages), self._concurrency)
        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # only left running when we ourselves are cancelled
                task.cancel()

        if broken:
            error = broken[0]
            error.partial_results = tuple(r for r in results if r is not None and r.accepted)
            raise error
        done = [r for r in results if r is not None]
        log.debug("twilio accepted %d of %d messages", sum(r.accepted for r in done), len(done))
        return done

    async def _send_one(self, message: OutboundMessage) -> SendResult:
        """POST one message; its result, or `GatewayMisconfigured` when the account is wrong."""
        if not is_e164(message.phone):
            # Twilio would answer 21211; no need to spend a request on it.
            return SendResult(message.delivery_id, False, error="invalid phone number")
        # Encoded by hand: aiohttp's FormData was a fifth of the dispatcher's CPU per message.
        # An E.164 number is '+' and digits, so only the '+' needs quoting.
        body = f"To=%2B{message.phone[1:]}&Body={_form_value(message.text)}&{self._form_tail}"
        if message.expires_at is not None:
            # Twilio keeps a queued message up to ValidityPeriod (default and maximum 10 h):
            # it gets the alert's remaining lifetime, so an expired alert never goes out late.
            remaining = int((message.expires_at - datetime.now(UTC)).total_seconds())
            if remaining < MIN_VALIDITY_SECONDS:
                return SendResult(
                    message.delivery_id,
                    False,
                    error="alert expired before submission",
                    expired=True,
                )
            body += f"&ValidityPeriod={min(remaining, MAX_VALIDITY_SECONDS)}"
        try:
            answer = await self._client.post(self._path, body.encode())
        except (TimeoutError, http1.HttpError) as exc:
            # Twilio may or may not have taken it; the dispatcher decides about a retry.
            return SendResult(
                message.delivery_id, False, error=f"{type(exc).__name__}: {exc}", retryable=True
            )
        retry_after = answer.headers.get("retry-after") if answer.status >= 300 else None
        return result_for(message.delivery_id, answer.status, answer.body, retry_after)

    # -- callbacks -------------------------------------------------------------------------------

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[ReceiptUpdate]:
        """Verify one signed status callback and translate it; raise `CallbackRejected` if it
        fails. `url` must be the URL Twilio called, as it called it."""
        return parse_status_callback(
            self.account_sid, self._auth_key, self._callback_variants, headers, body, url
        )

    def parse_inbound(
        self, headers: Mapping[str, str], body: bytes, url: str
    ) -> list[InboundMessage]:
        """Verify one signed incoming-message webhook request and translate it; raise
        `CallbackRejected` if it fails. The number's "A message comes in" webhook is
        `$BROADCASTER_PUBLIC_URL/v1/inbound/<gateway name>` (HTTP POST)."""
        return parse_incoming_message(
            self.account_sid, self._auth_key, self._inbound_variants, headers, body, url
        )

    def inbound_reply(self, stored: int) -> tuple[str, bytes]:
        """Empty TwiML: Twilio answers nothing to the sender (our answers go as notices)."""
        return "text/xml", EMPTY_TWIML


@functools.lru_cache(maxsize=64)
def _form_value(text: str) -> str:
    """A form-encoded message text (a broadcast sends one text many times)."""
    return quote_plus(text)
